"""The stark_tracker node: camera frames in, STARK tracks out.

Threads: a single-threaded executor runs the image callback (conversion only, the newest frame
wins), the services and the timers; one worker thread runs the tracker on the newest frame and
publishes. (rclpy's multi-threaded executor spins in Python and starves the worker of the GIL.)
The tracker and the targets are guarded by one lock, so an init request waits at most one frame.
A node without a usable model stays up: it says why in every service reply and in /diagnostics,
and loads the model as soon as model.checkpoint (or another model.* parameter) is set right.
"""
from __future__ import annotations

import functools
import threading
import time
import traceback
from typing import Any, Callable

import cv2
import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from stark_model import StarkTracker, TrackerError, create_tracker, load_model
from stark_ros.msg import TrackerStatus
from stark_ros.srv import CancelTarget, InitTarget

from . import messages
from .frame_buffer import Frame, FrameBuffer, format_stamp, stamp_to_ns
from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb, rgb_to_image_msg
from .node_stats import NodeStats
from .parameters import SPECS, change_problem, declare_all
from .target_states import TargetBook, TargetState, TrackedTarget

NODE_NAME = 'stark_tracker'
WARN_THROTTLE_S = 5.0
MAX_TARGET_ID_LENGTH = 128
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def _logged_not_raised(callback: Callable) -> Callable:
    """Wrap an executor callback so an unexpected error is logged instead of stopping the node.
    Service callbacks (request, response) answer with success=False and the error."""
    @functools.wraps(callback)
    def guarded(self: 'TrackerNode', *args: Any) -> Any:
        try:
            return callback(self, *args)
        except Exception as error:
            self.get_logger().error(f'{callback.__name__} failed:\n{traceback.format_exc()}',
                                    throttle_duration_sec=WARN_THROTTLE_S)
            if len(args) == 2 and hasattr(args[1], 'success'):
                response = args[1]
                response.success, response.message = False, f'internal error: {type(error).__name__}: {error}'
                return response
            return None
    return guarded


class TrackerNode(Node):
    """ROS 2 adapter around stark_model's multi-target tracker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._config_problems: list[str] = []
        self._settings = declare_all(self, self._report_config_problem)
        self._stats = NodeStats()
        self._frames = FrameBuffer(self._settings['tracking.frame_buffer_size'])
        self._book = TargetBook()
        self._lock = threading.Lock()
        self._tracker: StarkTracker | None = None
        self._model_info: dict[str, str] = {}
        self._model_error: str | None = None
        apply_cpu_threads(self._settings['model.cpu_threads'])
        self._load_model(self._settings)

        self._detections_pub = self.create_publisher(Detection2DArray, 'stark/detections', 10)
        self._status_pub = self.create_publisher(TrackerStatus, 'stark/status', 10)
        self._debug_pub = self.create_publisher(Image, 'stark/debug_image', 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._subscribe_camera()
        self.create_service(InitTarget, 'stark/init_target', self._on_init_target)
        self.create_service(CancelTarget, 'stark/cancel_target', self._on_cancel_target)
        self.create_timer(self._settings['output.diagnostics_period'], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name='stark_inference', daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------------------- set-up
    def _report_config_problem(self, problem: str) -> None:
        self._config_problems.append(problem)
        self.get_logger().error(problem)

    def _subscribe_camera(self) -> None:
        settings = self._settings
        # sensor_data = best effort, volatile, keep last; the depth is ours.
        reliability = (ReliabilityPolicy.BEST_EFFORT if settings['input.qos'] == 'sensor_data'
                       else ReliabilityPolicy.RELIABLE)
        qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.VOLATILE, depth=settings['input.qos_depth'])
        topic = settings['input.image_topic']
        if settings['input.transport'] == 'compressed':
            message_type, convert, topic = CompressedImage, compressed_to_rgb, f'{topic}/compressed'
        else:
            message_type, convert = Image, image_to_rgb
        self._camera = self.create_subscription(message_type, topic, lambda msg: self._on_image(msg, convert), qos)
        self.get_logger().info(
            f'subscribed to {self._camera.topic_name} ({settings["input.transport"]}, {settings["input.qos"]} QoS)')

    def _load_model(self, settings: dict[str, Any]) -> str | None:
        """Build the tracker for the model.* settings; returns the problem, or None on success.
        On failure the previous tracker (if any) stays in use."""
        checkpoint = settings['model.checkpoint']
        if not checkpoint:
            problem = 'no model loaded: parameter model.checkpoint is empty'
        else:
            try:
                model = load_model(checkpoint, settings['model.variant'] or None)
                tracker = create_tracker(model, device=settings['model.device'],
                                         precision=settings['model.precision'],
                                         dataset=settings['model.update_profile'],
                                         max_targets=settings['tracking.max_targets'])
                tracker.warm_up()
            # CheckpointError and torch's errors (CUDA out of memory, say) are RuntimeErrors;
            # ConfigError and TrackerError are ValueErrors.
            except (RuntimeError, ValueError, OSError, MemoryError) as error:
                problem = f'cannot load model {checkpoint}: {error}'
            else:
                with self._lock:
                    self._tracker = tracker
                    self._book.clear()
                    self._model_error = None
                    self._model_info = {
                        'variant': model.variant.variant, 'checkpoint': str(checkpoint),
                        'device': str(tracker.device), 'precision': tracker.precision,
                        'backend': settings['model.backend'], 'cpu_threads': str(torch.get_num_threads()),
                    }
                self.get_logger().info(f'{model.describe()} on {tracker.device} ({tracker.precision})')
                return None
        if self._tracker is None:
            self._model_error = problem
        self.get_logger().error(problem)
        return problem

    # ----------------------------------------------------------------------------- camera
    @_logged_not_raised
    def _on_image(self, msg: Image | CompressedImage, convert: Callable[[Any], np.ndarray]) -> None:
        now = time.monotonic()
        try:
            rgb = convert(msg)
        except ImageConversionError as error:
            self._stats.frame_rejected()
            self.get_logger().warning(f'skipped a camera frame: {error}', throttle_duration_sec=WARN_THROTTLE_S)
            return
        converted_ms = (time.monotonic() - now) * 1000
        dropped = self._frames.push(Frame(rgb, msg.header, stamp_to_ns(msg.header.stamp), now, converted_ms))
        self._stats.frame_received(now, dropped)

    # ----------------------------------------------------------------------------- inference
    def _work(self) -> None:
        while self._running:
            frame = self._frames.take_newest(timeout=0.1)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception:  # the worker must outlive any single bad frame
                self.get_logger().error(f'frame {format_stamp(frame.stamp_ns)} failed:\n{traceback.format_exc()}',
                                        throttle_duration_sec=WARN_THROTTLE_S)

    def _process(self, frame: Frame) -> None:
        stages = {'conversion': frame.conversion_ms}
        with self._lock:
            if self._tracker is not None and len(self._book):
                results = self._tracker.track(frame.rgb)
                timing = self._tracker.last_timing
                stages.update(crop=timing.crop_ms, model=timing.network_ms, update=timing.update_ms)
                self._book.update(results, self._settings['tracking.lost_threshold'],
                                  self._settings['tracking.lost_patience'])
            targets = self._book.snapshot()
        publishing = time.monotonic()
        self._detections_pub.publish(messages.detections(frame.header, targets))
        self._stats.frame_processed(frame.arrival, time.monotonic(), stages)
        self._status_pub.publish(messages.tracker_status(frame.header, targets, self._stats.snapshot()))
        if self._settings['output.debug_image'] and self._debug_pub.get_subscription_count() > 0:
            self._debug_pub.publish(rgb_to_image_msg(draw_boxes(frame.rgb, targets), frame.header))
        self._stats.record_stage('publish', (time.monotonic() - publishing) * 1000)

    # ----------------------------------------------------------------------------- services
    @_logged_not_raised
    def _on_init_target(self, request: InitTarget.Request, response: InitTarget.Response) -> InitTarget.Response:
        def fail(message: str) -> InitTarget.Response:
            response.success, response.message, response.target_id = False, message, ''
            self.get_logger().warning(f'init_target refused: {message}')
            return response

        if self._tracker is None:
            return fail(self._model_error or 'no model loaded')
        if len(request.target_id) > MAX_TARGET_ID_LENGTH:
            return fail(f'target_id is {len(request.target_id)} characters long; at most {MAX_TARGET_ID_LENGTH}')
        try:
            frame = self._frames.find(stamp_to_ns(request.stamp))
        except LookupError as error:
            return fail(str(error))
        box = (request.x, request.y, request.width, request.height)
        with self._lock:
            target_id = request.target_id.strip() or self._book.new_id()
            limit = self._settings['tracking.max_targets']
            if target_id not in self._book and len(self._book) >= limit:
                return fail(f'already tracking {len(self._book)} targets (tracking.max_targets = {limit}); '
                            'cancel one first')
            try:
                self._tracker.initialize(frame.rgb, box, target_id)
            except TrackerError as error:
                return fail(f'cannot start target {target_id!r}: {error}')
            target = self._book.start(target_id, request.label.strip(), box)
            # Announce the new target (IDLE) before any frame can move it on.
            self._status_pub.publish(messages.tracker_status(frame.header, self._book.snapshot(),
                                                             self._stats.snapshot()))
        response.success, response.target_id = True, target_id
        response.message = (f'tracking {target_id!r} (label {target.label!r}) from box '
                            f'({box[0]:g}, {box[1]:g}, {box[2]:g}, {box[3]:g}) on the frame stamped '
                            f'{format_stamp(frame.stamp_ns)}')
        self.get_logger().info(response.message)
        return response

    @_logged_not_raised
    def _on_cancel_target(self, request: CancelTarget.Request,
                          response: CancelTarget.Response) -> CancelTarget.Response:
        target_id = request.target_id.strip()
        with self._lock:
            if request.cancel_all and target_id:
                response.success, response.message = False, 'give either target_id or cancel_all, not both'
            elif request.cancel_all:
                response.cancelled_ids = self._book.clear()
                if self._tracker is not None:
                    self._tracker.clear()
                response.success = True
                response.message = f'cancelled {len(response.cancelled_ids)} targets'
            elif not target_id:
                response.success, response.message = False, 'give a target_id, or set cancel_all'
            elif target_id not in self._book:
                live = ', '.join(t.target_id for t in self._book.targets()) or 'none'
                response.success, response.message = False, f'no target {target_id!r} (tracking: {live})'
            else:
                self._book.remove(target_id)
                if self._tracker is not None:
                    self._tracker.remove(target_id)
                response.success, response.message = True, f'cancelled {target_id!r}'
                response.cancelled_ids = [target_id]
        self.get_logger().info(f'cancel_target: {response.message}')
        return response

    # ----------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        candidate = dict(self._settings)
        for parameter in parameters:
            problem = change_problem(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            if parameter.name in SPECS:
                candidate[parameter.name] = parameter.value
        reload_keys = [k for k in SPECS if k.startswith('model.') and k != 'model.cpu_threads']
        if any(candidate[k] != self._settings[k] for k in reload_keys):
            problem = self._load_model(candidate)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        elif candidate['tracking.max_targets'] != self._settings['tracking.max_targets']:
            with self._lock:  # live targets stay; new ones wait until there is room
                if self._tracker is not None:
                    self._tracker.max_targets = candidate['tracking.max_targets']
        if candidate['tracking.frame_buffer_size'] != self._settings['tracking.frame_buffer_size']:
            self._frames.resize(candidate['tracking.frame_buffer_size'])
        if candidate['model.cpu_threads'] != self._settings['model.cpu_threads']:
            self._model_info['cpu_threads'] = str(apply_cpu_threads(candidate['model.cpu_threads']))
        self._settings = candidate
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------- diagnostics
    @_logged_not_raised
    def _publish_diagnostics(self) -> None:
        problem = self._model_error
        figures = self._stats.snapshot()
        info = dict(self._model_info) if self._model_info else {'backend': self._settings['model.backend']}
        if not problem and self._config_problems:
            info['configuration'] = '; '.join(self._config_problems)
        self._diagnostics_pub.publish(messages.diagnostics(self.get_clock().now().to_msg(),
                                                           self.get_fully_qualified_name(),
                                                           figures, info, problem, len(self._book)))

    def shutdown(self) -> None:
        self._running = False
        self._frames.close()
        self._worker.join(timeout=5.0)


def apply_cpu_threads(requested: int) -> int:
    """Set PyTorch's CPU thread count (0: PyTorch's own default, one per core); returns it."""
    torch.set_num_threads(requested or TORCH_DEFAULT_THREADS)
    return torch.get_num_threads()


STATE_COLOURS = {TargetState.IDLE: (255, 255, 0), TargetState.TRACKING: (0, 255, 0), TargetState.LOST: (255, 0, 0)}


def draw_boxes(rgb: np.ndarray, targets: list[TrackedTarget]) -> np.ndarray:
    """A copy of the frame with each target's box and id drawn in its state's colour."""
    canvas = np.ascontiguousarray(rgb).copy()
    for target in targets:
        x, y, w, h = target.box
        colour = STATE_COLOURS[target.state]
        cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), colour, 2)
        cv2.putText(canvas, target.target_id, (int(x), max(12, int(y) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    colour, 1)
    return canvas


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv)
    node = TrackerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
