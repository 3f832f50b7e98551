"""The stark_tracker node: camera frames in, STARK tracks out.

Threads: a single-threaded executor runs the image callback (conversion only, the newest frame
wins), the services, the timers and the parameter callback; one inference thread runs the tracker
on the newest frame and publishes; one loader thread builds a new tracker when model.* parameters
change at run time, swapped in when ready. (rclpy's multi-threaded executor spins in Python and
starves the inference thread of the GIL.) The tracker and the targets are guarded by one lock, so
an init request waits at most one frame.
An empty model.checkpoint means the default model shipped in stark_model (docs/MODEL_CARD.md).
A node without a usable model stays up: it says why in every service reply and in /diagnostics,
and loads the model as soon as model.checkpoint (or another model.* parameter) is set right.

Two forms share this behaviour: TrackerNode (the default; starts at once) and ManagedTrackerNode
(a lifecycle node: configure loads the model, activate subscribes, serves and publishes).
"""
from __future__ import annotations

import functools
import os
import signal
import sys
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
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from stark_model import StarkTracker, create_tracker, load_model
from stark_ros.msg import TrackerStatus
from stark_ros.srv import CancelTarget, InitTarget

from . import messages
from .frame_buffer import Frame, FrameBuffer, NoFrameYet, format_stamp, stamp_to_ns
from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb, rgb_to_image_msg
from .model_loader import ModelLoader
from .node_stats import NodeStats
from .node_usage import parse_node_args
from .parameters import RELOAD_KEYS, SPECS, change_problem, declare_all, unused_qos_overrides
from .target_states import TargetBook, TargetState, TrackedTarget

NODE_NAME = 'stark_tracker'
WARN_THROTTLE_S = 5.0
MAX_TARGET_ID_LENGTH = 128
TORCH_DEFAULT_THREADS = torch.get_num_threads()
# Errors a model load may raise: CheckpointError and torch's errors are RuntimeErrors; ConfigError
# and TrackerError are ValueErrors.
LOAD_ERRORS = (RuntimeError, ValueError, OSError, MemoryError)
EXIT_MODEL_LOAD_FAILED = 1  # tracker_node's exit status when model.exit_on_load_failure stops it


def _logged_not_raised(callback: Callable) -> Callable:
    """Wrap an executor callback so an unexpected error is logged instead of stopping the node.
    Service callbacks (request, response) answer with success=False and the error."""
    @functools.wraps(callback)
    def guarded(self: 'TrackerCore', *args: Any) -> Any:
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


def fastdds_profile_hint() -> str:
    """Where the large-frame Fast DDS profile of this package is installed."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory('stark_ros'), 'config', 'fastdds_large_frames.xml')
    except (ImportError, LookupError):
        return 'config/fastdds_large_frames.xml'


class TrackerCore:
    """The tracker node's behaviour, mixed into rclpy's Node or LifecycleNode. The subclass decides
    when the model loads (`_load_now`) and when the node runs (`_start`, `_stop`)."""

    def _init_core(self) -> None:
        self._config_problems: list[str] = []
        self._settings = declare_all(self, self._report_config_problem)
        self._stats = NodeStats(rejection_window=self._settings['output.diagnostics_window'])
        self._frames = FrameBuffer(self._settings['tracking.frame_buffer_size'])
        self._book = TargetBook()
        self._lock = threading.Lock()
        self._tracker: StarkTracker | None = None
        self._model_info: dict[str, str] = {}
        self._model_error: str | None = 'no model loaded yet'  # why there is no usable model
        self._reload_problem: str | None = None  # why the latest model change failed (old model kept)
        self._configured = False  # a model load was attempted (start-up, or lifecycle configure)
        self._cpu_threads_in_force: int | None = None  # read on the inference thread
        self._camera = None
        self._subscribed_at: float | None = None
        self._publishers_since: float | None = None
        self._silence_reported = False
        self._entities: list = []  # services and timers of the running node
        self._running = False
        self._worker: threading.Thread | None = None
        self._outputs_ready = False
        self._loader = ModelLoader(self._build_tracker, self._on_model_built, self._load_failure)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ----------------------------------------------------------------------------- set-up
    def _report_config_problem(self, problem: str) -> None:
        self._config_problems.append(problem)
        self.get_logger().error(problem)

    def _create_outputs(self) -> None:
        self._detections_pub = self.create_publisher(Detection2DArray, 'stark/detections', 10)
        self._status_pub = self.create_publisher(TrackerStatus, 'stark/status', 10)
        self._debug_pub = self.create_publisher(Image, 'stark/debug_image', 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._outputs_ready = True

    def _destroy_outputs(self) -> None:
        if self._outputs_ready:
            for publisher in (self._detections_pub, self._status_pub, self._debug_pub, self._diagnostics_pub):
                self.destroy_publisher(publisher)
            self._outputs_ready = False

    def _start(self) -> None:
        """Subscribe, serve and publish: the running node."""
        self._frames = FrameBuffer(self._settings['tracking.frame_buffer_size'])
        self._subscribe_camera()
        self._entities = [
            self.create_service(InitTarget, 'stark/init_target', self._on_init_target),
            self.create_service(CancelTarget, 'stark/cancel_target', self._on_cancel_target),
            self.create_timer(self._settings['output.diagnostics_period'], self._publish_diagnostics),
        ]
        self._running = True
        self._worker = threading.Thread(target=self._work, name='stark_inference', daemon=True)
        self._worker.start()

    def _stop(self) -> None:
        """Undo _start: no subscription, services, timers or inference thread (targets are kept)."""
        self._running = False
        self._frames.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        for entity in self._entities:
            destroy = self.destroy_service if hasattr(entity, 'srv_name') else self.destroy_timer
            destroy(entity)
        self._entities = []
        if self._camera is not None:
            self.destroy_subscription(self._camera)
            self._camera = None
        self._subscribed_at = self._publishers_since = None
        self._silence_reported = False

    def _camera_topic(self) -> str:
        """The image topic; compressed transport appends /compressed to the name after remapping,
        as image_transport does, so remapping the base topic moves both transports."""
        topic = self._settings['input.image_topic']
        if self._settings['input.transport'] == 'compressed':
            return f'{self.resolve_topic_name(topic, only_expand=False)}/compressed'
        return topic

    def _subscribe_camera(self) -> None:
        settings = self._settings
        # sensor_data = best effort, volatile, keep last; the depth is ours.
        reliability = (ReliabilityPolicy.BEST_EFFORT if settings['input.qos'] == 'sensor_data'
                       else ReliabilityPolicy.RELIABLE)
        qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.VOLATILE, depth=settings['input.qos_depth'])
        if settings['input.transport'] == 'compressed':
            message_type, convert = CompressedImage, compressed_to_rgb
        else:
            message_type, convert = Image, image_to_rgb
        self._camera = self.create_subscription(
            message_type, self._camera_topic(), lambda msg: self._on_image(msg, convert), qos,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._subscribed_at = time.monotonic()
        for problem in unused_qos_overrides(self):
            if problem not in self._config_problems:
                self._report_config_problem(problem)
        self.get_logger().info(
            f'subscribed to {self._camera.topic_name} ({settings["input.transport"]}, '
            f'{self._camera.qos_profile.reliability.name.lower()}, depth {self._camera.qos_profile.depth})')

    # ----------------------------------------------------------------------------- model
    def _build_tracker(self, settings: dict[str, Any]) -> tuple[StarkTracker, dict[str, str], str]:
        """A warmed-up tracker for the model.* settings, its description and a log line; raises on failure."""
        apply_cpu_threads(settings['model.cpu_threads'])  # the warm-up runs on this thread
        model = load_model(settings['model.checkpoint'], settings['model.variant'] or None,
                           sha256=settings['model.checkpoint_sha256'] or None)
        tracker = create_tracker(model, device=settings['model.device'], precision=settings['model.precision'],
                                 dataset=settings['model.update_profile'],
                                 max_targets=settings['tracking.max_targets'], backend=settings['model.backend'])
        tracker.set_search_factor(settings['tracking.search_factor'] or None)
        tracker.warm_up()
        info = {'variant': model.variant.variant, 'checkpoint': str(model.checkpoint.path if model.checkpoint else ''),
                'device': str(tracker.device), 'precision': tracker.precision, 'backend': tracker.backend.name}
        return tracker, info, f'{model.describe()} on {tracker.device} ({tracker.precision})'

    @staticmethod
    def _load_failure(settings: dict[str, Any], error: Exception) -> str:
        kind = '' if isinstance(error, LOAD_ERRORS) else f'{type(error).__name__}: '
        return f'cannot load model {settings["model.checkpoint"] or "(the default model)"}: {kind}{error}'

    def _load_now(self) -> str | None:
        """Load the model of the current settings on this thread; returns the problem, or None."""
        self._configured = True
        try:  # an empty model.checkpoint is the default model shipped in stark_model
            built = self._build_tracker(self._settings)
        except Exception as error:
            self._on_model_built(self._settings, None, self._load_failure(self._settings, error))
            return self._model_error
        self._on_model_built(self._settings, built, None)
        return None

    def _on_model_built(self, settings: dict[str, Any], built: Any, problem: str | None) -> None:
        """Swap a newly built tracker in (all targets are dropped: their templates belong to the
        old network), or record why it failed (the old tracker, if any, stays in use)."""
        if not self._configured:  # cleaned up while loading
            return
        if problem is not None:
            if self._tracker is None:
                self._model_error = problem
            else:
                self._reload_problem = f'{problem} (still running {self._model_info.get("checkpoint")})'
            self.get_logger().error(problem)
            return
        tracker, info, description = built
        with self._lock:
            tracker.max_targets = self._settings['tracking.max_targets']
            tracker.update_interval = tracker.config.update_interval(self._settings['model.update_profile'])
            self._tracker = tracker
            dropped = self._book.clear()
            self._model_error = self._reload_problem = None
            self._model_info = info
        self.get_logger().info(description + (f'; targets dropped: {", ".join(dropped)}' if dropped else ''))

    def _model_state(self) -> str:
        if self._loader.busy() is not None:
            return 'loading'
        return 'ready' if self._tracker is not None else 'none'

    # ----------------------------------------------------------------------------- camera
    @_logged_not_raised
    def _on_image(self, msg: Image | CompressedImage, convert: Callable[..., np.ndarray]) -> None:
        now = time.monotonic()
        try:
            rgb = convert(msg, self._settings['input.max_image_pixels'])
        except ImageConversionError as error:
            self._stats.frame_rejected(now, str(error))
            self.get_logger().warning(f'skipped a camera frame: {error}', throttle_duration_sec=WARN_THROTTLE_S)
            return
        converted_ms = (time.monotonic() - now) * 1000
        dropped = self._frames.push(Frame(rgb, msg.header, stamp_to_ns(msg.header.stamp), now, converted_ms))
        self._stats.frame_received(now, dropped)

    def _input_warning(self, now: float) -> str | None:
        """No frame arrived for input.no_frames_warning_s: the likely cause (no publisher at all, a
        QoS mismatch, frames too large), logged once per silence and returned for /diagnostics."""
        if self._camera is None or self._subscribed_at is None:
            return None
        publishers = self._camera.get_publisher_count()
        if publishers == 0:
            self._publishers_since = None
            since = self._subscribed_at
        else:
            # The silence of present publishers counts from when they appeared.
            self._publishers_since = self._publishers_since or now
            since = self._publishers_since
        last = self._stats.last_arrival
        silent_s = now - max(since, last if last is not None else -np.inf)
        if silent_s < self._settings['input.no_frames_warning_s']:
            self._silence_reported = False
            return None
        if publishers == 0:
            warning = (f'no frame arrived for {silent_s:.0f} s on {self._camera.topic_name}: '
                       f'{self._no_publisher_hint()}')
        else:
            warning = (f'{publishers} publisher(s) on {self._camera.topic_name} but no frame arrived for '
                       f'{silent_s:.0f} s: {self._silence_cause()}')
        if not self._silence_reported:
            self.get_logger().warning(warning)
            self._silence_reported = True
        return warning

    def _no_publisher_hint(self) -> str:
        """Why a topic without publishers stays silent: image topics that do have some, and the remap."""
        others = self._camera_candidates()
        seen = f'; image topics with publishers: {", ".join(others)}' if others else ''
        base = self._settings['input.image_topic']
        return (f'it has 0 publishers{seen}. Point the node at your camera: image_topic:=/your/camera '
                f'(ros2 launch), or --ros-args -r {base}:=/your/camera (ros2 run)')

    def _camera_candidates(self, limit: int = 5) -> list[str]:
        """Topics of our input type that someone publishes (our own debug image excluded)."""
        wanted = 'sensor_msgs/msg/' + ('CompressedImage' if self._settings['input.transport'] == 'compressed'
                                       else 'Image')
        ours = self._debug_pub.topic_name if self._outputs_ready else None
        names = [name for name, types in self.get_topic_names_and_types()
                 if wanted in types and name not in (ours, self._camera.topic_name)
                 and self.count_publishers(name) > 0]
        return names[:limit]

    def _camera_state(self) -> str:
        """For a refusal before the first frame: the topic listened to and who publishes on it."""
        if self._camera is None:
            return ' (the node is not subscribed to a camera)'
        publishers = self._camera.get_publisher_count()
        if publishers == 0:
            return f' on {self._camera.topic_name}: {self._no_publisher_hint()}'
        return f' on {self._camera.topic_name} ({publishers} publisher(s))'

    def _silence_cause(self) -> str:
        ours = self._camera.qos_profile.reliability
        offered = {info.qos_profile.reliability for info in self.get_publishers_info_by_topic(self._camera.topic_name)}
        if ours == ReliabilityPolicy.RELIABLE and ReliabilityPolicy.BEST_EFFORT in offered:
            return ('QoS mismatch: we subscribe reliable and a publisher offers best effort, so DDS never '
                    'connects them; set input.qos to sensor_data (best effort)')
        return ('likely frames too large for Fast DDS\'s default shared-memory segments (a 640x480 rgb8 frame '
                'already is): start the camera and this node with '
                f'FASTDDS_DEFAULT_PROFILES_FILE={fastdds_profile_hint()}; else check the publisher\'s '
                'QoS against input.qos, or that it publishes at all')

    # ----------------------------------------------------------------------------- inference
    def _work(self) -> None:
        while self._running:
            self._apply_cpu_threads()
            frame = self._frames.take_newest(timeout=0.1)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception:  # the worker must outlive any single bad frame
                self.get_logger().error(f'frame {format_stamp(frame.stamp_ns)} failed:\n{traceback.format_exc()}',
                                        throttle_duration_sec=WARN_THROTTLE_S)

    def _apply_cpu_threads(self) -> None:
        """model.cpu_threads on this thread: torch's thread count is per thread once it has run."""
        wanted = self._settings['model.cpu_threads'] or TORCH_DEFAULT_THREADS
        if wanted != self._cpu_threads_in_force:
            self._cpu_threads_in_force = apply_cpu_threads(wanted)

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
        self._status_pub.publish(messages.tracker_status(frame.header, targets, self._stats.snapshot(),
                                                         self._model_state()))
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

        loading = self._loader.busy()
        if loading is not None:
            return fail(f'a new model ({loading["model.checkpoint"]}) is loading; it drops all targets when '
                        'swapped in, so try again once stark/status says model_state "ready"')
        if self._tracker is None:
            return fail(self._model_error or 'no model loaded')
        if len(request.target_id) > MAX_TARGET_ID_LENGTH:
            return fail(f'target_id is {len(request.target_id)} characters long; at most {MAX_TARGET_ID_LENGTH}')
        try:
            frame = self._frames.find(stamp_to_ns(request.stamp))
        except NoFrameYet as error:
            return fail(f'{error}{self._camera_state()}')
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
            except ValueError as error:  # TrackerError, and the crop's own refusals of a box
                return fail(f'cannot start target {target_id!r}: {error}')
            target = self._book.start(target_id, request.label.strip(), box)
            # Announce the new target (IDLE) before any frame can move it on.
            self._status_pub.publish(messages.tracker_status(frame.header, self._book.snapshot(),
                                                             self._stats.snapshot(), self._model_state()))
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
        problem = self._model_change_problem(candidate)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        self._apply_live_settings(candidate)
        reload = any(candidate[key] != self._settings[key] for key in RELOAD_KEYS)
        self._settings = candidate
        if reload and self._configured:
            self._loader.request(candidate)  # swapped in when ready; see _on_model_built
            self.get_logger().info(f'loading model {candidate["model.checkpoint"] or "(the default model)"} '
                                   'in the background')
        return SetParametersResult(successful=True)

    def _model_change_problem(self, candidate: dict[str, Any]) -> str | None:
        """Why the model.* values of `candidate` cannot be taken (cheap checks; the load does the rest)."""
        checkpoint = candidate['model.checkpoint']
        if checkpoint == self._settings['model.checkpoint']:
            return None
        if checkpoint and not os.path.exists(checkpoint):
            return f'parameter model.checkpoint: {checkpoint} does not exist'
        return None

    def _apply_live_settings(self, candidate: dict[str, Any]) -> None:
        """Settings that take effect at once (model.cpu_threads: on the inference thread's next turn)."""
        with self._lock:  # live targets stay; new ones wait until there is room
            if self._tracker is not None:
                self._tracker.max_targets = candidate['tracking.max_targets']
                self._tracker.update_interval = self._tracker.config.update_interval(
                    candidate['model.update_profile'])
                self._tracker.set_search_factor(candidate['tracking.search_factor'] or None)
        if candidate['tracking.frame_buffer_size'] != self._settings['tracking.frame_buffer_size']:
            self._frames.resize(candidate['tracking.frame_buffer_size'])
        self._stats.rejection_window = candidate['output.diagnostics_window']

    # ----------------------------------------------------------------------------- diagnostics
    @_logged_not_raised
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        self._stats.measure_rates(now)  # the rates stark/status carries until the next period
        figures = self._stats.snapshot(now)
        loading = self._loader.busy()
        info = dict(self._model_info) if self._model_info else {'backend': self._settings['model.backend']}
        info['model_state'] = self._model_state()
        if self._cpu_threads_in_force is not None:
            info['cpu_threads'] = str(self._cpu_threads_in_force)
        if self._config_problems:
            info['configuration'] = '; '.join(self._config_problems)
        warnings = []
        if loading is not None:
            warnings.append(f'loading model {loading["model.checkpoint"]} in the background'
                            + (' (tracking with the current one meanwhile)' if self._tracker is not None else ''))
        if self._reload_problem:
            warnings.append(f'the latest model change was not applied: {self._reload_problem}')
        if figures.recently_rejected:
            warnings.append(f'{figures.recently_rejected} frames rejected in the last '
                            f'{self._stats.rejection_window:g} s (latest: {figures.last_rejection})')
        silence = self._input_warning(now)
        if silence:
            warnings.append(silence)
        error = self._model_error if self._tracker is None and loading is None else None
        self._diagnostics_pub.publish(messages.diagnostics(self.get_clock().now().to_msg(),
                                                           self.get_fully_qualified_name(),
                                                           figures, info, error, warnings, len(self._book)))

    def shutdown(self) -> None:
        """Stop the threads (the node itself is destroyed by the caller)."""
        self._stop()
        self._loader.close()


class ModelLoadFailed(RuntimeError):
    """The plain node could not load its model and model.exit_on_load_failure is true."""


class TrackerNode(TrackerCore, Node):
    """The plain node: loads the model and runs from construction on."""

    def __init__(self, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        self._init_core()
        problem = self._load_now()
        if problem and self._settings['model.exit_on_load_failure']:
            self.get_logger().fatal(f'exiting with status {EXIT_MODEL_LOAD_FAILED} '
                                    f'(model.exit_on_load_failure is true): {problem}')
            self._loader.close()
            self.destroy_node()
            raise ModelLoadFailed(problem)
        self._create_outputs()
        self._start()


class ManagedTrackerNode(TrackerCore, LifecycleNode):
    """The lifecycle form: configure loads the model and creates the publishers, activate subscribes
    to the camera and offers the services, deactivate stops that (targets kept), cleanup drops the
    model and targets. Parameters may change in any state; model changes load once configured."""

    def __init__(self, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._init_core()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        problem = self._load_now()
        if problem:
            self._configured = False
            self.get_logger().error(f'configure failed: {problem}')
            return TransitionCallbackReturn.FAILURE
        self._create_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._start()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._configured = False
        self._loader.cancel_waiting()
        self._destroy_outputs()
        with self._lock:
            self._book.clear()
            self._tracker = None
            self._model_info = {}
            self._model_error, self._reload_problem = 'not configured', None


def apply_cpu_threads(requested: int) -> int:
    """Set PyTorch's CPU thread count for the calling thread (0: PyTorch's own default, one per core);
    returns the count now in force there."""
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


def main(argv: list[str] | None = None, managed: bool = False) -> int:
    """Run the node until Ctrl-C; `managed` runs the lifecycle form. `argv`: the arguments after the
    program name (default: the command line's)."""
    args = sys.argv[1:] if argv is None else argv
    parse_node_args(args, 'managed_tracker_node' if managed else 'tracker_node', managed)
    rclpy.init(args=[sys.argv[0], *args])
    try:
        node = ManagedTrackerNode() if managed else TrackerNode()
    except ModelLoadFailed:  # logged by the node
        rclpy.try_shutdown()
        return EXIT_MODEL_LOAD_FAILED
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Under ros2 launch, Ctrl-C reaches the node twice (from the terminal, then from launch): a
        # second KeyboardInterrupt must not cut the clean shutdown short (launch escalates to
        # SIGTERM and SIGKILL if it ever hangs).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def managed_main(argv: list[str] | None = None) -> int:
    """Entry point of the lifecycle form (managed_tracker_node)."""
    return main(argv, managed=True)
