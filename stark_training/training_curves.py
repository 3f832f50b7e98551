"""Loss curves of stark-train runs as one PNG, read from the runs' TensorBoard scalars.

    python -m stark_training.training_curves out/default_model/st1 out/default_model/st2 \
        --out docs/images/default_model_loss.png

One panel per run: the training scalars the trainer logged (stage 1: loss, GIoU, L1, IoU; stage 2:
BCE, accuracy and, where it trained, box loss and IoU) against the optimiser step, each drawn as
logged and as a running mean over `--smooth` points.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SHOWN = ('loss', 'giou', 'l1', 'iou', 'bce', 'accuracy', 'box_loss')


def read_scalars(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} of the 'train/...' scalars in `run`/tensorboard (the learning rate left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run / 'tensorboard'
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder}: no TensorBoard scalars (was the run started with --no-tensorboard?)')
    events = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()['scalars']:
        name = tag.removeprefix('train/')
        if tag.startswith('train/') and name in SHOWN:
            points = events.Scalars(tag)
            scalars[name] = (np.array([p.step for p in points]), np.array([p.value for p in points]))
    return scalars


def running_mean(values: np.ndarray, width: int) -> np.ndarray:
    """The mean of each value and the width - 1 before it (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot_training_curves(runs: list[Path], png: Path, smooth: int = 20) -> Path:
    """One panel per run, written to `png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * len(runs), 3.8), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(runs), squeeze=False)[0]
    for axes, run in zip(panels, runs):
        for name, (steps, values) in read_scalars(run).items():
            line, = axes.plot(steps, running_mean(values, smooth), label=name)
            axes.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        axes.set(title=run.name, xlabel='optimiser step', ylim=(0, None))
        axes.grid(True, alpha=0.4)
        axes.legend(fontsize=8)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m stark_training.training_curves',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', type=Path, help='stark-train --output folders')
    parser.add_argument('--out', type=Path, required=True, help='PNG to write')
    parser.add_argument('--smooth', type=int, default=20, help='points in the running mean')
    args = parser.parse_args(argv)
    try:
        print(f'wrote {plot_training_curves(args.runs, args.out, args.smooth)}')
    except FileNotFoundError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
