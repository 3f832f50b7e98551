"""stark-profile: where a STARK model's time goes on this machine, per backend and target count.

    stark-profile --variant lite --untrained --targets 1 4 --output-dir profile/
    stark-profile --checkpoint STARKST_ep0050.pth.tar --backends pytorch onnxruntime

Reports parameters and GFLOPs per module at the test-time crop sizes, then for every backend that
can run here (others are listed with the reason) and every target count: median milliseconds of
each stage (upload, crop, backbone, transformer, heads - or decode where a backend runs transformer
and heads as one graph -, post-process) and the whole tracker step as frames per second, after
warm-up. Names the machine and library versions. Writes profile.json and profile.md.
No ROS. Figures depend on the machine and its load: a measurement, not a test.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backends import BACKENDS, unavailable_reason
from .benchmark import median_ms
from .checkpoint import CheckpointError
from .complexity import count_parameters, flops_by_module, measure_complexity
from .factory import LoadedModel, create_tracker, load_model
from .network import Tokens
from .tracker import PRECISIONS, StarkTracker, resolve_device

STAGES = ('upload', 'crop', 'backbone', 'transformer', 'heads', 'decode', 'post_process')


def machine_description(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, GPU, and the versions of the libraries that run the network."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    versions = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda}
    for module in ('numpy', 'cv2', 'onnx', 'onnxruntime', 'tensorrt'):
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            versions[module] = None
    return {'cpu': cpu, 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'gpu': torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
            'platform': platform.platform(), 'versions': versions}


def target_boxes(count: int, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """`count` boxes on a grid over the frame, each about a tenth of the frame's width."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    cell_w, cell_h = width / columns, height / rows
    size_w, size_h = min(width / 10, cell_w * 0.6), min(height / 10, cell_h * 0.6)
    return [((i % columns + 0.5) * cell_w - size_w / 2, (i // columns + 0.5) * cell_h - size_h / 2, size_w, size_h)
            for i in range(count)]


def frames_with_targets(boxes: list[tuple[float, float, float, float]], width: int, height: int,
                        count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """`count` noise frames (uint8 RGB); each box holds a textured patch of its own, the same in every
    frame, so that a trained tracker holds its targets as on footage. (On bare noise its boxes wander
    and grow, and the step would time the large-crop path instead of a tracked target's.)"""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    for index, (x, y, w, h) in enumerate(boxes):
        left, top = max(0, int(x)), max(0, int(y))
        right, bottom = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        rows, cols = np.mgrid[0:bottom - top, 0:right - left]
        period = max(2, min(bottom - top, right - left) // (3 + index % 3))
        patch = np.stack((cols * 255 // max(1, right - left), rows * 255 // max(1, bottom - top),
                          (cols // period + rows // period) % 2 * 255), axis=-1)
        patch = np.roll(patch, index % 3, axis=-1).astype(np.uint8)  # colours differ between targets
        for frame in frames:
            frame[top:bottom, left:right] = patch
    return frames


def _stage_times(tracker: StarkTracker, frame: np.ndarray, boxes: list, repeats: int, warmup: int
                 ) -> dict[str, float | None]:
    """Median ms of each stage for len(boxes) targets; None where a stage does not apply."""
    cfg, device, backend = tracker.config, tracker.device, tracker.backend
    time_it: Callable[[Callable[[], object]], float] = lambda fn: median_ms(fn, repeats, warmup, device)
    stages: dict[str, float | None] = dict.fromkeys(STAGES)
    uploaded = tracker._upload(frame)
    if uploaded is not None and device.type == 'cuda':
        stages['upload'] = time_it(lambda: tracker._upload(frame))
    stages['crop'] = time_it(lambda: tracker._crop(frame, uploaded, boxes, cfg.search_factor, cfg.search_size))
    images, masks, _ = tracker._crop(frame, uploaded, boxes, cfg.search_factor, cfg.search_size)
    template_images, template_masks, _ = tracker._crop(frame, uploaded, boxes, cfg.template_factor,
                                                       cfg.template_size)
    with torch.inference_mode():
        stages['backbone'] = time_it(lambda: backend.encode(images, masks))
        template = backend.encode(template_images, template_masks)
        slots = 2 if cfg.dynamic_template else 1
        tokens = Tokens.concat([template] * slots + [backend.encode(images, masks)])
        if backend.name == 'pytorch':
            network = tracker.network
            with backend.autocast():
                run = lambda: network.transformer(tokens.features, tokens.mask, tokens.pos,
                                                  network.query_embed.weight)
                stages['transformer'] = time_it(run)
                decoded, memory = run()
                stages['heads'] = time_it(lambda: (network._predict_boxes(decoded, memory),
                                                   network.cls_head and network.cls_head(decoded)))
        else:
            stages['decode'] = time_it(lambda: backend.decode(tokens))
    return stages


def profile_backend(model: LoadedModel, backend: str, device: torch.device, precision: str,
                    targets: list[int], frame_size: tuple[int, int], repeats: int, warmup: int,
                    cache_dir: str | None) -> dict[str, Any]:
    """Stage medians and tracker speed of one backend for each target count."""
    width, height = frame_size
    rng = np.random.default_rng(0)
    tracker = create_tracker(model, device=str(device), precision=precision, backend=backend,
                             max_targets=max(targets), cache_dir=cache_dir)
    tracker.warm_up()
    result: dict[str, Any] = {'description': tracker.backend.describe(), 'targets': {}}
    for count in targets:
        boxes = target_boxes(count, width, height)
        frames = frames_with_targets(boxes, width, height)
        stages = _stage_times(tracker, frames[0], boxes, repeats, warmup)
        tracker.clear()
        for index, box in enumerate(boxes):
            tracker.initialize(frames[0], box, f't{index}')
        post = []

        def step() -> None:
            tracker.track(frames[int(rng.integers(len(frames)))])
            post.append(tracker.last_timing.update_ms)

        step_ms = median_ms(step, repeats, warmup, device)
        stages['post_process'] = statistics.median(post[warmup:])
        result['targets'][str(count)] = {'stages_ms': stages, 'tracker_ms': step_ms, 'fps': 1000.0 / step_ms,
                                         'target_frames_per_s': count * 1000.0 / step_ms}
        print(f'  {backend} {count} targets: {1000.0 / step_ms:.1f} FPS', flush=True)
    return result


def run_profile(model: LoadedModel, weights: str, backends: list[str], device: torch.device,
                precision: str, targets: list[int], frame_size: tuple[int, int], repeats: int, warmup: int,
                cache_dir: str | None = None) -> dict[str, Any]:
    """The whole report as plain data (what profile.json holds)."""
    network = model.network.eval()
    complexity = measure_complexity(network, model.variant)
    report: dict[str, Any] = {
        'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'machine': machine_description(device), 'variant': model.variant.variant, 'weights': weights,
        'device': str(device), 'precision': precision, 'frame': list(frame_size),
        'repeats': repeats, 'warmup': warmup,
        'parameters': count_parameters(network),
        'gflops': {'per_module': flops_by_module(network, model.variant),
                   'template_backbone': complexity.template_backbone_gflops,
                   'search_backbone': complexity.search_backbone_gflops,
                   'transformer_heads': complexity.transformer_heads_gflops,
                   'per_frame': complexity.per_frame_gflops},
        'backends': {},
    }
    for backend in backends:
        reason = unavailable_reason(backend, device)
        if reason is None and backend == 'onnxruntime' and precision != 'fp32':
            reason = 'onnxruntime runs fp32 only'
        if reason is not None:
            report['backends'][backend] = {'available': False, 'reason': reason}
            print(f'  {backend}: skipped ({reason})', flush=True)
            continue
        entry = profile_backend(model, backend, device, precision, targets, frame_size, repeats, warmup, cache_dir)
        report['backends'][backend] = {'available': True, **entry}
    return report


def _ms(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}'


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    machine = report['machine']
    versions = ', '.join(f'{k} {v}' for k, v in machine['versions'].items() if v)
    lines = [f"# stark-profile: {report['variant']} ({report['weights']})", '',
             f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads"
             f"{', GPU ' + machine['gpu'] if machine['gpu'] else ', no GPU'}; {machine['platform']}.",
             f'Libraries: {versions}.',
             f"Device {report['device']}, {report['precision']}, {report['frame'][0]}x{report['frame'][1]} frames, "
             f"medians of {report['repeats']} runs after {report['warmup']} warm-up runs; {report['created']}.", '',
             f"Parameters: {report['parameters']:,}. GFLOPs per frame (one target): "
             f"{report['gflops']['per_frame']:.2f}; template backbone (once per template) "
             f"{report['gflops']['template_backbone']:.2f}.", '',
             '| module | GFLOPs (search encode + decode, one target) |', '|---|---|']
    lines += [f'| {name} | {value:.3f} |' for name, value in report['gflops']['per_module'].items()]
    for backend, entry in report['backends'].items():
        lines += ['', f'## {backend}', '']
        if not entry['available']:
            lines.append(f"Not run: {entry['reason']}.")
            continue
        lines += [entry['description'], '',
                  '| targets | ' + ' | '.join(f'{s} ms' for s in STAGES) + ' | step ms | FPS | target-frames/s |',
                  '|' + '---|' * (len(STAGES) + 4)]
        for count, row in entry['targets'].items():
            stages = ' | '.join(_ms(row['stages_ms'][s]) for s in STAGES)
            lines.append(f"| {count} | {stages} | {row['tracker_ms']:.2f} | {row['fps']:.1f} | "
                         f"{row['target_frames_per_s']:.1f} |")
    lines += ['', '"-": the stage does not apply (no upload on the CPU; backends that run transformer and '
              'heads as one graph report them as decode).', '']
    return '\n'.join(lines)


def parse_frame(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'frame size {text!r} is not WIDTHxHEIGHT, e.g. 1920x1080') from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f'frame size {text!r}: at least 64x64')
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='stark-profile', description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='STARK checkpoint (.pth.tar); default: the '
                        'default model shipped in the package')
    parser.add_argument('--variant', default=None, help='variant name or YAML (required with --untrained)')
    parser.add_argument('--untrained', action='store_true', help='random weights (same work, for speed only)')
    parser.add_argument('--backends', nargs='+', default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument('--targets', nargs='+', type=int, default=[1, 4, 16, 64])
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='fp32', choices=list(PRECISIONS))
    parser.add_argument('--frame', type=parse_frame, default=(1920, 1080), help='WIDTHxHEIGHT (default 1920x1080)')
    parser.add_argument('--repeats', type=int, default=20, help='timed runs per measurement')
    parser.add_argument('--warmup', type=int, default=3, help='untimed runs before each measurement')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--cache-dir', default=None, help='exported ONNX graphs / TensorRT engines')
    parser.add_argument('--output-dir', default='.', help='where profile.json and profile.md go')
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.targets) or args.repeats < 1 or args.warmup < 0:
        parser.error('--targets and --repeats must be at least 1, --warmup at least 0')
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        model = load_model(args.checkpoint, args.variant, allow_untrained=args.untrained)
    except (ValueError, OSError, CheckpointError) as error:
        parser.error(str(error))
    weights = 'untrained weights' if model.checkpoint is None else str(model.checkpoint.path)
    print(f'stark-profile: {model.describe()} on {device}', flush=True)
    report = run_profile(model, weights, args.backends, device, args.precision, sorted(set(args.targets)),
                         args.frame, args.repeats, args.warmup, args.cache_dir)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / 'profile.json').write_text(json.dumps(report, indent=1) + '\n')
    (output / 'profile.md').write_text(to_markdown(report))
    print(f'wrote {output / "profile.json"} and {output / "profile.md"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
