"""stark-profile on the light variant: runs in well under a minute and writes JSON that parses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stark_model.profile import STAGES, main, target_boxes


@pytest.mark.slow
def test_stark_profile_writes_parseable_json_and_markdown_for_lite(tmp_path):
    # The installed console script when there is one (.venv/bin after make setup), else the module.
    script = shutil.which('stark-profile', path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, '-m', 'stark_model.profile']
    command += ['--variant', 'lite', '--untrained', '--targets', '1', '2', '--repeats', '2', '--warmup', '1',
                '--frame', '320x240', '--backends', 'pytorch', 'onnxruntime', 'tensorrt',
                '--output-dir', str(tmp_path), '--cache-dir', str(tmp_path / 'cache')]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / 'profile.json').read_text())
    assert report['variant'] == 'lite' and report['parameters'] > 1_000_000
    assert report['machine']['versions']['torch'] and report['machine']['cpu']
    assert set(report['gflops']['per_module']) >= {'backbone', 'transformer', 'box_head'}
    assert abs(sum(report['gflops']['per_module'].values()) - report['gflops']['per_frame']) < 0.01
    for backend in ('pytorch', 'onnxruntime'):
        entry = report['backends'][backend]
        assert entry['available'] and set(entry['targets']) == {'1', '2'}
        for row in entry['targets'].values():
            assert set(row['stages_ms']) == set(STAGES)
            assert row['fps'] > 0 and row['stages_ms']['crop'] > 0 and row['stages_ms']['backbone'] > 0
    assert report['backends']['pytorch']['targets']['1']['stages_ms']['transformer'] > 0
    assert report['backends']['onnxruntime']['targets']['1']['stages_ms']['decode'] > 0
    if not report['machine']['gpu']:
        assert report['backends']['tensorrt'] == {'available': False, 'reason': 'TensorRT needs a CUDA device'}
    markdown = (tmp_path / 'profile.md').read_text()
    assert '## onnxruntime' in markdown and 'Not run: TensorRT needs a CUDA device' in markdown


def test_bad_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        main(['--variant', 'lite', '--untrained', '--frame', '640by480'])
    assert "frame size '640by480' is not WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--variant', 'lite', '--untrained', '--targets', '0'])
    assert '--targets and --repeats must be at least 1' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--checkpoint', '/nonexistent/model.pth.tar'])
    assert '/nonexistent/model.pth.tar' in capsys.readouterr().err


def test_target_boxes_lie_inside_the_frame():
    for count in (1, 4, 16, 64):
        boxes = target_boxes(count, 1920, 1080)
        assert len(boxes) == count
        assert all(0 <= x and 0 <= y and x + w <= 1920 and y + h <= 1080 for x, y, w, h in boxes)


def test_interleaved_backend_benchmark_prints_a_row_per_variant_and_count(capsys):
    from stark_model.benchmark_backends import main as benchmark_main
    assert benchmark_main(['--variants', 'lite', '--backends', 'pytorch', 'pytorch-graph', '--targets', '2',
                           '--rounds', '1', '--warmup', '0']) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| lite |')]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip('|').split('|')]
    assert cells[1] == '2' and float(cells[2]) > 0 and cells[4].endswith('x')


@pytest.mark.slow
def test_gpu_check_without_cuda_checks_the_cpu_backends(tmp_path, capsys):
    from stark_model import gpu_check
    if gpu_check.torch.cuda.is_available():
        pytest.skip('CUDA present: the full check runs there instead (python -m stark_model.gpu_check)')
    status = gpu_check.main(['--variant', 'lite', '--frames', '3', '--targets', '1', '--repeats', '1',
                             '--frame', '320x240', '--output-dir', str(tmp_path), '--cache-dir', str(tmp_path / 'c')])
    out = capsys.readouterr().out
    assert status == 0 and 'No CUDA here' in out and 'parity: all within bounds' in out
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert [row['backend'] for row in report['parity']] == ['pytorch', 'pytorch-graph', 'onnxruntime']
    assert all(row['ok'] for row in report['parity'])
    assert report['parity'][2]['max_abs_box_diff'] < 1e-4


@pytest.mark.slow
def test_gpu_check_without_cuda_is_a_short_sanity_check_of_the_bundled_model(tmp_path, capsys):
    """Issue #16: the defaults ran 13.5 min on a CPU without finishing. Without CUDA the defaults
    are now the bundled model and CPU_DEFAULTS (about a minute); fewer frames and repeats here."""
    from stark_model import gpu_check
    from stark_model.factory import default_checkpoint
    if gpu_check.torch.cuda.is_available():
        pytest.skip('CUDA present: the full check runs there instead (python -m stark_model.gpu_check)')
    status = gpu_check.main(['--frames', '3', '--repeats', '1', '--output-dir', str(tmp_path),
                             '--cache-dir', str(tmp_path / 'c')])
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'No CUDA here' in out and 'CPU sanity check passed' in out and 'no GPU was checked' in out
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert report['profile']['weights'] == str(default_checkpoint())
    assert report['profile']['frame'] == list(gpu_check.CPU_DEFAULTS['frame'])
    assert list(report['profile']['backends']['onnxruntime']['targets']) == ['1']
    counted = [row for row in report['parity'] if row['counted']]
    assert {row['backend'] for row in counted} == {'pytorch-graph', 'onnxruntime'} and all(r['ok'] for r in counted)


def test_the_default_model_holds_its_targets_on_the_profiling_frames():
    """stark-profile's step must time a tracked target, not a box that wandered over noise and grew
    to the large-crop path: the bundled model keeps each of 9 targets on its patch for 20 frames."""
    import numpy as np

    from stark_model import create_tracker, load_model
    from stark_model.profile import frames_with_targets

    boxes = target_boxes(9, 640, 480)
    frames = frames_with_targets(boxes, 640, 480)
    assert len(frames) == 3 and all(frame.shape == (480, 640, 3) and frame.dtype == np.uint8 for frame in frames)
    tracker = create_tracker(load_model())
    for index, box in enumerate(boxes):
        tracker.initialize(frames[0], box, f't{index}')
    for step in range(20):
        results = tracker.track(frames[step % 3])
    for index, (x, y, w, h) in enumerate(boxes):
        bx, by, bw, bh = results[f't{index}'].box
        overlap = max(0.0, min(x + w, bx + bw) - max(x, bx)) * max(0.0, min(y + h, by + bh) - max(y, by))
        assert overlap / (w * h + bw * bh - overlap) > 0.6, (index, (x, y, w, h), results[f't{index}'].box)
