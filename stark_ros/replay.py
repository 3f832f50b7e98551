"""stark-replay: play a rosbag2 through the tracker node and score what it publishes.

    stark-replay BAG --checkpoint model.pth.tar                     # start a node, lock-step
    stark-replay BAG --checkpoint model.pth.tar --mode rate --rate 2  # twice the recorded rate
    stark-replay BAG --namespace /robot --camera-topic /camera/image_raw   # a node already running
    stark-replay BAG --checkpoint model.pth.tar --offline           # same frames, no node

The first frame is published, and once the node has answered it, /stark/init_target starts the
target from the first ground-truth box on that frame's stamp. Lock-step publishes each next frame
only after the detections of the previous one came back (accuracy without drops); rate mode
publishes at the recorded rate times --rate and counts the frames never answered as dropped (their
box is the previous one, as a consumer holds it). Frames are re-stamped with the time they are
published, so latency is the image stamp to detection receipt. Reports: the evaluation metrics
(ope protocol), latency p50/p95/p99, drops, plots; the same files as stark-eval writes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stark_training.evaluation import formats
from stark_training.evaluation.bags import BagError, BagRecording, read_bag
from stark_training.evaluation.metrics import evaluate_sequence

TARGET_ID = 'replay'


class ReplayError(RuntimeError):
    """The replay could not go on (the node refused the target, stopped answering, ...)."""


@dataclass
class ReplayResult:
    """Per frame: the box (NaN until initialised), whether the node answered, and its latency."""

    boxes: np.ndarray
    answered: np.ndarray
    latency_ms: np.ndarray
    frame_times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def dropped(self) -> int:
        return int((~self.answered[1:]).sum())

    def latency_summary(self) -> dict[str, float]:
        values = self.latency_ms[np.isfinite(self.latency_ms)]
        if not len(values):
            return {'frames_answered': 0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {'latency_p50_ms': float(p50), 'latency_p95_ms': float(p95), 'latency_p99_ms': float(p99),
                'latency_max_ms': float(values.max()), 'frames_answered': int(len(values)),
                'frames_dropped': self.dropped, 'frames': int(len(self.answered))}


def ros_messages(recording: BagRecording) -> list[Any]:
    """The bag's image messages as rclpy messages (exactly the recorded bytes, deserialised)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image
    kind = CompressedImage if recording.compressed else Image
    return [deserialize_message(frame.raw, kind) for frame in recording.frames]


def decode(message: Any) -> np.ndarray:
    """RGB pixels of an image message, converted as the node converts them."""
    from .image_conversion import compressed_to_rgb, image_to_rgb
    return compressed_to_rgb(message) if hasattr(message, 'format') else image_to_rgb(message)


# ------------------------------------------------------------------------------------- offline
def replay_offline(recording: BagRecording, checkpoint: str, variant: str | None, device: str,
                   threads: int, update_profile: str = 'default') -> ReplayResult:
    """The same frames through the node's tracker in this process (no ROS graph)."""
    import torch
    from stark_model import create_tracker, load_model
    if threads:
        torch.set_num_threads(threads)
    tracker = create_tracker(load_model(checkpoint, variant), device=device, dataset=update_profile)
    messages = ros_messages(recording)
    boxes = np.full((len(messages), 4), np.nan)
    times = np.zeros(len(messages))
    for index, message in enumerate(messages):
        image = decode(message)
        started = time.perf_counter()
        if index == 0:
            tracker.initialize(image, recording.boxes[0], TARGET_ID)
            boxes[0] = recording.boxes[0]
        else:
            boxes[index] = tracker.track(image)[TARGET_ID].box
        times[index] = time.perf_counter() - started
    return ReplayResult(boxes, np.ones(len(messages), bool), np.full(len(messages), np.nan), times)


# ------------------------------------------------------------------------------------- through the node
class _Stamper:
    """Strictly increasing wall-clock stamps, one per publication."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last = max(time.time_ns(), self.last + 1)
        return self.last


def _box_for(client: Any, stamp_ns: int) -> tuple[float, float, float, float] | None:
    from .messages import box_of
    detections = client.detection_for(stamp_ns)
    if detections is None:
        return None
    return next((box_of(d) for d in detections.detections if d.id == TARGET_ID), None)


def replay_through_node(recording: BagRecording, client: Any, node: Any, mode: str, rate: float,
                        timeout: float, out: Callable[[str], None]) -> ReplayResult:
    """Publish the bag's frames to the node behind `client`; see the module docstring."""
    from .frame_buffer import set_stamp
    messages = ros_messages(recording)
    count = len(messages)
    stamps = np.zeros(count, np.int64)
    stamper = _Stamper()

    def publish(index: int) -> None:
        stamps[index] = stamper()
        set_stamp(messages[index].header.stamp, int(stamps[index]))
        client.publish_message(messages[index])

    def answered(index: int) -> bool:
        return client.detection_for(int(stamps[index])) is not None

    publish(0)
    client.wait_until(lambda: answered(0), timeout, 'the answer to the first frame', node)
    response = client.init_target(recording.boxes[0], int(stamps[0]), target_id=TARGET_ID, label='replay')
    if not response.success:
        raise ReplayError(f'the node refused the first box: {response.message}')
    recorded = np.array([f.recorded_ns for f in recording.frames], np.float64)
    started = time.monotonic()
    for index in range(1, count):
        if mode == 'rate':
            delay = started + (recorded[index] - recorded[1]) / 1e9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        publish(index)
        if mode == 'lockstep':
            client.wait_until(lambda: answered(index), timeout, f'the answer to frame {index}', node)
        if index % 100 == 0:
            out(f'  published {index + 1}/{count} frames')
    if mode == 'rate':  # the last answers may still be on their way
        _wait_for_trailing_answers(client, stamps, timeout)
    return _collect(client, recording, stamps)


def _wait_for_trailing_answers(client: Any, stamps: np.ndarray, timeout: float, quiet_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(client.detection_for(int(s)) is not None for s in stamps)
        if count == len(stamps):
            return
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.05)


def _collect(client: Any, recording: BagRecording, stamps: np.ndarray) -> ReplayResult:
    count = len(stamps)
    boxes = np.full((count, 4), np.nan)
    boxes[0] = recording.boxes[0]
    answered = np.zeros(count, bool)
    latency = np.full(count, np.nan)
    answered[0] = True
    for index in range(1, count):
        box = _box_for(client, int(stamps[index]))
        published, received = client.round_trip(int(stamps[index]))
        answered[index] = box is not None
        boxes[index] = box if box is not None else boxes[index - 1]  # what a consumer still holds
        if box is not None and published is not None and received is not None:
            latency[index] = (received - published) * 1000
    return ReplayResult(boxes, answered, latency)


def run_node_replay(recording: BagRecording, args: argparse.Namespace, out: Callable[[str], None]) -> ReplayResult:
    """Start a node (or use the running one in --namespace) and replay through it."""
    from .driver import NodeClient, NodeProcess, large_frame_transport
    with large_frame_transport() as transport:
        out(f'transport: {transport}')
        node = None
        if args.namespace is None:
            parameters = {'model.checkpoint': str(Path(args.checkpoint).resolve()), 'model.device': args.device,
                          'model.cpu_threads': args.threads,
                          'input.transport': 'compressed' if recording.compressed else 'raw',
                          # Lock-step must not lose a frame: reliable end to end.
                          'input.qos': 'reliable' if args.mode == 'lockstep' else 'sensor_data'}
            if args.variant:
                parameters['model.variant'] = args.variant
            node = NodeProcess(parameters)
        try:
            client = NodeClient(args.namespace or node.namespace, compressed=recording.compressed,
                                camera_qos='reliable', camera_topic=args.camera_topic)
            try:
                client.wait_for_node(timeout=args.timeout * 4, node=node)
                client.wait_for_model(timeout=args.timeout * 4, node=node)
                return replay_through_node(recording, client, node, args.mode, args.rate, args.timeout, out)
            finally:
                client.close()
        finally:
            if node is not None:
                node.stop()


# ------------------------------------------------------------------------------------- reports
def write_replay_report(recording: BagRecording, result: ReplayResult, name: str, folder: Path,
                        details: dict[str, Any]) -> dict[str, Any]:
    """The box file (ope layout), latency.json and, where there is ground truth, report.md and plots."""
    from stark_training.evaluation.runner import write_reports
    sequence = recording.path.name
    formats.write_result(folder, 'ope', sequence, result.boxes,
                         result.frame_times if len(result.frame_times) else np.zeros(len(result.boxes)))
    figures = {**details, **result.latency_summary()}
    formats.write_atomically(folder / 'latency.json', json.dumps(figures, indent=1) + '\n')
    has_truth = bool(np.isfinite(recording.boxes[1:]).all(axis=1).any())
    if has_truth:
        scored = evaluate_sequence(result.boxes, recording.boxes, 'ope', name=sequence,
                                   times=result.frame_times if len(result.frame_times) else None)
        notes = _latency_section(figures)
        summary = write_reports(f'{name} replaying {sequence} ({details["mode"]})', {name: [scored]}, folder, notes)
        figures.update({k: v for k, v in summary[name].as_dict().items() if not isinstance(v, list)})
    return figures


def _latency_section(figures: dict[str, Any]) -> str:
    if 'latency_p50_ms' not in figures:
        return '## Through the node\n\nOffline run: no node, no latency.\n'
    return ('## Through the node\n\n'
            f'Mode {figures["mode"]}; {figures["frames_answered"]} of {figures["frames"] - 1} tracked frames '
            f'answered, {figures["frames_dropped"]} dropped. End-to-end latency (image stamp to detection '
            f'receipt): p50 {figures["latency_p50_ms"]:.1f} ms, p95 {figures["latency_p95_ms"]:.1f} ms, '
            f'p99 {figures["latency_p99_ms"]:.1f} ms, max {figures["latency_max_ms"]:.1f} ms.\n')


def replay_summary(figures: dict[str, Any]) -> str:
    """stark-eval's summary line (AUC etc. in percent), then latency and drops where a node ran."""
    from stark_training.evaluation.report import summary_line
    parts = [summary_line(figures)] if 'auc' in figures else []
    latency = [f'{k.split("_")[1]} {figures[k]:.1f}' for k in ('latency_p50_ms', 'latency_p95_ms', 'latency_p99_ms')
               if k in figures]
    if latency:
        parts.append('latency ms ' + ' '.join(latency))
    if 'frames_dropped' in figures:
        parts.append(f'dropped {figures["frames_dropped"]}')
    return '  |  '.join(parts)


# ------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='stark-replay', description=__doc__.splitlines()[0],
                                     epilog='\n'.join(__doc__.splitlines()[2:7]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', type=Path, help='rosbag2 folder (sqlite3 or mcap)')
    parser.add_argument('--image-topic', help='image topic (default: the only Image/CompressedImage topic)')
    parser.add_argument('--groundtruth-topic', help='Detection2DArray topic with the ground truth')
    parser.add_argument('--groundtruth', type=Path, help='groundtruth.txt: one x,y,w,h line per image message')
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument('--checkpoint', help='start a node with this checkpoint')
    who.add_argument('--namespace', help='use the node already running in this namespace')
    parser.add_argument('--offline', action='store_true', help='track the same frames in-process, no node')
    parser.add_argument('--camera-topic', help='topic the running node subscribes to (default: <ns>/image)')
    parser.add_argument('--variant', help='model variant, if the checkpoint does not say')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or auto')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads of the tracker (0: default)')
    parser.add_argument('--mode', choices=('lockstep', 'rate'), default='lockstep')
    parser.add_argument('--rate', type=float, default=1.0, help='multiple of the recorded rate (rate mode)')
    parser.add_argument('--timeout', type=float, default=30.0, help='seconds to wait for one answer')
    parser.add_argument('--output', type=Path, default=Path('replay'), help='reports go to OUTPUT/NAME/')
    parser.add_argument('--name', help='name in reports (default: checkpoint name, or "node")')
    args = parser.parse_args(argv)
    if args.offline and not args.checkpoint:
        parser.error('--offline needs --checkpoint')
    if args.rate <= 0:
        parser.error('--rate must be positive')
    return args


def main(argv: list[str] | None = None) -> int:
    """Console entry point; 0 on success, 2 on bad input, 1 when the node misbehaved."""
    args = parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    from stark_model import CheckpointError
    try:
        recording = read_bag(args.bag, args.image_topic, args.groundtruth_topic, args.groundtruth)
        if not np.all(np.isfinite(recording.boxes[0])):
            raise BagError(f'{args.bag}: no ground-truth box on the first frame ({recording.groundtruth_source}); '
                           'the target is started from it')
        out(f'{args.bag}: {len(recording.frames)} frames on {recording.image_topic}, '
            f'ground truth from {recording.groundtruth_source}')
        name = args.name or (Path(args.checkpoint).name.split('.')[0] if args.checkpoint else 'node')
        if args.offline:
            result = replay_offline(recording, args.checkpoint, args.variant, args.device, args.threads)
            mode = 'offline'
        else:
            result = run_node_replay(recording, args, out)
            mode = args.mode if args.mode == 'lockstep' else f'rate x{args.rate:g}'
        folder = args.output / name
        figures = write_replay_report(recording, result, name, folder, {'mode': mode, 'bag': str(args.bag)})
    except (BagError, CheckpointError, FileNotFoundError) as error:
        print(f'stark-replay: error: {error}', file=sys.stderr)
        return 2
    except (ReplayError, RuntimeError, TimeoutError) as error:
        print(f'stark-replay: {type(error).__name__}: {error}', file=sys.stderr)
        return 1
    out(replay_summary(figures))
    out(f'results: {folder}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
