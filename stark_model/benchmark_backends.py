"""Backend against backend on this machine, interleaved frame by frame (fair on a shared machine).

    python -m stark_model.benchmark_backends --variants st50 lite --backends pytorch onnxruntime

Every backend gets its own tracker on the same targets; each round runs one frame through every
tracker in turn, so a change of load hits all backends alike. Prints median tracker FPS per
backend and its speed-up over the first backend named. 640x480 frames, untrained weights (the
same work as trained ones). A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from .backends import BACKENDS
from .config import available_variants
from .factory import create_tracker, load_model
from .profile import machine_description, target_boxes


def interleaved_fps(variant: str, backends: list[str], targets: int, rounds: int, warmup: int,
                    cache_dir: str | None) -> dict[str, float]:
    """Median tracker frames per second of each backend, measured in alternation."""
    model = load_model(variant=variant, allow_untrained=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    trackers = {name: create_tracker(model, backend=name, max_targets=targets, cache_dir=cache_dir)
                for name in backends}
    times: dict[str, list[float]] = {name: [] for name in backends}
    for tracker in trackers.values():
        for index, box in enumerate(target_boxes(targets, 640, 480)):
            tracker.initialize(frames[0], box, f't{index}')
    for round_index in range(warmup + rounds):
        frame = frames[round_index % len(frames)]
        for name, tracker in trackers.items():
            start = time.perf_counter()
            tracker.track(frame)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1.0 / statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=['st50', 'lite'], choices=available_variants())
    parser.add_argument('--backends', nargs='+', default=['pytorch', 'onnxruntime'], choices=BACKENDS)
    parser.add_argument('--targets', nargs='+', type=int, default=[1])
    parser.add_argument('--rounds', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch (and ONNX Runtime) CPU threads')
    parser.add_argument('--cache-dir', default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description(torch.device('cpu'))
    print(f"# {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} threads; "
          f"torch {machine['versions']['torch']}, onnxruntime {machine['versions']['onnxruntime']}; "
          f'{args.rounds} interleaved frames (640x480) after {args.warmup}')
    print('| variant | targets | ' + ' | '.join(f'{b} FPS' for b in args.backends)
          + ''.join(f' | {b} / {args.backends[0]}' for b in args.backends[1:]) + ' |')
    print('|---' * (2 + 2 * len(args.backends) - 1) + '|')
    for variant in args.variants:
        for count in args.targets:
            fps = interleaved_fps(variant, args.backends, count, args.rounds, args.warmup, args.cache_dir)
            base = fps[args.backends[0]]
            print(f'| {variant} | {count} | ' + ' | '.join(f'{fps[b]:.2f}' for b in args.backends)
                  + ''.join(f' | {fps[b] / base:.2f}x' for b in args.backends[1:]) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
