"""Success and precision plots (PNG) with several trackers on one figure, as the toolkits draw them:
trackers sorted by their score, which the legend shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import NORMALIZED_THRESHOLDS, PRECISION_THRESHOLDS, Summary, success_thresholds

STYLES = ('-', '--', '-.', ':')


def _figure():
    # The object API with the Agg canvas: no pyplot, so no display and no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(5.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_curve(path: Path, title: str, xlabel: str, ylabel: str, x: np.ndarray,
               curves: dict[str, tuple[np.ndarray, float]], xlim: tuple[float, float]) -> Path:
    """One figure: a line per tracker (label 'name [score]'), best score first."""
    figure = _figure()
    axes = figure.add_subplot()
    ranked = sorted(curves.items(), key=lambda item: -item[1][1])
    for rank, (name, (curve, score)) in enumerate(ranked):
        axes.plot(x, curve, STYLES[rank // 10 % len(STYLES)], linewidth=1.6, label=f'{name} [{score:.3f}]')
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=xlim, ylim=(0, 1.0))
    axes.grid(True, alpha=0.4)
    axes.legend(loc='lower left' if 'Success' in title else 'lower right', fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_curves(summaries: dict[str, Summary], folder: Path, title: str) -> list[Path]:
    """success.png, precision.png and normalized_precision.png for these trackers in `folder`."""
    protocol = next(iter(summaries.values())).protocol
    thresholds = success_thresholds(protocol)
    auc_label = 'AUC' if protocol != 'got10k' else 'AO-like AUC'
    return [
        plot_curve(folder / 'success.png', f'Success plot: {title}', f'Overlap threshold ({auc_label} in [ ])',
                   'Success rate', thresholds, {n: (s.success_curve, s.auc) for n, s in summaries.items()}, (0, 1)),
        plot_curve(folder / 'precision.png', f'Precision plot: {title}', 'Location error threshold (px)',
                   'Precision', PRECISION_THRESHOLDS,
                   {n: (s.precision_curve, s.precision) for n, s in summaries.items()}, (0, 50)),
        plot_curve(folder / 'normalized_precision.png', f'Normalised precision: {title}',
                   'Normalised location error threshold', 'Normalised precision', NORMALIZED_THRESHOLDS,
                   {n: (s.normalized_precision_curve, s.normalized_precision) for n, s in summaries.items()},
                   (0, 0.5)),
    ]
