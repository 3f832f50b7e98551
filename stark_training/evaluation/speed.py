"""The default model's speed beside OpenCV's TrackerNano, on the same frames and one CPU thread.

    python -m stark_training.evaluation.speed --root ../shared/data/otb_val \
        --nano-dir ../shared/baselines/nanotrack_v2 [--checkpoint PATH] [--frames 150] [--threads 1]

For every sequence of a `folder`-layout dataset (frames plus groundtruth.txt), both trackers start
from the first ground-truth box and track the next `frames` frames; the same decoded RGB frames go
to both. Whole tracker: frames / seconds spent in track() (crops, network, box update; OpenCV's
tracker also converts RGB to BGR, as the evaluator feeds it). Model only: ours, the backend's
network time per frame (StarkTracker.last_timing.network_ms: search encoding and decode); NanoTrack,
its two ONNX networks run by OpenCV's DNN module (the engine TrackerNano uses) on a search crop
and the template features, per frame. Prints a Markdown table with the ratios. A measurement, not
a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..datasets import open_dataset
from .baselines import NANO_FILES, BaselineError, make_baseline

NANO_SEARCH, NANO_TEMPLATE = 255, 127


def _frames(sequence: Any, count: int) -> list[np.ndarray]:
    return [sequence.image(index) for index in range(min(count + 1, len(sequence)))]


def time_whole_tracker(tracker: Any, frames: list[np.ndarray], box: np.ndarray,
                       network_seconds: Callable[[], float] | None = None) -> tuple[float, float, int]:
    """Seconds spent in track() over frames[1:], after initialize() on frames[0]; with
    `network_seconds` (read after each frame: our tracker's network time), their sum as well, from
    the same pass; and the number of tracked frames."""
    tracker.initialize(frames[0], box)
    spent = network = 0.0
    for frame in frames[1:]:
        started = time.perf_counter()
        tracker.track(frame)
        spent += time.perf_counter() - started
        if network_seconds is not None:
            network += network_seconds()
    return spent, network, len(frames) - 1


def nano_model_seconds(nano_dir: Path, frames: int, repeats_warmup: int = 5) -> float:
    """Seconds for `frames` runs of NanoTrack's backbone on a search crop plus its head, in OpenCV DNN."""
    backbone = cv2.dnn.readNet(str(nano_dir / NANO_FILES[0]))
    head = cv2.dnn.readNet(str(nano_dir / NANO_FILES[1]))
    rng = np.random.default_rng(0)
    template_blob = rng.uniform(0, 255, (1, 3, NANO_TEMPLATE, NANO_TEMPLATE)).astype(np.float32)
    search_blob = rng.uniform(0, 255, (1, 3, NANO_SEARCH, NANO_SEARCH)).astype(np.float32)
    backbone.setInput(template_blob)
    template = backbone.forward().copy()

    def step() -> None:
        backbone.setInput(search_blob)
        search = backbone.forward()
        head.setInput(template, 'input1')
        head.setInput(search, 'input2')
        head.forward(['output1', 'output2'])

    for _ in range(repeats_warmup):
        step()
    started = time.perf_counter()
    for _ in range(frames):
        step()
    return time.perf_counter() - started


def build_stark(checkpoint: str | None, threads: int, backend: str) -> Any:
    import torch

    from stark_model import create_tracker, load_model

    from .runner import StarkSingleTarget

    torch.set_num_threads(threads)
    tracker = create_tracker(load_model(checkpoint), backend=backend)
    tracker.warm_up()
    return StarkSingleTarget(tracker)


def measure(root: str, nano_dir: str, checkpoint: str | None = None, frames: int = 150, threads: int = 1,
            backend: str = 'auto', out=print) -> dict[str, float]:
    """Both trackers on the same frames; returns FPS figures and the ratios (ours / NanoTrack)."""
    cv2.setNumThreads(threads)
    dataset = open_dataset('folder', root)
    stark = build_stark(checkpoint, threads, backend)
    nano = make_baseline('nano', nano_dir)
    totals = {'stark': 0.0, 'nano': 0.0, 'stark_model': 0.0}
    counted = 0
    for index in range(len(dataset)):
        sequence = dataset[index]
        clip = _frames(sequence, frames)
        box = np.asarray(sequence.boxes[0], np.float64)
        seconds, network, count = time_whole_tracker(
            stark, clip, box, lambda: stark.tracker.last_timing.network_ms / 1000)
        totals['stark'] += seconds
        totals['stark_model'] += network
        totals['nano'] += time_whole_tracker(nano, clip, box)[0]
        counted += count
        out(f'{sequence.name}: {count} frames')
    totals['nano_model'] = nano_model_seconds(Path(nano_dir), counted)
    fps = {name: counted / seconds for name, seconds in totals.items()}
    fps['whole_ratio'] = fps['stark'] / fps['nano']
    fps['model_ratio'] = fps['stark_model'] / fps['nano_model']
    fps['frames'] = counted
    fps['backend'] = stark.tracker.backend.describe()
    return fps


def report(fps: dict[str, Any], threads: int) -> str:
    """The Markdown table of measure()'s figures."""
    cpu = platform.processor() or platform.machine()
    lines = [f'{fps["frames"]} frames, {threads} CPU thread(s), {cpu}; ours through {fps["backend"]}', '',
             '| | ours (default model) | OpenCV TrackerNano | ours / Nano |', '|---|---|---|---|',
             f'| whole tracker, FPS | {fps["stark"]:.1f} | {fps["nano"]:.1f} | {fps["whole_ratio"]:.2f} |',
             f'| model only, FPS | {fps["stark_model"]:.1f} | {fps["nano_model"]:.1f} | {fps["model_ratio"]:.2f} |']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m stark_training.evaluation.speed',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--root', required=True, help='a folder of sequences (frames + groundtruth.txt)')
    parser.add_argument('--nano-dir', required=True, help='folder with the NanoTrack v2 ONNX files')
    parser.add_argument('--checkpoint', help='STARK checkpoint (default: the bundled default model)')
    parser.add_argument('--frames', type=int, default=150, help='frames tracked per sequence')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads for every tracker')
    parser.add_argument('--backend', default='auto', help='our backend (default auto)')
    args = parser.parse_args(argv)
    try:
        fps = measure(args.root, args.nano_dir, args.checkpoint, args.frames, args.threads, args.backend)
    except (BaselineError, FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(report(fps, args.threads))
    return 0


if __name__ == '__main__':
    sys.exit(main())
