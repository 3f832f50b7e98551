"""Speed of the stark_tracker node on this machine: camera frames in over DDS, detections out.

    python -m stark_ros.benchmark [--sizes 640x480 1920x1080] [--rates 30 60] [--seconds 10]
                                  [--targets 1] [--checkpoint PATH | --variant lite] [--device auto]
                                  [--cpu-threads N] [--encoding rgb8] [--qos sensor_data]
                                  [--fastdds-profile large-shm] [--json PATH]

For every frame size x rate, a fresh node (the installed executable with the installed parameters
file, started through stark_ros.driver) is fed synthetic frames at that rate for `--seconds` after
`--warmup` seconds, and then stopped. One markdown row per configuration: frames sent, end-to-end
latency (publish of a stamp to receipt of the detections with that stamp, one clock), frames that
came back without a result, the node's own per-stage medians (overhead = conversion + crop + update
+ publish, apart from the model), its torch threads and CPU use, and the growth of its resident
memory. Without --checkpoint the weights are untrained, which does not change the amount of work.
A benchmark, not a test: figures depend on the machine and its load, and this process shares the
CPU with the node.

Fast DDS (the default RMW) sends samples larger than its 512 KiB shared-memory segment as UDP
fragments, and on loopback a best-effort reader loses most of a 640x480 rgb8 stream that way. So by
default both processes use the shipped config/fastdds_large_frames.xml (`--fastdds-profile
large-shm`); `--fastdds-profile none` measures the stack as installed.
"""
from __future__ import annotations

import argparse
import array
import contextlib
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from sensor_msgs.msg import Image

from stark_model.tracker import resolve_device
from stark_ros.msg import TrackerStatus
from stark_training.synthetic import make_sequence

from .driver import NodeClient, NodeProcess, large_frame_transport, untrained_checkpoint
from .frame_buffer import set_stamp, stamp_to_ns
from .image_conversion import rgb_to_image_msg

STAGES = ('conversion', 'crop', 'model', 'update', 'publish')
OVERHEAD_STAGES = ('conversion', 'crop', 'update', 'publish')
READY_TIMEOUT_S = 120.0  # importing torch and loading a model on a small, busy CPU is slow
FIRST_RESULT_TIMEOUT_S = 30.0
DRAIN_S = 2.0  # after the last frame: results in flight come back, one more /diagnostics goes out
INIT_ATTEMPTS = 5  # an init names a buffered frame, and the buffer moves on while the request travels
# Packed YUV 4:2:2 as sensor_msgs names it; OpenCV writes both orders from RGB.
_PACKED_422 = {'yuv422_yuy2': cv2.COLOR_RGB2YUV_YUY2, 'yuyv': cv2.COLOR_RGB2YUV_YUY2,
               'yuv422': cv2.COLOR_RGB2YUV_UYVY, 'uyvy': cv2.COLOR_RGB2YUV_UYVY}
ENCODINGS = ('rgb8', 'bgr8', 'mono8', *_PACKED_422)


# ----------------------------------------------------------------------------- machine
def describe_machine(device: str) -> str:
    """CPU model, core count, torch version and the device the node is asked to use."""
    cpu = next((line.split(':', 1)[1].strip() for line in _read_lines('/proc/cpuinfo')
                if line.startswith('model name')), platform.processor() or platform.machine())
    resolved = resolve_device(device)
    where = torch.cuda.get_device_name(resolved) if resolved.type == 'cuda' else 'CPU'
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__}; device {resolved} ({where})'


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def cpu_counters(node: NodeProcess) -> dict[str, float]:
    """CPU seconds so far: the node, this process, and every process of the machine."""
    fields = next((line.split()[1:] for line in _read_lines('/proc/stat') if line.startswith('cpu ')), [])
    busy = [int(value) for value in fields[:3] + fields[5:8]]  # all but idle and iowait
    machine = sum(busy) / os.sysconf('SC_CLK_TCK') if busy else math.nan
    return {'node': node.cpu_seconds(), 'benchmark': time.process_time(), 'machine': machine}


# ----------------------------------------------------------------------------- frames
@dataclass
class Clip:
    """Pre-built image messages of a synthetic sequence and each frame's ground-truth boxes."""

    messages: list[Image]
    boxes: list[list[tuple[float, float, float, float]]]


def encode(rgb: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs Image of an RGB array in `encoding` (one of ENCODINGS)."""
    if encoding in ('rgb8', 'bgr8'):
        return rgb_to_image_msg(rgb, encoding=encoding)
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if encoding == 'mono8' else _PACKED_422[encoding])
    height, width = rgb.shape[:2]
    message = Image(height=height, width=width, encoding=encoding, step=pixels.strides[0])
    message.data = array.array('B', pixels.tobytes())  # taken as is by rclpy, as in rgb_to_image_msg
    return message


def render_clip(width: int, height: int, targets: int, frames: int, encoding: str) -> Clip:
    """`frames` synthetic frames at width x height (rendered at 640x480, then resized)."""
    sequence = make_sequence(num_frames=frames, num_targets=targets, seed=7)
    scale_x, scale_y = width / 640, height / 480
    messages, boxes = [], []
    for rgb, frame_boxes in zip(sequence.frames, sequence.boxes):
        if (width, height) != (640, 480):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        messages.append(encode(rgb, encoding))
        messages[-1].header.frame_id = 'camera'
        boxes.append([(x * scale_x, y * scale_y, w * scale_x, h * scale_y) for x, y, w, h in frame_boxes])
    return Clip(messages, boxes)


class Pump:
    """Publishes the clip's frames in a loop at `rate` Hz from its own thread, like a camera (a
    publisher that falls behind skips ahead instead of bursting); each gets a wall-time stamp."""

    def __init__(self, client: NodeClient, clip: Clip, rate: float) -> None:
        self._client, self._clip, self._period = client, clip, 1.0 / rate
        self.clip_index: dict[int, int] = {}  # stamp (ns) of every published frame -> its clip frame
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='bench_camera', daemon=True)

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop publishing and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        index, due = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                self._publish(index % len(self._clip.messages))
                index += 1
                due += self._period
                now = time.monotonic()
                if now > due + self._period:
                    due = now
                self._stop.wait(max(0.0, due - now))
        except BaseException as error:  # reported by the run, not lost in a thread
            self.error = error

    def _publish(self, index: int) -> None:
        message, stamp_ns = self._clip.messages[index], time.time_ns()
        set_stamp(message.header.stamp, stamp_ns)
        self.clip_index[stamp_ns] = index
        self._client.publish_message(message)


# ----------------------------------------------------------------------------- one configuration
@dataclass
class Settings:
    """What every configuration shares."""

    checkpoint: Path
    params: Path | None  # None: the installed config/tracker.yaml
    device: str
    targets: int
    frames: int
    encoding: str
    qos: str
    cpu_threads: int | None  # model.cpu_threads of the node; None: the node's default
    warmup: float
    seconds: float


@dataclass
class Result:
    """Raw figures of one configuration (times in ms, memory in MiB; NaN where unknown)."""

    width: int
    height: int
    rate_hz: float
    seconds: float
    frames_sent: int
    sent_hz: float
    detections: int
    processed_fps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    dropped_e2e: float
    node_frames_received: int
    node_frames_dropped: int
    node_drop_rate: float
    not_received: float
    cpu_threads: int | None = None  # torch threads of the node, as its /diagnostics report them
    stages_p50_ms: dict[str, float] = field(default_factory=dict)
    # The node's own arrival-to-publish percentiles (its /diagnostics, last 500 frames).
    node_latency_ms: dict[str, float] = field(default_factory=dict)
    overhead_ms: float = math.nan
    rss_start_mb: float = math.nan
    rss_end_mb: float = math.nan
    rss_peak_mb: float = math.nan
    rss_growth_mb_per_min: float = math.nan
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    # CPU time in % of one core: the node, this process (camera and listener), everything else.
    node_cpu_percent: float = math.nan
    benchmark_cpu_percent: float = math.nan
    other_cpu_percent: float = math.nan


@dataclass
class Window:
    """What was sampled over the measured seconds: node status at both ends, the node's resident
    memory every second, and CPU seconds of the node, of this process and of the whole machine."""

    start: float
    end: float = math.nan
    statuses: list[TrackerStatus | None] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    peak_rss_mb: float = math.nan
    cpu: dict[str, float] = field(default_factory=dict)


def node_parameters(settings: Settings) -> dict[str, Any]:
    """The -p overrides of the node, on top of its parameters file."""
    parameters = {'model.checkpoint': settings.checkpoint, 'model.device': settings.device,
                  'input.qos': settings.qos}
    if settings.cpu_threads is not None:
        parameters['model.cpu_threads'] = settings.cpu_threads
    return parameters


def run_configuration(width: int, height: int, rate: float, settings: Settings) -> Result:
    """Start a node, feed it `rate` Hz of width x height frames, measure, stop it."""
    clip = render_clip(width, height, settings.targets, settings.frames, settings.encoding)
    with NodeProcess(node_parameters(settings), params_file=settings.params) as node:
        client = NodeClient(node.namespace, camera_qos=settings.qos)
        try:
            client.wait_for_node(READY_TIMEOUT_S, node)
            with Pump(client, clip, rate) as pump:
                client.wait_until(lambda: client.statuses, FIRST_RESULT_TIMEOUT_S, 'the first results', node)
                init_targets(client, pump, clip, settings.targets, node)
                window = measure(client, pump, node, settings)
            return summarise(delays_in_window(client, pump, window), window, client.latest_diagnostics(),
                             (width, height, rate))
        finally:
            client.close()


def init_targets(client: NodeClient, pump: Pump, clip: Clip, count: int, node: NodeProcess) -> None:
    """Start `count` targets on their ground-truth boxes, each on the newest frame the node has
    answered (so it is in the node's frame buffer); retried since the buffer moves on meanwhile."""
    for k in range(count):
        for _ in range(INIT_ATTEMPTS):
            stamp_ns = stamp_to_ns(client.latest_status().header.stamp)
            box = clip.boxes[pump.clip_index[stamp_ns]][k]
            response = client.init_target(box, stamp_ns, target_id=f'bench-{k}', label='bench')
            if response.success:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f'the node refused target bench-{k}: {response.message}\n{node.log_tail()}')


def measure(client: NodeClient, pump: Pump, node: NodeProcess, settings: Settings) -> Window:
    """Warm up, then sample `settings.seconds` of frames; stop the camera and let results drain."""
    time.sleep(settings.warmup)
    window, cpu_start = Window(time.monotonic(), statuses=[client.latest_status()]), cpu_counters(node)
    window.rss.append((0.0, node.rss_mb()))
    while (now := time.monotonic()) < window.start + settings.seconds:
        time.sleep(min(1.0, window.start + settings.seconds - now))
        window.rss.append((time.monotonic() - window.start, node.rss_mb()))
    window.end, window.peak_rss_mb = time.monotonic(), node.peak_rss_mb()
    window.cpu = {key: value - cpu_start[key] for key, value in cpu_counters(node).items()}
    pump.stop()
    if pump.error is not None:
        raise RuntimeError(f'publishing frames failed: {pump.error!r}') from pump.error
    time.sleep(DRAIN_S)
    if not node.alive():
        raise RuntimeError(f'the node exited ({node.process.returncode}) during the run:\n{node.log_tail()}')
    window.statuses.append(client.latest_status())
    return window


def delays_in_window(client: NodeClient, pump: Pump, window: Window) -> list[float | None]:
    """For each frame published inside the window: seconds until its detections came back, or None."""
    delays = []
    for stamp_ns in list(pump.clip_index):  # the pump has stopped; the client still records
        published, answered = client.round_trip(stamp_ns)
        if published is not None and window.start <= published < window.end:
            delays.append(None if answered is None else answered - published)
    return delays


def summarise(delays: list[float | None], window: Window, diagnostics: dict[str, Any],
              config: tuple[int, int, float]) -> Result:
    """The figures of one configuration from what the client recorded and the node reported."""
    latencies = [delay * 1000 for delay in delays if delay is not None]
    sent, answered = len(delays), len(latencies)
    received = status_change(window.statuses, 'frames_received')
    dropped = status_change(window.statuses, 'frames_dropped')
    stages = {stage: _number(diagnostics, f'{stage}_ms_p50') for stage in STAGES}
    p50, p95, p99 = np.percentile(latencies, (50, 95, 99)) if latencies else (math.nan,) * 3
    duration, cpu = window.end - window.start, window.cpu
    return Result(
        width=config[0], height=config[1], rate_hz=config[2], seconds=duration, frames_sent=sent,
        sent_hz=sent / duration, detections=answered, processed_fps=answered / duration,
        latency_p50_ms=float(p50), latency_p95_ms=float(p95), latency_p99_ms=float(p99),
        dropped_e2e=1 - answered / sent if sent else math.nan,
        node_frames_received=received, node_frames_dropped=dropped,
        node_drop_rate=dropped / received if received else math.nan,
        not_received=max(0.0, 1 - received / sent) if sent else math.nan,
        cpu_threads=int(diagnostics['cpu_threads']) if 'cpu_threads' in diagnostics else None,
        stages_p50_ms=stages, overhead_ms=sum(stages[s] for s in OVERHEAD_STAGES),
        node_latency_ms={p: _number(diagnostics, f'latency_{p}_ms') for p in ('p50', 'p95', 'p99')},
        rss_start_mb=window.rss[0][1], rss_end_mb=window.rss[-1][1], rss_peak_mb=window.peak_rss_mb,
        rss_growth_mb_per_min=growth_per_minute(window.rss), rss_samples=window.rss,
        node_cpu_percent=100 * cpu['node'] / duration, benchmark_cpu_percent=100 * cpu['benchmark'] / duration,
        other_cpu_percent=100 * (cpu['machine'] - cpu['node'] - cpu['benchmark']) / duration)


def status_change(statuses: list[TrackerStatus | None], counter: str) -> int:
    """How much a TrackerStatus counter grew from the first to the last status (0 without both)."""
    first, last = statuses[0], statuses[-1]
    return getattr(last, counter) - getattr(first, counter) if first and last else 0


def _number(diagnostics: dict[str, Any], key: str) -> float:
    return float(diagnostics.get(key, 'nan'))


def growth_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute: steadier than two ends."""
    if len(samples) < 2:
        return math.nan
    seconds, megabytes = np.array(samples).T
    return float(np.polyfit(seconds, megabytes, 1)[0] * 60)


# ----------------------------------------------------------------------------- output
COLUMNS = ('frames', 'rate Hz', 'sent Hz', 'processed FPS', 'latency p50 ms', 'p95 ms', 'p99 ms',
           'no result %', 'node dropped %', 'conversion ms', 'crop ms', 'update ms', 'publish ms',
           'overhead ms', 'model ms', 'threads', 'node CPU %', 'other CPU %', 'RSS MB', 'RSS growth MB',
           'RSS MB/min')


def table_row(result: Result) -> str:
    """One markdown row of COLUMNS."""
    stage = result.stages_p50_ms
    cells = (f'{result.width}x{result.height}', f'{result.rate_hz:g}', f'{result.sent_hz:.1f}',
             f'{result.processed_fps:.1f}', f'{result.latency_p50_ms:.1f}', f'{result.latency_p95_ms:.1f}',
             f'{result.latency_p99_ms:.1f}', f'{100 * result.dropped_e2e:.1f}',
             f'{100 * result.node_drop_rate:.1f}',
             *(f'{stage[s]:.2f}' for s in OVERHEAD_STAGES), f'{result.overhead_ms:.2f}', f'{stage["model"]:.1f}',
             '?' if result.cpu_threads is None else str(result.cpu_threads),
             f'{result.node_cpu_percent:.0f}', f'{result.other_cpu_percent:.0f}', f'{result.rss_end_mb:.0f}',
             f'{result.rss_end_mb - result.rss_start_mb:+.1f}', f'{result.rss_growth_mb_per_min:+.1f}')
    return '| ' + ' | '.join(cells) + ' |'


def print_header(header: dict[str, str], settings: Settings) -> None:
    """What ran where, how to read the columns, and the table head."""
    threads = ('the node\'s default model.cpu_threads' if settings.cpu_threads is None
               else f'model.cpu_threads {settings.cpu_threads}')
    print(f'# stark_tracker node on {header["machine"]}')
    print(f'# {header["model"]}, {threads}; {settings.targets} target(s); {settings.encoding} frames, '
          f'{settings.qos} QoS, {header["dds"]}; {settings.seconds:g} s per configuration after '
          f'{settings.warmup:g} s warm-up; fresh node each')
    print('# stage columns: the node\'s medians per processed frame (its /diagnostics, warm-up included); '
          'overhead = conversion + crop + update + publish; "no result" = frames sent without detections '
          'back; "node dropped" = frames the node replaced before inference; threads = the node\'s torch '
          'threads; CPU in % of one core, "other" = every process but the node and this one; '
          'RSS MB/min = slope of 1 s samples')
    print('| ' + ' | '.join(COLUMNS) + ' |')
    print('|' + '---|' * len(COLUMNS), flush=True)


def write_json(path: Path, header: dict[str, str], settings: Settings, results: list[Result]) -> None:
    """The raw figures of every configuration, with what ran where."""
    content = {**header, 'settings': asdict(settings), 'results': [asdict(result) for result in results]}
    path.write_text(json.dumps(content, indent=2, default=str))


# ----------------------------------------------------------------------------- command line
def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' to (width, height); sizes are even so that packed YUV 4:2:2 fits."""
    try:
        width, height = (int(part) for part in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r} is not WIDTHxHEIGHT, e.g. 640x480') from None
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f'size {text!r}: width and height must be even and at least 64')
    return width, height


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(prog='python -m stark_ros.benchmark', description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=[(640, 480), (1920, 1080)],
                        metavar='WxH')
    parser.add_argument('--rates', nargs='+', type=float, default=[30.0, 60.0], metavar='HZ')
    parser.add_argument('--seconds', type=float, default=10.0, help='measured seconds per configuration')
    parser.add_argument('--warmup', type=float, default=2.0, help='seconds excluded after the targets start')
    parser.add_argument('--targets', type=int, default=1)
    parser.add_argument('--checkpoint', type=Path, help='default: an untrained --variant saved to a temp dir')
    parser.add_argument('--variant', default='lite', help='untrained variant when no --checkpoint is given')
    parser.add_argument('--device', default='auto', help='model.device of the node: auto, cpu, cuda, cuda:N')
    parser.add_argument('--cpu-threads', type=int, default=None, metavar='N',
                        help="model.cpu_threads of the node (0: PyTorch's default); default: the node's")
    parser.add_argument('--encoding', default='rgb8', choices=ENCODINGS)
    parser.add_argument('--qos', default='sensor_data', choices=('sensor_data', 'reliable'),
                        help="the node's input.qos, matched by the publisher")
    parser.add_argument('--fastdds-profile', default='large-shm', choices=('large-shm', 'none'),
                        help='large-shm: config/fastdds_large_frames.xml; none: Fast DDS as installed')
    parser.add_argument('--frames', type=int, default=30, help='distinct frames, published in a loop')
    parser.add_argument('--params-file', type=Path, default=None,
                        help='node parameters (default: the installed config/tracker.yaml)')
    parser.add_argument('--json', type=Path, help='also write the raw figures here')
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f'--checkpoint {args.checkpoint} is not a file')
    if min(args.rates) <= 0 or args.seconds <= 0 or args.warmup < 0 or args.targets < 1 or args.frames < 1 \
            or (args.cpu_threads is not None and args.cpu_threads < 0):
        parser.error('rates, --seconds, --targets and --frames must be positive, --warmup and --cpu-threads '
                     'not negative')
    return args


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (in the main thread), so the node is stopped either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f'signal {signum}')

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 when a node failed, 130 when interrupted."""
    args = parse_args(argv)
    # A private DDS domain on loopback: other runs on this machine neither see nor disturb ours.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    transport = large_frame_transport(enabled=args.fastdds_profile == 'large-shm')
    with tempfile.TemporaryDirectory(prefix='stark_node_bench_') as workdir, terminate_as_interrupt():
        try:
            with transport as dds:
                return run(args, dds, Path(workdir))
        except KeyboardInterrupt:
            print('interrupted; node stopped', file=sys.stderr)
            return 130
        # The node failed or stalled (NodeError is a RuntimeError), or a file or device was wrong.
        except (RuntimeError, TimeoutError, OSError, ValueError) as error:
            print(f'benchmark failed: {error}', file=sys.stderr)
            return 1


def run(args: argparse.Namespace, dds: str, workdir: Path) -> int:
    """Every size x rate configuration, one table row each as it completes."""
    if args.checkpoint is None:
        checkpoint = untrained_checkpoint(args.variant, workdir)
        model = f'STARK {args.variant} with untrained weights (same amount of work as trained ones)'
    else:
        checkpoint, model = args.checkpoint.resolve(), f'checkpoint {args.checkpoint}'
    settings = Settings(checkpoint, args.params_file, args.device, args.targets, args.frames, args.encoding,
                        args.qos, args.cpu_threads, args.warmup, args.seconds)
    header = {'machine': describe_machine(args.device), 'model': model, 'dds': dds}
    print_header(header, settings)
    results = []
    for width, height in args.sizes:
        for rate in args.rates:
            results.append(run_configuration(width, height, rate, settings))
            print(table_row(results[-1]), flush=True)
    if args.json:
        write_json(args.json, header, settings, results)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
