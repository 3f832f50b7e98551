"""Runs the installed tracker_node as a separate process and talks to it over real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from stark_ros.image_conversion import rgb_to_image_msg
from stark_ros.msg import TrackerStatus
from stark_ros.srv import CancelTarget, InitTarget

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / 'config' / 'tracker.yaml'


def installed_executable() -> Path:
    """tracker_node from the colcon install space on the environment's AMENT_PREFIX_PATH."""
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'lib' / 'stark_ros' / 'tracker_node'
        if candidate.is_file():
            return candidate
    raise FileNotFoundError('tracker_node is not installed: run `make setup` and source install/setup.bash')


class NodeProcess:
    """The tracker node in its own process, in its own namespace."""

    def __init__(self, parameters: dict[str, Any], params_file: Path = PARAMS_FILE) -> None:
        self.namespace = f'/test_{uuid.uuid4().hex[:8]}'
        args = [str(installed_executable()), '--ros-args', '--params-file', str(params_file),
                '-r', f'__ns:={self.namespace}']
        for name, value in parameters.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ['-p', f'{name}:={text}']
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def log(self) -> str:
        return ''.join(self.output)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGINT, as Ctrl-C or ros2 launch would; returns the exit code."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


class Peer:
    """The test's side: publishes camera frames, calls the services, records every output."""

    def __init__(self, namespace: str, compressed: bool = False) -> None:
        self.namespace = namespace
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(f'peer_{uuid.uuid4().hex[:8]}', namespace=namespace, context=self.context)
        if compressed:
            self.camera = self.node.create_publisher(CompressedImage, 'image/compressed', qos_profile_sensor_data)
        else:
            self.camera = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.detections: list[Detection2DArray] = []
        self.statuses: list[TrackerStatus] = []
        self.diagnostics: list[DiagnosticArray] = []
        self._lock = threading.RLock()  # conditions given to wait_until may read under it too
        self.node.create_subscription(Detection2DArray, 'stark/detections', self._keep(self.detections), 100)
        self.node.create_subscription(TrackerStatus, 'stark/status', self._keep(self.statuses), 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._keep(self.diagnostics), 100)
        self.init_client = self.node.create_client(InitTarget, 'stark/init_target')
        self.cancel_client = self.node.create_client(CancelTarget, 'stark/cancel_target')
        self.parameter_client = self.node.create_client(SetParameters, 'stark_tracker/set_parameters')
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinning = True
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _keep(self, store: list) -> Callable:
        def append(message) -> None:
            with self._lock:
                store.append(message)
        return append

    def _spin(self) -> None:
        while self._spinning and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._spinning = False
        self._spinner.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def wait_for_node(self, timeout: float = 60.0) -> None:
        """Until the node's services are up and it receives our camera topic."""
        assert self.init_client.wait_for_service(timeout_sec=timeout), 'init_target never appeared'
        deadline = time.monotonic() + timeout
        while self.camera.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.camera.get_subscription_count() > 0, 'the node never subscribed to the camera'

    def publish(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera') -> Any:
        message = rgb_to_image_msg(rgb)
        message.header.frame_id = frame_id
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.camera.publish(message)
        return message.header

    def publish_raw(self, message) -> None:
        self.camera.publish(message)

    def call(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f'{client.srv_name} did not answer within {timeout} s'
        return future.result()

    def init_target(self, box, stamp_ns: int = 0, target_id: str = '', label: str = '') -> InitTarget.Response:
        request = InitTarget.Request(x=float(box[0]), y=float(box[1]), width=float(box[2]),
                                     height=float(box[3]), target_id=target_id, label=label)
        request.stamp.sec, request.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        return self.call(self.init_client, request)

    def cancel(self, target_id: str = '', cancel_all: bool = False) -> CancelTarget.Response:
        return self.call(self.cancel_client, CancelTarget.Request(target_id=target_id, cancel_all=cancel_all))

    def set_parameter(self, name: str, value: Any):
        assert self.parameter_client.wait_for_service(timeout_sec=10)
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(self.parameter_client, request).results[0]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0, what: str = 'condition') -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return
            time.sleep(0.02)
        raise AssertionError(f'timed out after {timeout} s waiting for {what}')

    def detection_for(self, stamp_ns: int) -> Detection2DArray | None:
        with self._lock:
            for message in self.detections:
                if message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec == stamp_ns:
                    return message
        return None

    def latest_diagnostic_values(self) -> dict[str, str]:
        with self._lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name == f'{self.namespace}/stark_tracker: tracker':
                        return {'level': status.level, 'message': status.message,
                                **{kv.key: kv.value for kv in status.values}}
        return {}

