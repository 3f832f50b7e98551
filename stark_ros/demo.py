"""The end-to-end demo (make demo): the real node tracks a pedestrian in real footage.

    python -m stark_ros.demo [--video PATH] [--checkpoint PATH] [--frames N] [--out-dir out/demo]

The installed tracker_node is started as a process with the default model shipped in stark_model
(or --checkpoint). The video's frames are published as a camera topic at the video's frame rate,
the target is started on the first frame through /stark/init_target, and the run writes an
annotated MP4, a per-frame CSV (stamp, box, score, state, latency) and a one-screen summary.
The footage is `vtest.avi` from Debian's opencv-doc (installed by `make setup` where apt is
available); without it the demo says so and plays a synthetic clip with exact ground truth.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from stark_model.box_ops import iou_xywh
from stark_training.evaluation.bags import video_frames
from stark_training.synthetic import make_sequence

from .driver import NodeClient, NodeError, NodeProcess, large_frame_transport
from .messages import box_of

BASE_STAMP_NS = 1_700_000_000_000_000_000
VTEST = Path('/usr/share/doc/opencv-doc/examples/data/vtest.avi')
# The man in the two-tone (maroon and navy) puffer jacket with a white paper: in view without a break
# from frame 505 to the end (frame 794); from frame 540 on he is fully visible and the demo starts
# there, 25.5 s before the end (xywh pixels, labelled by eye; test_demo.py has his later centres).
VTEST_START = 540
VTEST_TARGET = (235.0, 381.0, 48.0, 135.0)
DEMO_SEARCH_FACTOR = 0.0  # the model's own search region
STATE_NAMES = {0: 'IDLE', 1: 'TRACKING', 2: 'LOST'}
NO_VIDEO = ('The demo footage {path} is missing: it comes with Debian\'s opencv-doc package, which '
            '`make setup` installs where apt-get is available (sudo apt-get install opencv-doc). '
            'Playing a synthetic clip with known ground truth instead.')


@dataclass
class Clip:
    """What the demo plays: frames (a fresh iterator of RGB frames per call), their rate, the
    targets' first boxes and, for synthetic clips, the ground truth per frame."""

    name: str
    fps: float
    count: int
    size: tuple[int, int]  # width, height
    frames: Callable[[], Iterator[np.ndarray]]
    first_boxes: list[tuple[float, float, float, float]]
    ground_truth: list[list[tuple[float, float, float, float]]] | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m stark_ros.demo', description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=os.environ.get('STARK_CHECKPOINT', ''),
                        help='STARK checkpoint (default: $STARK_CHECKPOINT, else the shipped default model)')
    parser.add_argument('--video', type=Path, default=VTEST, help='video file to play (default: %(default)s)')
    parser.add_argument('--box', type=float, nargs=4, metavar=('X', 'Y', 'W', 'H'),
                        help='target box on the first played frame (default: a pedestrian of vtest.avi)')
    parser.add_argument('--start', type=int, default=None,
                        help=f'first frame to play (default: {VTEST_START} for vtest.avi with its default box, else 0)')
    parser.add_argument('--search-factor', type=float, default=DEMO_SEARCH_FACTOR,
                        help='the node\'s tracking.search_factor (default %(default)s: the model\'s own)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--frames', type=int, default=0, help='play at most this many frames (0: all)')
    parser.add_argument('--rate', type=float, default=0.0, help='frames per second (0: the video\'s own)')
    parser.add_argument('--targets', type=int, default=2, help='targets of the synthetic fallback clip')
    parser.add_argument('--out-dir', type=Path, default=Path('out/demo'),
                        help='folder for demo.mp4, tracks.csv and summary.txt')
    return parser.parse_args(argv)


def stamp(index: int, fps: float) -> int:
    """Header stamp of frame `index`: video time from a fixed origin."""
    return BASE_STAMP_NS + int(round(index * 1e9 / fps))


def video_clip(path: Path, box: tuple[float, float, float, float], max_frames: int, start: int = 0) -> Clip:
    """The video at `path` from frame `start` (read again for each pass, so it is never held in
    memory whole)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {path}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    if not 0 <= start < count:
        raise ValueError(f'start frame {start} is outside the video ({count} frames)')
    count -= start
    count = min(count, max_frames) if max_frames > 0 else count

    def frames() -> Iterator[np.ndarray]:  # a fresh reader per pass: the clip can be played again
        return itertools.islice(video_frames(path)[0], start, start + count)

    return Clip(f"{path.name} from frame {start}" if start else path.name, fps, count, size, frames, [box])


def synthetic_clip(num_frames: int, num_targets: int) -> Clip:
    """Textured targets moving over a textured background, with exact ground truth."""
    sequence = make_sequence(num_frames=num_frames, num_targets=num_targets, seed=11)
    height, width = sequence.frames[0].shape[:2]
    return Clip('synthetic', 10.0, len(sequence), (width, height), lambda: iter(sequence.frames),
                list(sequence.boxes[0]), sequence.boxes)


def run_node(args: argparse.Namespace, checkpoint: str, clip: Clip) -> NodeClient:
    """Play the clip through a fresh node at its frame rate; returns the client holding what came back."""
    fps = args.rate or clip.fps
    with large_frame_transport(), NodeProcess({'model.checkpoint': checkpoint, 'model.device': args.device,
                                               'tracking.max_targets': max(8, len(clip.first_boxes)),
                                               'tracking.search_factor': args.search_factor}) as node:
        client = NodeClient(node.namespace)
        try:
            client.wait_for_node(timeout=120, node=node)
            frames = clip.frames()
            first = next(frames)
            publish_until_answered(client, node, first, stamp(0, fps))
            for k, box in enumerate(clip.first_boxes):
                response = client.init_target(box, stamp(0, fps), target_id=f'target-{k}', label='demo')
                print(('started ' if response.success else 'REFUSED ') + response.message, flush=True)
            started = time.monotonic()
            for index, frame in enumerate(frames, start=1):
                # Real-time pacing: frame i leaves at i / fps, however long publishing took.
                delay = started + (index - 1) / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                client.publish(frame, stamp(index, fps))
                if index % max(1, int(fps * 10)) == 0:
                    print(f'  published {index + 1}/{clip.count} frames', flush=True)
            last = stamp(clip.count - 1, fps)
            try:
                client.wait_until(lambda: client.round_trip(last)[1] is not None, 30, 'the last result', node)
            except Exception:  # the node may have dropped the last frame while busy: report what came back
                pass
            time.sleep(0.5)
        finally:
            client.close()
    return client


def publish_until_answered(client: NodeClient, node: NodeProcess, frame: np.ndarray, stamp_ns: int,
                           timeout: float = 120.0) -> None:
    """Send the first frame until the node answers it: a best-effort camera topic may drop a
    sample sent right after the subscription matched."""
    deadline = time.monotonic() + timeout
    while True:
        client.publish(frame, stamp_ns)
        try:
            client.wait_until(lambda: client.detection_for(stamp_ns) is not None, 2.0, 'the first frame', node)
            return
        except NodeError:
            if time.monotonic() > deadline or not node.alive():
                raise


@dataclass
class FrameRecord:
    """What came back for one published frame and one target (None where the node skipped it)."""

    index: int
    stamp_ns: int
    box: tuple[float, float, float, float] | None
    score: float | None
    state: str
    latency_ms: float | None


def frame_records(client: NodeClient, clip: Clip, fps: float, target_id: str) -> list[FrameRecord]:
    """One record per frame for `target_id`: box from the detections, score and state from the
    status, latency from publishing the frame to receiving its detections."""
    statuses = {}
    for status in client.statuses:
        key = status.header.stamp.sec * 1_000_000_000 + status.header.stamp.nanosec
        for target in status.targets:
            if target.target_id == target_id:
                statuses[key] = target
    first = clip.first_boxes[int(target_id.rsplit('-', 1)[1])]
    records = [FrameRecord(0, stamp(0, fps), tuple(first), None, 'INIT', None)]  # the box given at the start
    for index in range(1, clip.count):
        key = stamp(index, fps)
        result = client.detection_for(key)
        match = [d for d in result.detections if d.id == target_id] if result else []
        target = statuses.get(key)
        sent, back = client.round_trip(key)
        records.append(FrameRecord(
            index, key, box_of(match[0]) if match else None, float(target.score) if target else None,
            STATE_NAMES.get(target.state, str(target.state)) if target else 'SKIPPED',
            (back - sent) * 1000 if sent is not None and back is not None else None))
    return records


def write_csv(path: Path, records: list[FrameRecord]) -> None:
    with open(path, 'w', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['frame', 'stamp_ns', 'x', 'y', 'w', 'h', 'score', 'state', 'latency_ms'])
        for r in records:
            box = [f'{v:.1f}' for v in r.box] if r.box else [''] * 4
            writer.writerow([r.index, r.stamp_ns, *box, '' if r.score is None else f'{r.score:.3f}', r.state,
                             '' if r.latency_ms is None else f'{r.latency_ms:.1f}'])


def summarise(records: list[FrameRecord], clip: Clip, fps: float, model: str) -> list[str]:
    """The one-screen summary: frames, rate, latency percentiles, time tracked and lost."""
    answered = [r for r in records[1:] if r.box is not None]
    lines = [f'clip: {clip.name}, {clip.count} frames at {fps:g} fps ({clip.count / fps:.1f} s), '
             f'{clip.size[0]}x{clip.size[1]}', f'model: {model}',
             f'frames answered: {len(answered)} of {len(records) - 1} after the first '
             f'({len(answered) / max((len(records) - 1) / fps, 1e-9):.1f} fps; the node skips to the newest '
             'frame when busy)']
    latencies = [r.latency_ms for r in answered if r.latency_ms is not None]
    if latencies:
        p50, p90, p99 = np.percentile(latencies, (50, 90, 99))
        lines.append(f'latency camera publish -> detections received: p50 {p50:.0f} ms, p90 {p90:.0f} ms, '
                     f'p99 {p99:.0f} ms')
    state = 'INIT'
    seconds = {'TRACKING': 0.0, 'LOST': 0.0}
    for r in records[1:]:
        state = r.state if r.state in seconds else state  # a skipped frame keeps the last known state
        if state in seconds:
            seconds[state] += 1 / fps
    lines.append(f'time tracked: {seconds["TRACKING"]:.1f} s, lost: {seconds["LOST"]:.1f} s '
                 f'(of {(len(records) - 1) / fps:.1f} s after the first frame)')
    states = [r.state for r in answered]
    lines.append(f'answered frames by state: TRACKING {states.count("TRACKING")}, LOST {states.count("LOST")}')
    scores = [r.score for r in answered if r.score is not None]
    if scores:
        lines.append(f'score: range {np.min(scores):.2f} to {np.max(scores):.2f}, mean {np.mean(scores):.2f}')
    return lines


def ground_truth_lines(client: NodeClient, clip: Clip, fps: float) -> list[str]:
    """Synthetic clips: per-target IoU against the exact ground truth."""
    lines = []
    for k in range(len(clip.first_boxes)):
        ious = []
        for index in range(1, clip.count):
            result = client.detection_for(stamp(index, fps))
            match = [d for d in result.detections if d.id == f'target-{k}'] if result else []
            if match:
                ious.append(iou_xywh(box_of(match[0]), clip.ground_truth[index][k]))
        if ious:
            lines.append(f'target-{k}: mean IoU {np.mean(ious):.3f}, IoU > 0.5 on '
                         f'{100 * np.mean(np.array(ious) > 0.5):.0f}% of {len(ious)} frames')
    return lines


def write_video(path: Path, client: NodeClient, clip: Clip, fps: float) -> bool:
    """The clip with each target's latest box (green tracking, red lost), score and state drawn."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, clip.size)
    if not writer.isOpened():
        return False
    records = {k: frame_records(client, clip, fps, f'target-{k}') for k in range(len(clip.first_boxes))}
    last: dict[int, FrameRecord] = {}
    for index, frame in enumerate(clip.frames()):
        canvas = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if clip.ground_truth is not None:
            for x, y, w, h in clip.ground_truth[index]:
                cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 255), 1)
        for k, target_records in records.items():
            record = target_records[index]
            if record.box is not None:
                last[k] = record
            shown = last.get(k)
            if shown is None:
                continue
            x, y, w, h = shown.box
            colour = (0, 0, 255) if shown.state == 'LOST' else (0, 220, 0)
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), colour, 2)
            label = shown.state if shown.score is None else f'{shown.state} {shown.score:.2f}'
            cv2.putText(canvas, label, (int(x), max(12, int(y) - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, f'frame {index}', (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        writer.write(canvas)
    writer.release()
    return True


def model_checkpoint(requested: str) -> tuple[str, str]:
    """(checkpoint path, description): the requested file, else the shipped default model."""
    if requested:
        return requested, requested
    from stark_model.factory import default_checkpoint
    path = default_checkpoint()
    return str(path), f'default model {path.name} (docs/MODEL_CARD.md)'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        print(f'demo: checkpoint {args.checkpoint} does not exist', file=sys.stderr)
        return 2
    try:
        checkpoint, model = model_checkpoint(args.checkpoint)
    except Exception as error:  # the default model is missing or damaged
        print(f'demo: {error}', file=sys.stderr)
        return 2
    if args.video.is_file():
        start = args.start if args.start is not None else (VTEST_START if not args.box and args.video == VTEST else 0)
        clip = video_clip(args.video, tuple(args.box) if args.box else VTEST_TARGET, args.frames, start)
    else:
        print(NO_VIDEO.format(path=args.video), flush=True)
        clip = synthetic_clip(args.frames or 80, args.targets)
    fps = args.rate or clip.fps
    print(f'playing {clip.name} ({clip.count} frames at {fps:g} fps) through the stark_tracker node', flush=True)
    client = run_node(args, checkpoint, clip)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    records = frame_records(client, clip, fps, 'target-0')
    write_csv(args.out_dir / 'tracks.csv', records)
    lines = summarise(records, clip, fps, model)
    lines.insert(2, f'search region: {args.search_factor:g}x the target size (tracking.search_factor)'
                 if args.search_factor else 'search region: the model\'s own size')
    if clip.ground_truth is not None:
        lines += ground_truth_lines(client, clip, fps)
    if write_video(args.out_dir / 'demo.mp4', client, clip, fps):
        lines.append(f'annotated video: {args.out_dir / "demo.mp4"}')
    lines.append(f'per-frame CSV (stamp, box, score, state, latency): {args.out_dir / "tracks.csv"}')
    (args.out_dir / 'summary.txt').write_text('\n'.join(lines) + '\n')
    print('\n'.join(['', '=== stark_ros demo summary ===', *lines]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
