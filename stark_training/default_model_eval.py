"""Held-out check of the default model against OpenCV's trackers on the same frames.

Sequences: the DAVIS-2016 videos that the training config holds out (real footage never trained
on; DAVIS is a segmentation set, so this is a held-out check, not a benchmark result) and
synthetic videos made of photos the config does not train on. Trackers: the STARK checkpoint,
OpenCV CSRT and KCF, and TrackerNano (NanoTrack v2, ONNX files from a folder the user names).
Every tracker runs on every sequence, single-threaded, from the first ground-truth box; the
table gives success AUC, precision at 20 px and frames per second (tracking calls only).

    python -m stark_training.default_model_eval --config config/training/default_model_st1.yaml \
        --nano-dir ../shared/baselines/nanotrack_v2 --out out/default_model/eval
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .config import load_training_config
from .datasets import open_dataset
from .evaluation.baselines import BaselineError
from .evaluation.metrics import SequenceResult, evaluate_sequence, summarize
from .evaluation.runner import EVAL_THREADS, TrackerSpec, build_tracker, track_sequence, tracker_spec
from .photo_sequences import PhotoSequences

# DAVIS-2016's 20 videos in list order, every 4th: held out of the default model's training.
HELD_OUT_DAVIS = ('camel', 'dance-twirl', 'goat', 'motocross-jump', 'soapbox')
# Photos that the training config does not list (nor near-duplicates of them): evaluation only.
EVAL_PHOTOS = ('messi5.jpg', 'basketball1.png', 'ela_original.jpg', 'box_in_scene.png', 'rubberwhale1.png',
               'chicky_512.png', 'pic1.png', 'cards.png')
EVAL_PHOTO_SEED = 2026


def evaluation_sets(config_path: Path, photo_sequences: int, photo_frames: int) -> dict[str, list[Any]]:
    """{'davis_held_out': [...], 'photos_held_out': [...]}: the material that the training config
    (its davis and photos sources) leaves out; ValueError if it trains on any of it."""
    sources = {entry.name: entry for entry in load_training_config(config_path).data.train.datasets}
    davis, photos = sources['davis'], sources['photos']
    for overlap, what in ((set(HELD_OUT_DAVIS) & set(davis.options.get('videos', HELD_OUT_DAVIS)), 'DAVIS video'),
                          (set(EVAL_PHOTOS) & set(photos.options['photos']), 'photo')):
        if overlap:
            raise ValueError(f'{config_path}: evaluation {what} {sorted(overlap)[0]} is also trained on')
    videos = open_dataset('davis', davis.root, resolution=davis.options.get('resolution', 'auto'),
                          videos=list(HELD_OUT_DAVIS))
    photo_videos = PhotoSequences([Path(photos.root) / name for name in EVAL_PHOTOS], photo_sequences,
                                  photo_frames, seed=EVAL_PHOTO_SEED, size=(640, 480))
    return {'davis_held_out': [videos[i] for i in range(len(videos))],
            'photos_held_out': [photo_videos[i] for i in range(len(photo_videos))]}


def run_tracker(spec: TrackerSpec, sequences: list[Any], out: Callable[[str], None]) -> list[SequenceResult]:
    """Track and score every sequence with one tracker (built once, re-initialised per sequence)."""
    tracker = build_tracker(spec)
    results = []
    for sequence in sequences:
        boxes, times = track_sequence(tracker, sequence)
        results.append(evaluate_sequence(boxes, sequence.boxes, 'ope', sequence.name, visible=sequence.visible,
                                         times=times[1:]))
        out(f'  {spec.display_name():>12} {sequence.name:>22}: AUC {results[-1].auc:.3f}, '
            f'{results[-1].fps:.1f} fps')
    return results


LABELS = {'stark': 'STARK default (ours)', 'csrt': 'OpenCV CSRT', 'kcf': 'OpenCV KCF', 'nano': 'OpenCV TrackerNano'}


def label(name: str) -> str:
    """The table's name for a stored result: LABELS, or ours with a search factor (stark_search3)."""
    if name.startswith('stark_search'):
        return f'{LABELS["stark"]}, search region {name.removeprefix("stark_search")}x'
    return LABELS.get(name, name)


def evaluate_tracker(spec: TrackerSpec, sets: dict[str, list[Any]], out: Callable[[str], None]) -> dict[str, Any]:
    """Summaries per sequence set and per-sequence AUCs of one tracker, as plain data."""
    summaries, per_sequence = {}, {}
    for set_name, sequences in sets.items():
        results = run_tracker(spec, sequences, out)
        summary = summarize(results)
        summaries[set_name] = {'auc': summary.auc, 'precision': summary.precision, 'fps': summary.fps,
                               'sequences': summary.sequences}
        per_sequence.update({r.name: round(r.auc, 4) for r in results})
    return {'summaries': summaries, 'per_sequence_auc': per_sequence}


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per tracker and column group per sequence set: AUC, precision, FPS."""
    sets = list(next(iter(summaries.values())))
    header = '| tracker | ' + ' | '.join(f'{s}: AUC | precision | FPS' for s in sets) + ' |'
    lines = [header, '|---|' + '---|---|---|' * len(sets)]
    for name, by_set in summaries.items():
        cells = []
        for s in sets:
            figures = by_set[s]
            cells += [f'{100 * figures["auc"]:.1f}', f'{100 * figures["precision"]:.1f}', f'{figures["fps"]:.1f}']
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m stark_training.default_model_eval',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, default=Path('config/training/default_model_st1.yaml'),
                        help='the training config whose held-out material to use')
    parser.add_argument('--checkpoint', default='', help='STARK checkpoint (default: the shipped default model)')
    parser.add_argument('--nano-dir', default=None, help='folder with the NanoTrack v2 ONNX files')
    parser.add_argument('--trackers', default='stark,csrt,kcf,nano')
    parser.add_argument('--search-factor', type=float, help='STARK\'s search region / target size (default: '
                        'the model\'s own); its results are stored as stark_search<F>')
    parser.add_argument('--photo-sequences', type=int, default=8)
    parser.add_argument('--photo-frames', type=int, default=60)
    parser.add_argument('--out', type=Path, default=Path('out/default_model/eval'))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.trackers.split(',')) - set(LABELS))
    if unknown:
        parser.error(f'unknown tracker {unknown[0]!r} (known: {", ".join(LABELS)})')
    sets = evaluation_sets(args.config, args.photo_sequences, args.photo_frames)
    # stark-eval's tracker names ('stark': the bundled model unless --checkpoint names another);
    # PyTorch, as the model card's figures were measured with it; build_tracker sets the threads.
    base = TrackerSpec(nano_dir=args.nano_dir, threads=EVAL_THREADS, search_factor=args.search_factor)
    specs = {name: tracker_spec(name, base) for name in args.trackers.split(',') if name != 'stark'}
    if 'stark' in args.trackers.split(','):
        specs['stark'] = replace(base, checkpoint=args.checkpoint) if args.checkpoint else tracker_spec('stark', base)
    checkpoint = specs['stark'].checkpoint if 'stark' in specs else None
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for name in args.trackers.split(','):
        try:
            record = evaluate_tracker(specs[name], sets, print)
        except BaselineError as error:
            print(f'skipping {name}: {error}', file=sys.stderr)
            continue
        record['checkpoint'] = checkpoint if name == 'stark' else None
        stored = f'stark_search{args.search_factor:g}' if name == 'stark' and args.search_factor else name
        (args.out / f'{stored}.json').write_text(json.dumps(record, indent=1))
    # The table holds every tracker evaluated into this folder so far (ours first).
    records = {path.stem: json.loads(path.read_text()) for path in sorted(args.out.glob('*.json'))}
    ours = ['stark'] * ('stark' in records) + sorted(name for name in records if name.startswith('stark_search'))
    order = ours + [name for name in ('csrt', 'kcf', 'nano') if name in records] + \
        [name for name in records if name not in ours and name not in ('csrt', 'kcf', 'nano')]
    table = markdown_table({label(name): records[name]['summaries'] for name in order})
    (args.out / 'table.md').write_text(table + '\n')
    print(table)
    print(f'({time.monotonic() - started:.0f} s; results in {args.out})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
