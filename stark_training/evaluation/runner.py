"""stark-eval: track every sequence of a benchmark split, save results for its toolkit or server, score them.

    stark-eval run --dataset lasot --root /data/LaSOT --split test --checkpoint STARKST_ep0050.pth.tar \\
        --output results --workers 2
    stark-eval run --dataset otb --root ../shared/data/otb_val --output results     # the bundled default model
    stark-eval run --dataset otb --root ../shared/data/otb_val --trackers default,nano,csrt,kcf \\
        --nano-dir ../shared/baselines/nanotrack_v2 --output results              # one table, four trackers
    stark-eval run --dataset got10k --root /data/GOT-10k --split val --baseline csrt --output results
    stark-eval report --dataset lasot --root /data/LaSOT --split test \\
        --results results/stark-st50/lasot-test results/csrt/lasot-test --output reports/lasot

Without --checkpoint, --baseline, --untrained or --trackers, the bundled default model runs.
Finished sequences are skipped (their box file exists; it is written last and atomically), so an
interrupted run continues where it stopped. Checkpoints are read only through stark_model's safe
loader. Test splits without ground truth (GOT-10k test, TrackingNet test) are packed as the
servers take them (a zip beside the results).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from . import formats
from .metrics import (PROTOCOLS, MetricsError, SequenceResult, Summary, attribute_breakdown, evaluate_sequence,
                      protocol_for, summarize)
from .report import comparison_table, summary_line

TARGET_ID = 'target'
# Split option per reader: which datasets take --split.
SPLIT_DATASETS = ('lasot', 'got10k', 'trackingnet')
# Sequence.attributes entries that are bookkeeping, not attributes to break results down by.
NOT_ATTRIBUTES = ('meta', 'cover', 'annotated')
# --trackers entries that mean the model shipped in stark_model/default_model ('stark': the name
# stark_training.default_model_eval uses).
DEFAULT_TRACKERS = ('default', 'stark')
BOX_ORIGINS = (0, 1)
# Defaults for STARK in the evaluation tools, measured (docs/EVALUATION.md, Speed): one thread
# per worker, as more threads lose to a busy machine's other processes; ONNX Runtime on the CPU
# where it is installed ('auto'), as it ran the default model about 4x faster than PyTorch there.
EVAL_THREADS = 1
EVAL_BACKEND = 'auto'
EVAL_BACKENDS = ('auto', 'pytorch', 'onnxruntime')


class EvaluationError(RuntimeError):
    """A run or report that cannot go on; the message names the sequence or file."""


class SingleTargetTracker(Protocol):
    """What the runner drives: one target, xywh boxes in pixels, RGB uint8 images."""

    def initialize(self, image: np.ndarray, box: Sequence[float]) -> None: ...

    def track(self, image: np.ndarray) -> Sequence[float]: ...


@dataclass(frozen=True)
class TrackerSpec:
    """How to build a tracker in each worker: STARK from a checkpoint, or a baseline by name."""

    checkpoint: str | None = None
    variant: str | None = None
    baseline: str | None = None
    nano_dir: str | None = None
    device: str = 'cpu'
    allow_untrained: bool = False
    threads: int = 1
    search_factor: float | None = None  # STARK: the search region's size; None: the model's own
    backend: str = 'pytorch'  # STARK: a stark_model backend (pytorch, onnxruntime, ...)

    def display_name(self) -> str:
        if self.baseline:
            return self.baseline
        name = Path(self.checkpoint).name.split('.')[0] if self.checkpoint else f'untrained-{self.variant}'
        return f'{name}-search{self.search_factor:g}' if self.search_factor else name


class StarkSingleTarget:
    """A StarkTracker (the node's tracker) driven through the single-target calls."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def initialize(self, image: np.ndarray, box: Sequence[float]) -> None:
        self.tracker.clear()
        self.tracker.initialize(image, box, TARGET_ID)

    def track(self, image: np.ndarray) -> Sequence[float]:
        return self.tracker.track(image)[TARGET_ID].box


def eval_backend(backend: str, device: str) -> str:
    """The evaluator's 'auto': onnxruntime on the CPU for every model where the package is installed (for
    speed; its boxes differ from eager PyTorch's by about 3e-6), else pytorch; others as named."""
    if backend != 'auto':
        return backend
    import torch
    from stark_model.backends import unavailable_reason
    cpu = device == 'cpu'
    return 'onnxruntime' if cpu and unavailable_reason('onnxruntime', torch.device('cpu')) is None else 'pytorch'


def build_tracker(spec: TrackerSpec) -> SingleTargetTracker:
    """The tracker `spec` describes (STARK loads through stark_model's safe checkpoint loader), with
    spec.threads threads for OpenCV (the baselines, our crops) and for torch."""
    import cv2
    cv2.setNumThreads(max(1, spec.threads))
    if spec.baseline:
        from .baselines import make_baseline
        return make_baseline(spec.baseline, spec.nano_dir)
    import torch
    from stark_model import create_tracker, load_model
    torch.set_num_threads(max(1, spec.threads))
    model = load_model(spec.checkpoint, spec.variant, allow_untrained=spec.allow_untrained)
    tracker = create_tracker(model, device=spec.device, backend=eval_backend(spec.backend, spec.device))
    tracker.set_search_factor(spec.search_factor)
    return StarkSingleTarget(tracker)


def tracker_spec(entry: str, base: TrackerSpec) -> TrackerSpec:
    """The spec of one --trackers entry: 'default' (the bundled model), a baseline name, or a
    checkpoint file; the other fields (threads, device, ...) come from `base`."""
    from .baselines import BASELINES
    key = entry.strip()
    if key.lower() in DEFAULT_TRACKERS:
        from stark_model.factory import default_checkpoint
        return replace(base, checkpoint=str(default_checkpoint()), baseline=None)
    if key.lower() in BASELINES:
        return replace(base, baseline=key.lower(), checkpoint=None)
    if Path(key).is_file():
        return replace(base, checkpoint=key, baseline=None)
    raise EvaluationError(f'--trackers: {entry!r} is neither {" nor ".join(DEFAULT_TRACKERS)}, a baseline '
                          f'({", ".join(BASELINES)}), nor a checkpoint file')


def track_sequence(tracker: SingleTargetTracker, sequence: Any, box_origin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run one sequence from its first ground-truth box: (xywh boxes (N, 4), seconds per frame (N,)).

    box_origin 1: the dataset counts pixels from 1 (OTB) and the tracker gets 0-based boxes: x and y
    minus 1 going in, plus 1 coming out, so results stay in the dataset's convention and are scored
    against its files as they are (IoU and centre error do not change under a common shift).
    box_origin 0: boxes go in and out as written (the got10k toolkit's and pytracking's way)."""
    first = np.asarray(sequence.boxes[0], np.float64)
    if not np.all(np.isfinite(first)) or first[2] <= 0 or first[3] <= 0:
        raise EvaluationError(f'sequence {sequence.name}: the first frame has no usable box ({first.tolist()})')
    shift = np.array([box_origin, box_origin, 0.0, 0.0])
    boxes = np.empty((len(sequence), 4))
    times = np.empty(len(sequence))
    for index in range(len(sequence)):
        image = sequence.image(index)
        started = time.perf_counter()
        if index == 0:
            tracker.initialize(image, first - shift)
            boxes[0] = first
        else:
            boxes[index] = np.asarray(tracker.track(image), np.float64) + shift
        times[index] = time.perf_counter() - started
    return boxes, times


# ------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _start_worker(spec: TrackerSpec, dataset: Any, folder: str, layout: str, box_origin: int = 0) -> None:
    _WORKER.update(tracker=build_tracker(spec), dataset=dataset, folder=Path(folder), layout=layout,
                   box_origin=box_origin)


def _run_one(index: int) -> tuple[str, int, float]:
    """Track sequence `index` of the worker's dataset and write its result; (name, frames, seconds)."""
    sequence = _WORKER['dataset'][index]
    try:
        boxes, times = track_sequence(_WORKER['tracker'], sequence, _WORKER['box_origin'])
    except EvaluationError:
        raise
    except Exception as error:  # name the sequence: a traceback from a worker does not
        raise EvaluationError(f'sequence {sequence.name}: {type(error).__name__}: {error}') from error
    formats.write_result(_WORKER['folder'], _WORKER['layout'], sequence.name, boxes, times)
    return sequence.name, len(sequence), float(times.sum())


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
    """One line per finished sequence with frame rate, elapsed time and an ETA."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self.total, self.done, self.out = total, 0, out
        self.started = time.monotonic()

    def update(self, name: str, frames: int, seconds: float) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        fps = frames / seconds if seconds > 0 else math.inf
        width = len(str(self.total))
        self.out(f'[{self.done:{width}d}/{self.total}] {name}: {frames} frames, {fps:.1f} fps | '
                 f'elapsed {_clock(elapsed)}, ETA {_clock(eta)}')


def _runtime_note(spec: TrackerSpec) -> str:
    """', backend onnxruntime, 1 thread(s) each' for STARK, ', 1 thread(s) each' for a baseline."""
    backend = '' if spec.baseline else f', backend {eval_backend(spec.backend, spec.device)}'
    return f'{backend}, {spec.threads} thread(s) each'


def run_split(dataset: Any, spec: TrackerSpec, folder: Path, layout: str, workers: int = 1,
              names: Sequence[str] | None = None, out: Callable[[str], None] = print,
              box_origin: int = 0) -> list[str]:
    """Track every unfinished sequence of `dataset` (or of `names`) into `folder`; returns the names
    run. box_origin: see track_sequence."""
    all_names = dataset.sequence_names()
    wanted = list(all_names) if names is None else list(names)
    unknown = [n for n in wanted if n not in all_names]
    if unknown:
        raise EvaluationError(f'{dataset.name} has no sequence {unknown[0]!r}')
    todo = [all_names.index(n) for n in wanted if not formats.is_finished(folder, layout, n)]
    skipped = len(wanted) - len(todo)
    out(f'{len(wanted)} sequences: {skipped} already finished in {folder}, {len(todo)} to run '
        f'with {spec.display_name()} on {max(1, workers)} worker(s){_runtime_note(spec)}')
    if not todo:
        return []
    progress = Progress(len(todo), out)
    if workers <= 1:
        _start_worker(spec, dataset, str(folder), layout, box_origin)
        for index in todo:
            progress.update(*_run_one(index))
        _WORKER.clear()
    else:
        context = get_context('spawn')  # fork after torch has started threads is unsafe
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(spec, dataset, str(folder), layout, box_origin)) as pool:
            futures = [pool.submit(_run_one, index) for index in todo]
            try:
                for future in as_completed(futures):
                    progress.update(*future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)  # finished sequences are kept; rerun resumes
                raise
    return [all_names[i] for i in todo]


# ------------------------------------------------------------------------------------- scoring
def has_ground_truth(sequence: Any) -> bool:
    """Whether any frame after the first has a box (test splits give only the first)."""
    return bool(np.isfinite(np.asarray(sequence.boxes[1:])).all(axis=1).any())


def _image_size(sequence: Any) -> tuple[int, int]:
    """(width, height): GOT-10k's meta_info.ini resolution where given, else the first frame's."""
    meta = sequence.attributes.get('meta')
    resolution = meta.get('resolution') if isinstance(meta, dict) else None
    if resolution:
        width, height = (int(float(v)) for v in resolution.strip('()[] ').split(','))
        return width, height
    height, width = sequence.image(0).shape[:2]
    return width, height


def score_results(dataset: Any, folder: Path, layout: str, protocol: str,
                  names: Sequence[str] | None = None) -> list[SequenceResult]:
    """Score the results in `folder` for every sequence with ground truth (missing results: an error)."""
    all_names = dataset.sequence_names()
    results = []
    for name in names or all_names:
        sequence = dataset[all_names.index(name)]
        if not has_ground_truth(sequence):
            continue
        if not formats.is_finished(folder, layout, name):
            raise EvaluationError(f'no result for sequence {name} in {folder}')
        boxes, times = formats.read_result(folder, layout, name)
        cover = sequence.attributes.get('cover')
        try:
            results.append(evaluate_sequence(
                boxes, sequence.boxes, protocol, name=name, visible=sequence.visible, cover=cover,
                image_size=_image_size(sequence) if protocol == 'got10k' else None, times=times,
                dataset=sequence.dataset,
                attributes={k: v for k, v in sequence.attributes.items() if k not in NOT_ATTRIBUTES}))
        except MetricsError as error:
            raise EvaluationError(f'{formats.result_paths(folder, layout, name)[0]}: {error}') from None
    return results


def write_reports(title: str, scored: dict[str, list[SequenceResult]], output: Path,
                  notes: str = '') -> dict[str, Summary]:
    """summary.json, report.md (with `notes` appended) and the plots of one or more trackers."""
    from .plots import plot_curves
    from .report import markdown_report
    output.mkdir(parents=True, exist_ok=True)
    summaries = {name: summarize(results) for name, results in scored.items() if results}
    if not summaries:
        return {}
    breakdowns = {name: attribute_breakdown(results) for name, results in scored.items() if results}
    plots = plot_curves(summaries, output, title)
    document = markdown_report(title, scored, summaries, breakdowns, [p.name for p in plots])
    document += f'\n{notes}' if notes else ''
    formats.write_atomically(output / 'report.md', document)
    formats.write_atomically(output / 'summary.json', json.dumps(
        {name: summary.as_dict() for name, summary in summaries.items()}, indent=1) + '\n')
    return summaries


# ------------------------------------------------------------------------------------- command line
def open_split(dataset: str, root: str | None, split: str | None) -> Any:
    """The dataset reader for `dataset` at `root` (with --split where the reader takes one)."""
    from stark_training.datasets import open_dataset
    options = {'split': split} if split and dataset in SPLIT_DATASETS else {}
    if root is None and dataset != 'synthetic':
        raise EvaluationError(f'dataset {dataset} needs --root (its folder)')
    if split and dataset not in SPLIT_DATASETS:
        raise EvaluationError(f'dataset {dataset} has no splits (--split is for {", ".join(SPLIT_DATASETS)})')
    return open_dataset(dataset, root, **options)


def _split_label(args: argparse.Namespace) -> str:
    label = f'{args.dataset}-{args.split}' if args.split else args.dataset
    # Results made from shifted boxes go to their own folder, so resuming never mixes the two.
    return f'{label}-boxorigin1' if getattr(args, 'box_origin', 0) == 1 else label


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='stark-eval', description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.splitlines()[2:]))
    commands = parser.add_subparsers(dest='command', required=True)
    for name, text in (('run', 'track a split, write results, report'), ('report', 'compare result folders')):
        sub = commands.add_parser(name, help=text)
        sub.add_argument('--dataset', required=True, help='lasot, got10k, trackingnet, otb, uav123, nfs, davis '
                         '(DAVIS layout, any resolution folder), folder (frames + groundtruth.txt) or synthetic '
                         '(generated, for plumbing checks)')
        sub.add_argument('--root', help='dataset root folder (not for synthetic)')
        sub.add_argument('--split', help='lasot: test; got10k: val or test; trackingnet: test')
        sub.add_argument('--protocol', choices=PROTOCOLS,
                         help='metric conventions (default: the dataset toolkit\'s; see docs/EVALUATION.md)')
        sub.add_argument('--sequences', nargs='+', metavar='NAME', help='only these sequences')
    _add_run_options(commands.choices['run'])
    report = commands.choices['report']
    report.add_argument('--results', nargs='+', required=True, type=Path,
                        help='result folders (OUTPUT/NAME/DATASET[-SPLIT]) to compare; NAME labels each')
    report.add_argument('--output', required=True, type=Path, help='folder for report.md, summary.json, plots')
    return parser.parse_args(argv)


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument('--output', required=True, type=Path, help='results go to OUTPUT/NAME/DATASET[-SPLIT]/')
    run.add_argument('--name', help='tracker name in folders and reports (default: checkpoint or baseline name)')
    what = run.add_mutually_exclusive_group()
    what.add_argument('--checkpoint', help='STARK checkpoint (official .pth.tar or stark_training; '
                      'default: the bundled default model)')
    what.add_argument('--baseline', choices=('csrt', 'kcf', 'mil', 'nano'), help='an OpenCV baseline instead')
    what.add_argument('--untrained', metavar='VARIANT', help='random weights of VARIANT (plumbing tests only)')
    what.add_argument('--trackers', metavar='A,B,...', help='several trackers, one after the other, one comparison '
                      'table: default (the bundled model), csrt, kcf, mil, nano, or checkpoint files')
    run.add_argument('--variant', help='model variant, if the checkpoint does not say')
    run.add_argument('--nano-dir', help='folder with the NanoTrack v2 ONNX files (for nano)')
    run.add_argument('--search-factor', type=float, help='STARK: search region side / target size '
                     '(default: the model\'s own)')
    run.add_argument('--box-origin', type=int, choices=BOX_ORIGINS, default=0,
                     help='the pixel index the dataset\'s boxes count from: 0 (default) hands them to the tracker '
                     'as written, as the got10k toolkit and pytracking do; 1 (OTB\'s files) gives the tracker x-1, '
                     'y-1 and adds 1 to its boxes (see docs/EVALUATION.md)')
    run.add_argument('--device', default='cpu', help='cpu, cuda, cuda:N or auto')
    run.add_argument('--backend', default=EVAL_BACKEND, choices=EVAL_BACKENDS,
                     help='STARK inference backend; auto (default): onnxruntime on the CPU where installed, '
                     'else pytorch (see docs/EVALUATION.md, Speed)')
    run.add_argument('--workers', type=int, default=1, help='parallel worker processes')
    run.add_argument('--threads', type=int, default=EVAL_THREADS,
                     help=f'CPU threads per worker (default {EVAL_THREADS}; 0: cores / workers, for an otherwise '
                     'idle machine; see docs/EVALUATION.md, Speed)')


def _threads(threads: int, workers: int) -> int:
    """--threads, where 0 shares the cores among the workers."""
    if threads < 0:
        raise ValueError(f'--threads must be 0 or more, got {threads}')
    return threads or max(1, (os.cpu_count() or 1) // max(1, workers))


def run_specs(args: argparse.Namespace) -> list[TrackerSpec]:
    """The trackers to run: --trackers, --baseline, --untrained, --checkpoint, else the bundled model."""
    base = TrackerSpec(variant=args.variant, nano_dir=args.nano_dir, device=args.device,
                       threads=_threads(args.threads, args.workers), search_factor=args.search_factor,
                       backend=args.backend)
    if args.trackers:
        specs = [tracker_spec(entry, base) for entry in args.trackers.split(',') if entry.strip()]
        if not specs:
            raise EvaluationError('--trackers names no tracker')
        names = [spec.display_name() for spec in specs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # one result folder each: a second run of the same tracker would only resume the first
            raise EvaluationError(f'--trackers names {twice[0]} twice')
        return specs
    if args.baseline:
        return [replace(base, baseline=args.baseline)]
    if args.untrained:
        return [replace(base, variant=args.untrained, allow_untrained=True)]
    if args.checkpoint:
        return [replace(base, checkpoint=args.checkpoint)]
    return [tracker_spec('default', base)]  # as every other tool: the bundled model unless told otherwise


def _check_spec(spec: TrackerSpec) -> None:
    """Refuse a bad checkpoint file, a missing OpenCV module or model file before any tracking."""
    if spec.baseline:
        build_tracker(spec)
    elif spec.checkpoint:
        from stark_model import read_checkpoint
        read_checkpoint(spec.checkpoint)


def _command_run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.search_factor is not None and not args.search_factor > 0:
        raise ValueError(f'--search-factor must be positive, got {args.search_factor}')
    specs = run_specs(args)
    if args.name and len(specs) > 1:
        raise EvaluationError('--name names one tracker; with several --trackers each is named after itself')
    for spec in specs:
        _check_spec(spec)
    dataset = open_split(args.dataset, args.root, args.split)
    layout = formats.layout_for(args.dataset)
    protocol = args.protocol or protocol_for(args.dataset)
    scored: dict[str, list[SequenceResult]] = {}
    for spec in specs:
        name = args.name or spec.display_name()
        folder = args.output / name / _split_label(args)
        results = _run_one_tracker(args, dataset, spec, folder, layout, protocol, out)
        if results is None:
            continue
        scored[name] = results
        if len(specs) == 1:
            summaries = write_reports(f'{name} on {_split_label(args)} ({protocol} protocol)', scored, folder)
            _print_summary(summaries, out)
            out(f'report: {folder / "report.md"}')
    if len(scored) > 1:
        folder = args.output / f'compare-{_split_label(args)}'
        summaries = write_reports(f'{", ".join(scored)} on {_split_label(args)} ({protocol} protocol)', scored, folder)
        _print_summary(summaries, out)
        out(comparison_table(scored, summaries))
        out(f'report: {folder / "report.md"}')
    return 0


def _run_one_tracker(args: argparse.Namespace, dataset: Any, spec: TrackerSpec, folder: Path, layout: str,
                     protocol: str, out: Callable[[str], None]) -> list[SequenceResult] | None:
    """Track (resuming) and score one tracker; None where there is no ground truth to score."""
    run_split(dataset, spec, folder, layout, args.workers, args.sequences, out, args.box_origin)
    names = args.sequences or dataset.sequence_names()
    if layout in ('got10k', 'trackingnet'):
        archive = formats.pack_submission(folder, layout, names, folder.with_name(f'{folder.name}-submission.zip'))
        out(f'server submission: {archive}')
    scored = score_results(dataset, folder, layout, protocol, args.sequences)
    if not scored:
        out('no ground truth beyond the first frames: nothing to score here (submit the zip)')
        return None
    return scored


def _command_report(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    dataset = open_split(args.dataset, args.root, args.split)
    layout = formats.layout_for(args.dataset)
    protocol = args.protocol or protocol_for(args.dataset)
    scored = {}
    for folder in args.results:
        split = _split_label(args)
        label = folder.parent.name if folder.name in (split, f'{split}-boxorigin1') else folder.name
        scored[label] = score_results(dataset, folder, layout, protocol, args.sequences)
    summaries = write_reports(f'{_split_label(args)} ({protocol} protocol)', scored, args.output)
    _print_summary(summaries, out)
    if len(summaries) > 1:
        out(comparison_table(scored, summaries))
    out(f'report: {args.output / "report.md"}')
    return 0


def _print_summary(summaries: dict[str, Summary], out: Callable[[str], None]) -> None:
    for name, s in summaries.items():
        out(f'{name}: {summary_line(s.as_dict())}  ({s.sequences} sequences)')


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 2 on bad input (message on stderr)."""
    args = parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    from stark_model import CheckpointError, ConfigError, TrackerError
    from stark_training.datasets import DatasetError
    from .baselines import BaselineError
    try:
        return _command_run(args, out) if args.command == 'run' else _command_report(args, out)
    except (EvaluationError, CheckpointError, ConfigError, TrackerError, DatasetError, BaselineError,
            formats.FormatError, FileNotFoundError, ValueError) as error:
        print(f'stark-eval: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
