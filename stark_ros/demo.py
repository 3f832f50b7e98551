"""The end-to-end demo (make demo): the real node tracks targets in a synthetic camera stream.

    python -m stark_ros.demo [--checkpoint STARKST_ep0050.pth.tar] [--frames 80] [--targets 2]

The installed tracker_node is started as a process, fed 640x480 frames over DDS at --rate Hz,
given each target's box through /stark/init_target on the first frame, and its detections are
compared with the exact ground truth. Prints IoU per target and the latency, and writes a video with
ground truth (white) and tracks (green) to --out.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from stark_model.box_ops import iou_xywh
from stark_training.synthetic import SyntheticSequence, make_sequence

from .driver import NodeClient, NodeProcess, large_frame_transport, untrained_checkpoint
from .messages import box_of

BASE_STAMP_NS = 1_700_000_000_000_000_000
NO_MODEL = ('No trained model is bundled yet (the embedded default model is its own issue), so this '
            'run uses an UNTRAINED lite network: it shows the node, DDS and services working, but its '
            'boxes are meaningless.\nFor real tracking: make demo CHECKPOINT=/path/to/STARKST_ep0050.pth.tar '
            '(an official STARK checkpoint or one trained with stark_training).')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m stark_ros.demo', description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=os.environ.get('STARK_CHECKPOINT', ''),
                        help='STARK checkpoint (default: $STARK_CHECKPOINT)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--frames', type=int, default=80)
    parser.add_argument('--targets', type=int, default=2)
    parser.add_argument('--rate', type=float, default=10.0, help='camera frames per second')
    parser.add_argument('--out', type=Path, default=Path('out/demo.mp4'), help='annotated video ('' = none)')
    return parser.parse_args(argv)


def stamp(index: int) -> int:
    return BASE_STAMP_NS + index * 100_000_000


def run_node(args: argparse.Namespace, checkpoint: Path, sequence: SyntheticSequence) -> NodeClient:
    """Play the sequence through a fresh node; returns the client holding what came back."""
    with large_frame_transport(), NodeProcess({'model.checkpoint': checkpoint, 'model.device': args.device,
                                               'tracking.max_targets': max(8, args.targets)}) as node:
        client = NodeClient(node.namespace)
        try:
            client.wait_for_node(timeout=120, node=node)
            client.publish(sequence.frames[0], stamp(0))
            client.wait_until(lambda: client.detection_for(stamp(0)) is not None, 60, 'the first frame', node)
            for k, box in enumerate(sequence.boxes[0]):
                response = client.init_target(box, stamp(0), target_id=f'object-{k}', label='demo')
                print(('started ' if response.success else 'REFUSED ') + response.message)
            for index in range(1, len(sequence)):
                client.publish(sequence.frames[index], stamp(index))
                time.sleep(1.0 / args.rate)
            last = stamp(len(sequence) - 1)
            client.wait_until(lambda: client.round_trip(last)[1] is not None, 30, 'the last result', node)
            time.sleep(0.5)
        finally:
            client.close()
    return client


def summarise(client: NodeClient, sequence: SyntheticSequence) -> list[str]:
    """Per-target IoU against ground truth and end-to-end latency, as printable lines."""
    answered = [i for i in range(1, len(sequence)) if client.detection_for(stamp(i)) is not None]
    lines = [f'frames: {len(sequence) - 1} sent after the first, {len(answered)} answered '
             '(the node skips to the newest frame when busy)']
    for k in range(len(sequence.boxes[0])):
        ious = []
        for i in answered:
            match = [d for d in client.detection_for(stamp(i)).detections if d.id == f'object-{k}']
            if match:
                ious.append(iou_xywh(box_of(match[0]), sequence.boxes[i][k]))
        if ious:
            lines.append(f'object-{k}: mean IoU {np.mean(ious):.3f}, IoU > 0.5 on '
                         f'{100 * np.mean(np.array(ious) > 0.5):.0f}% of {len(ious)} frames')
    trips = [client.round_trip(stamp(i)) for i in answered]
    latencies = [(back - sent) * 1000 for sent, back in trips if sent is not None and back is not None]
    if latencies:
        p50, p95 = np.percentile(latencies, (50, 95))
        lines.append(f'latency camera publish -> detections received: p50 {p50:.0f} ms, p95 {p95:.0f} ms')
    return lines


def write_video(path: Path, client: NodeClient, sequence: SyntheticSequence, fps: float) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = sequence.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    if not writer.isOpened():
        return False
    for index, frame in enumerate(sequence.frames):
        canvas = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        for x, y, w, h in sequence.boxes[index]:
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 255), 1)
        result = client.detection_for(stamp(index))
        for detection in result.detections if result else []:
            x, y, w, h = box_of(detection)
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (0, 255, 0), 2)
        writer.write(canvas)
    writer.release()
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sequence = make_sequence(num_frames=args.frames, num_targets=args.targets, seed=11)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(args.checkpoint) if args.checkpoint else None
        if checkpoint is None:
            print(NO_MODEL, flush=True)
            checkpoint = untrained_checkpoint('lite', Path(scratch))
        elif not checkpoint.is_file():
            print(f'demo: checkpoint {checkpoint} does not exist', file=sys.stderr)
            return 2
        client = run_node(args, checkpoint, sequence)
    print('\n'.join(summarise(client, sequence)))
    if str(args.out) and write_video(args.out, client, sequence, args.rate):
        print(f'video with ground truth (white) and tracks (green): {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
