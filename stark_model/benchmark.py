"""Speed of the STARK variants on this machine: network stages and whole tracker steps.

    python -m stark_model.benchmark [--variants st50 lite] [--targets 1 4 16] [--device auto]

Prints, per variant: milliseconds for the template backbone, the search backbone and the
transformer plus heads (batch 1), then tracker frames per second with 1, 4 and 16 targets on a
640x480 frame (crops, batched forward, box mapping; weights are untrained, which does not change
the amount of work). A benchmark, not a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import numpy as np
import torch

from .config import available_variants
from .factory import LoadedModel, create_tracker, load_model
from .network import Tokens
from .tracker import PRECISIONS, resolve_device


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of fn() in milliseconds (CUDA work is synchronised)."""
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def stage_latencies(model: LoadedModel, device: torch.device, precision: str, repeats: int, warmup: int
                    ) -> dict[str, float]:
    tracker = create_tracker(model, device=str(device), precision=precision)
    network, cfg = tracker.network, model.variant.tracker

    def crop(size: int):
        return (torch.randn(1, 3, size, size, device=device),
                torch.zeros(1, size, size, dtype=torch.bool, device=device))

    template, search = crop(cfg.template_size), crop(cfg.search_size)
    slots = 2 if cfg.dynamic_template else 1
    with tracker._inference():
        tokens = Tokens.concat([network.encode(*template)] * slots + [network.encode(*search)])
        return {
            'template': median_ms(lambda: network.encode(*template), repeats, warmup, device),
            'search': median_ms(lambda: network.encode(*search), repeats, warmup, device),
            'transformer': median_ms(lambda: network.decode(tokens), repeats, warmup, device),
        }


def tracker_fps(model: LoadedModel, targets: int, device: torch.device, precision: str, frames: int,
                warmup: int) -> float:
    tracker = create_tracker(model, device=str(device), precision=precision)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    for index in range(targets):
        x, y = 40 + (index % 4) * 140, 40 + (index // 4) * 100
        tracker.initialize(images[0], (x, y, 60, 50), f't{index}')
    per_frame = median_ms(lambda: tracker.track(images[rng.integers(4)]), frames, warmup, device)
    return 1000.0 / per_frame


def describe_machine(device: torch.device) -> str:
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}'
    return (f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, '
            f'torch {torch.__version__}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--variants', nargs='+', default=['s50', 'st50', 'st101', 'lite'],
                        choices=available_variants())
    parser.add_argument('--targets', nargs='+', type=int, default=[1, 4, 16])
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=list(PRECISIONS))
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per stage')
    parser.add_argument('--frames', type=int, default=5, help='timed tracker frames per target count')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f'# STARK speed on {describe_machine(device)}; device {device}, {args.precision}')
    fps_headers = ''.join(f' | FPS {n} tgt' for n in args.targets)
    print(f'| variant | template ms | search ms | transformer+heads ms | per frame ms{fps_headers} |')
    print('|---|---|---|---|---' + '|---' * len(args.targets) + '|')
    for variant in args.variants:
        model = load_model(variant=variant, allow_untrained=True)
        stages = stage_latencies(model, device, args.precision, args.repeats, args.warmup)
        fps = [tracker_fps(model, n, device, args.precision, args.frames, args.warmup) for n in args.targets]
        per_frame = stages['search'] + stages['transformer']
        print(f"| {variant} | {stages['template']:.1f} | {stages['search']:.1f} | {stages['transformer']:.1f} "
              f"| {per_frame:.1f}" + ''.join(f' | {value:.2f}' for value in fps) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
