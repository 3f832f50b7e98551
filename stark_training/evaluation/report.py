"""Markdown reports: overall figures per tracker, per attribute, and per sequence."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .metrics import SequenceResult, Summary

OVERALL_COLUMNS = ('AUC', 'P@20px', 'Norm. P', 'AO', 'SR0.50', 'SR0.75', 'FPS')
# The one-line summary that stark-eval and stark-replay print: (label, Summary field), in percent.
SUMMARY_FIELDS = (('AUC', 'auc'), ('P@20', 'precision'), ('NP', 'normalized_precision'),
                  ('AO', 'average_overlap'), ('SR0.5', 'sr50'), ('SR0.75', 'sr75'))


def summary_line(figures: Mapping[str, Any]) -> str:
    """'AUC 64.9  P@20 80.1  ...  FPS 30.2' from Summary.as_dict() figures (fractions, as stored):
    one format for every tool, percent with one decimal as in the reports."""
    parts = [f'{label} {_percent(figures[key])}' for label, key in SUMMARY_FIELDS if key in figures]
    if 'fps' in figures:
        parts.append(f'FPS {_fps(figures["fps"])}')
    return '  '.join(parts)


def _percent(value: float) -> str:
    return '-' if value is None or math.isnan(value) else f'{100 * value:.1f}'


def _fps(value: float) -> str:
    return '-' if value is None or math.isnan(value) else f'{value:.1f}'


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
        return '\n'.join(lines) + '\n' + comparison_table(scored, summaries) + '\n'
    lines += _table(header, rows)
    return '\n'.join(lines) + '\n'


def comparison_table(scored: Mapping[str, Sequence[SequenceResult]], summaries: Mapping[str, Summary]) -> str:
    """Several trackers side by side: a row per sequence and a last row with the overall figures
    (the mean over sequences; all frames pooled under the got10k protocol); AUC, P@20px, FPS each."""
    by_tracker = {t: {r.name: r for r in results} for t, results in scored.items() if t in summaries}
    names = list(dict.fromkeys(r.name for t in by_tracker for r in scored[t]))
    header = ['Sequence'] + [f'{t} {column}' for t in by_tracker for column in ('AUC', 'P@20px', 'FPS')]
    rows = [[n] + [cell for t in by_tracker for cell in _comparison_cells(by_tracker[t].get(n))] for n in names]
    pooled = next(iter(summaries.values())).protocol == 'got10k'
    rows.append(['**all frames**' if pooled else '**mean**']
                + [cell for t in by_tracker for cell in _comparison_cells(summaries[t])])
    return '\n'.join(_table(header, rows))


def _comparison_cells(figures: SequenceResult | Summary | None) -> list[str]:
    if figures is None:
        return ['-', '-', '-']
    return [_percent(figures.auc), _percent(figures.precision), _fps(figures.fps)]
