"""The node benchmark runs end to end, prints a table row with usable figures and writes them as JSON."""
import json
import math

import pytest

from stark_ros import benchmark


def table_rows(text: str) -> list[dict[str, str]]:
    """The markdown table of the benchmark's output as one dict per row, keyed by column."""
    lines = [line for line in text.splitlines() if line.startswith('|')]
    cells = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


@pytest.mark.slow
def test_benchmark_prints_a_row_with_throughput_latency_and_memory(capsys, tmp_path):
    figures = tmp_path / 'figures.json'
    status = benchmark.main(['--sizes', '320x240', '--rates', '10', '--seconds', '3', '--warmup', '1',
                             '--device', 'cpu', '--frames', '10', '--cpu-threads', '1', '--json', str(figures)])
    output = capsys.readouterr().out
    assert status == 0, output
    rows = table_rows(output)
    assert [row['frames'] for row in rows] == ['320x240'], output
    row = rows[0]
    assert float(row['processed FPS']) > 0, output
    assert all(math.isfinite(float(row[column])) for column in ('latency p50 ms', 'p95 ms', 'p99 ms')), output
    assert float(row['RSS MB']) > 0 and math.isfinite(float(row['RSS MB/min'])), output
    assert row['threads'] == '1', output  # --cpu-threads reaches the node, which reports it
    written = json.loads(figures.read_text())
    assert [(r['width'], r['height'], r['cpu_threads']) for r in written['results']] == [(320, 240, 1)]
    assert written['results'][0]['detections'] > 0 and written['machine'], written
