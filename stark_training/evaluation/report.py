"""Markdown reports: overall figures per tracker, per attribute, and per sequence."""
from __future__ import annotations

import math
from typing import Sequence

from .metrics import SequenceResult, Summary

OVERALL_COLUMNS = ('AUC', 'P@20px', 'Norm. P', 'AO', 'SR0.50', 'SR0.75', 'FPS')


def _percent(value: float) -> str:
    return '-' if value is None or math.isnan(value) else f'{100 * value:.1f}'


def _fps(value: float) -> str:
    return '-' if math.isnan(value) else f'{value:.1f}'


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def _summary_row(name: str, s: Summary) -> list[str]:
    return [name, _percent(s.auc), _percent(s.precision), _percent(s.normalized_precision),
            _percent(s.average_overlap), _percent(s.sr50), _percent(s.sr75), _fps(s.fps)]


def markdown_report(title: str, scored: dict[str, list[SequenceResult]], summaries: dict[str, Summary],
                    breakdowns: dict[str, dict[str, Summary]], plots: Sequence[str] = ()) -> str:
    """The whole report: overall table, plots, per-attribute AUC, per-sequence figures."""
    protocol = next(iter(summaries.values())).protocol
    lines = [f'# {title}', '',
             f'Protocol `{protocol}` (conventions: docs/EVALUATION.md). Figures in percent except FPS.', '',
             '## Overall', '']
    lines += _table(('Tracker', *OVERALL_COLUMNS, 'Sequences'),
                    [_summary_row(n, s) + [str(s.sequences)] for n, s in summaries.items()])
    if plots:
        lines += [''] + [f'![{name}]({name})' for name in plots]
    attributes = sorted({a for groups in breakdowns.values() for a in groups})
    if attributes:
        lines += ['', '## AUC per attribute', '']
        rows = [[a] + [_percent(breakdowns[n][a].auc) if a in breakdowns[n] else '-' for n in summaries]
                + [str(max(breakdowns[n][a].sequences for n in summaries if a in breakdowns[n]))]
                for a in attributes]
        lines += _table(('Attribute', *summaries, 'Sequences'), rows)
    lines += ['', '## Per sequence', '']
    names = list(dict.fromkeys(r.name for results in scored.values() for r in results))
    by_tracker = {t: {r.name: r for r in results} for t, results in scored.items()}
    if len(summaries) == 1:  # one tracker: its figures; several: their AUCs side by side
        (tracker,) = summaries
        header = ['Sequence', 'Frames', 'AUC', 'P@20px', 'Norm. P', 'AO', 'FPS']
        rows = [[n, str(r.frames), _percent(r.auc), _percent(r.precision), _percent(r.normalized_precision),
                 _percent(r.average_overlap), _fps(r.fps)] for n, r in by_tracker[tracker].items()]
    else:
        header = ['Sequence', *(f'{t} AUC' for t in summaries)]
        rows = [[n, *(_percent(by_tracker[t][n].auc) if n in by_tracker[t] else '-' for t in summaries)]
                for n in names]
    lines += _table(header, rows)
    return '\n'.join(lines) + '\n'
