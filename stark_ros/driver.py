"""Drive a stark_tracker from Python: start the installed node as a process, feed it camera
frames, call its services and record what it publishes. The demo, the node benchmark, the rosbag
replay tool and the tests all use it, so they exercise the node exactly as users run it.
"""
from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from stark_ros.msg import TrackerStatus
from stark_ros.srv import CancelTarget, InitTarget

from .frame_buffer import set_stamp, stamp_to_ns
from .image_conversion import rgb_to_image_msg

NODE_NAME = 'stark_tracker'
QOS_DEPTH = 5  # the node's input.qos_depth default
STOP_TIMEOUT_S = 15.0
MAX_RECORDS = 100_000  # frames remembered per record (about an hour at 30 Hz)


class NodeError(RuntimeError):
    """The node did not do what was waited for (it exited, or timed out); carries its log tail."""


def installed_file(*parts: str) -> Path:
    """A file of the installed stark_ros package (found through the ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        return Path(get_package_prefix('stark_ros')).joinpath(*parts)
    except PackageNotFoundError:
        raise FileNotFoundError('stark_ros is not installed: run `make setup` and source '
                                'install/setup.bash (or tools/workspace_env.sh)') from None


def untrained_checkpoint(variant: str, directory: Path) -> Path:
    """Save an untrained `variant`, so the node loads it as it loads real checkpoints (for speed
    figures and plumbing; its boxes mean nothing)."""
    from stark_model import load_model, save_checkpoint
    model = load_model(variant=variant, allow_untrained=True)
    return save_checkpoint(directory / f'untrained_{variant}.pth.tar', model.network, model.variant)


@contextlib.contextmanager
def large_frame_transport(enabled: bool = True) -> Iterator[str]:
    """Use config/fastdds_large_frames.xml in this process and the nodes it starts, unless disabled,
    another RMW is in use or a profile is already set; yields a description of what is in effect."""
    rmw = rclpy.get_rmw_implementation_identifier()
    if not enabled:
        yield f'{rmw} (its default transports)'
        return
    if not rmw.startswith('rmw_fastrtps'):
        yield f'{rmw} (default transports)'
        return
    for variable in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        if os.environ.get(variable):
            yield f'{rmw}, profile {os.environ[variable]} (from {variable})'
            return
    profile = installed_file('share', 'stark_ros', 'config', 'fastdds_large_frames.xml')
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    try:
        yield f'{rmw}, shared memory with 64 MiB segments ({profile.name})'
    finally:
        os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)


def _parameter_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class NodeProcess:
    """The installed tracker_node as a child process in its own namespace; always stopped on exit
    (SIGINT, the node's clean shutdown, then SIGKILL)."""

    def __init__(self, parameters: Mapping[str, Any] | None = None, namespace: str | None = None,
                 params_file: Path | None = None, log_path: Path | None = None,
                 extra_ros_args: tuple[str, ...] = (), environment: Mapping[str, str] | None = None,
                 executable: str = 'tracker_node') -> None:
        self.namespace = namespace or f'/stark_{uuid.uuid4().hex[:8]}'
        params_file = params_file or installed_file('share', 'stark_ros', 'config', 'tracker.yaml')
        command = [sys.executable, str(installed_file('lib', 'stark_ros', executable)), '--ros-args',
                   '--params-file', str(params_file), '-r', f'__ns:={self.namespace}', *extra_ros_args]
        for name, value in (parameters or {}).items():
            command += ['-p', f'{name}:={_parameter_text(value)}']
        self._log_path = log_path
        self._lines: list[str] = []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, 'PYTHONUNBUFFERED': '1', **(environment or {})},
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._read, name='node_log', daemon=True)
        self._reader.start()
        atexit.register(self.stop)  # never leave a node behind when the caller exits early

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self) -> None:
        log = open(self._log_path, 'w') if self._log_path else None
        try:
            for line in self.process.stdout:
                self._lines.append(line)
                if log:
                    log.write(line)
                    log.flush()
        finally:
            if log:
                log.close()

    def log(self) -> str:
        """Everything the node printed so far."""
        return ''.join(self._lines)

    def log_tail(self, lines: int = 25) -> str:
        return ''.join(self._lines[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """Resident memory now (VmRSS), MiB; NaN once the process is gone."""
        return self._status_mb('VmRSS')

    def peak_rss_mb(self) -> float:
        """Highest resident memory so far (VmHWM), MiB."""
        return self._status_mb('VmHWM')

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far."""
        try:
            fields = Path(f'/proc/{self.process.pid}/stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def _status_mb(self, key: str) -> float:
        try:
            lines = Path(f'/proc/{self.process.pid}/status').read_text().splitlines()
        except OSError:
            return math.nan
        return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(f'{key}:')), math.nan)

    def stop(self) -> int:
        """Stop the node; returns its exit status (0 after a clean shutdown)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout=5)
        atexit.unregister(self.stop)
        return self.process.returncode


def _remember(record: dict, key: Any, value: Any) -> None:
    """Store, dropping the oldest entries beyond MAX_RECORDS (dicts keep insertion order)."""
    record[key] = value
    while len(record) > MAX_RECORDS:
        del record[next(iter(record))]


class NodeClient:
    """The node's counterpart: a camera publisher, service clients, and a record of every output,
    spun in its own thread and ROS context. Per header stamp it keeps the latest detections, when
    the frame was last published and when detections for it last came back."""

    def __init__(self, namespace: str, compressed: bool = False, camera_qos: str = 'sensor_data',
                 diagnostics_topic: str = '/diagnostics', camera_topic: str | None = None) -> None:
        self.namespace = namespace
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(f'stark_client_{uuid.uuid4().hex[:8]}', namespace=namespace, context=self.context)
        reliability = ReliabilityPolicy.BEST_EFFORT if camera_qos == 'sensor_data' else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(reliability=reliability, depth=QOS_DEPTH)
        camera_topic = camera_topic or ('image/compressed' if compressed else 'image')
        self.camera = self.node.create_publisher(CompressedImage if compressed else Image, camera_topic, qos)
        self._lock = threading.RLock()  # conditions given to wait_until may read under it too
        self.detections: dict[int, Detection2DArray] = {}
        self.published_at: dict[int, float] = {}
        self.answered_at: dict[int, float] = {}
        self.statuses: list[TrackerStatus] = []
        self.diagnostics: list[dict[str, Any]] = []
        self.node.create_subscription(Detection2DArray, 'stark/detections', self._on_detections, 100)
        self.node.create_subscription(TrackerStatus, 'stark/status', self._on_status, 100)
        self.node.create_subscription(DiagnosticArray, diagnostics_topic, self._on_diagnostics, 100)
        self.init_client = self.node.create_client(InitTarget, 'stark/init_target')
        self.cancel_client = self.node.create_client(CancelTarget, 'stark/cancel_target')
        self.parameter_client = self.node.create_client(SetParameters, f'{NODE_NAME}/set_parameters')
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name='stark_client_spin', daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context went down under us while closing
                if self.context.ok():
                    raise

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5)

    # ----------------------------------------------------------------------------- records
    def _on_detections(self, message: Detection2DArray) -> None:
        stamp = stamp_to_ns(message.header.stamp)
        with self._lock:
            _remember(self.detections, stamp, message)
            _remember(self.answered_at, stamp, time.monotonic())  # the latest answer, as for detections

    def _on_status(self, message: TrackerStatus) -> None:
        with self._lock:
            self.statuses.append(message)
            del self.statuses[:-MAX_RECORDS]

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        wanted = f'{self.namespace}/{NODE_NAME}: tracker'
        for status in message.status:
            if status.name == wanted:
                with self._lock:
                    self.diagnostics.append({'level': status.level, 'message': status.message,
                                             **{kv.key: kv.value for kv in status.values}})
                    del self.diagnostics[:-MAX_RECORDS]

    def detection_for(self, stamp_ns: int) -> Detection2DArray | None:
        with self._lock:
            return self.detections.get(stamp_ns)

    def round_trip(self, stamp_ns: int) -> tuple[float | None, float | None]:
        """When the frame with this stamp was published and when its detections came back
        (monotonic seconds; None where unknown)."""
        with self._lock:
            return self.published_at.get(stamp_ns), self.answered_at.get(stamp_ns)

    def latest_status(self) -> TrackerStatus | None:
        with self._lock:
            return self.statuses[-1] if self.statuses else None

    def latest_diagnostics(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def wait_until(self, condition: Callable[[], Any], timeout: float = 30.0, what: str = 'a condition',
                   node: NodeProcess | None = None) -> None:
        """Poll until `condition()` holds; NodeError naming `what` (and the node's log) if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return
            if node is not None and not node.alive():
                raise NodeError(f'the node exited while waiting for {what}:\n{node.log_tail()}')
            time.sleep(0.02)
        tail = f'\nnode log:\n{node.log_tail()}' if node is not None else ''
        raise NodeError(f'timed out after {timeout:g} s waiting for {what}{tail}')

    def wait_for_node(self, timeout: float = 60.0, node: NodeProcess | None = None) -> None:
        """Until the node offers its services and subscribes to our camera topic."""
        self.wait_until(lambda: self.init_client.service_is_ready()
                        and self.camera.get_subscription_count() > 0, timeout, 'the node to come up', node)

    def wait_for_model(self, timeout: float = 120.0, node: NodeProcess | None = None) -> None:
        """Until /diagnostics says the node's model is loaded and swapped in (model_state ready)."""
        self.wait_until(lambda: self.latest_diagnostics().get('model_state') == 'ready', timeout,
                        'the model to be ready', node)

    # ----------------------------------------------------------------------------- input
    def publish(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera', encoding: str = 'rgb8'):
        """Publish an RGB frame with this stamp; returns its header."""
        message = rgb_to_image_msg(rgb, encoding=encoding)
        message.header.frame_id = frame_id
        set_stamp(message.header.stamp, stamp_ns)
        self.publish_message(message)
        return message.header

    def publish_message(self, message: Image | CompressedImage) -> None:
        """Publish a ready message (any encoding, even a broken one), noting when."""
        with self._lock:
            _remember(self.published_at, stamp_to_ns(message.header.stamp), time.monotonic())
        self.camera.publish(message)

    # ----------------------------------------------------------------------------- services
    def call(self, client, request, timeout: float = 30.0):
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f'{client.srv_name} did not answer within {timeout:g} s')
        return future.result()

    def init_target(self, box, stamp_ns: int = 0, target_id: str = '', label: str = '') -> InitTarget.Response:
        request = InitTarget.Request(x=float(box[0]), y=float(box[1]), width=float(box[2]),
                                     height=float(box[3]), target_id=target_id, label=label)
        set_stamp(request.stamp, stamp_ns)
        return self.call(self.init_client, request)

    def cancel(self, target_id: str = '', cancel_all: bool = False) -> CancelTarget.Response:
        return self.call(self.cancel_client, CancelTarget.Request(target_id=target_id, cancel_all=cancel_all))

    def set_parameter(self, name: str, value: Any):
        """Set one node parameter; returns rcl_interfaces/SetParametersResult."""
        if not self.parameter_client.wait_for_service(timeout_sec=10):
            raise TimeoutError(f'{self.parameter_client.srv_name} is not available')
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(self.parameter_client, request).results[0]
