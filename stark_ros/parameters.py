"""The node's parameters: names, types, defaults, allowed values, and which may change at run time.

Declaring goes through `declare_all`, which never lets a bad value stop the node: a wrong type,
an out-of-range value or an unknown key is logged as an error that names the parameter, and the
default is used instead.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from stark_model.backends import BACKEND_CHOICES
from stark_model.tracker import PRECISIONS

# Dynamic-template update profiles named in the variant configs (config/models/*.yaml); a variant
# without an entry for the chosen profile uses its 'default' interval.
UPDATE_PROFILES = ('default', 'lasot', 'got10k_test', 'trackingnet', 'vot20', 'vot20lt')
DEVICE_PATTERN = re.compile(r'auto|cpu|cuda(:\d+)?')
SHA256_PATTERN = re.compile(r'[0-9a-fA-F]{64}')
# Changing one of these builds a new tracker (in the background); the others apply at once.
RELOAD_KEYS = ('model.checkpoint', 'model.checkpoint_sha256', 'model.variant', 'model.device',
               'model.precision', 'model.backend')


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    runtime: bool = False  # may change while the node runs
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: re.Pattern | None = None  # a string value must match it whole
    pattern_text: str = ''  # what the pattern means, for the refusal

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if type(value) is not type(self.default):
            return (f'parameter {self.name} must be {type(self.default).__name__}, '
                    f'got {type(value).__name__} {value!r}')
        if isinstance(value, float) and not math.isfinite(value):
            return f'parameter {self.name}: {value} is not a finite number'
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(value, self.choices, n=1)
            hint = f' (did you mean {close[0]}?)' if close else ''
            return f'parameter {self.name}: {value!r} is not one of {", ".join(self.choices)}{hint}'
        if self.pattern is not None and value and not self.pattern.fullmatch(value):
            return f'parameter {self.name}: {value!r} is not {self.pattern_text}'
        if self.minimum is not None and value < self.minimum:
            return f'parameter {self.name}: {value} is below the minimum {self.minimum}'
        if self.maximum is not None and value > self.maximum:
            return f'parameter {self.name}: {value} is above the maximum {self.maximum}'
        return None


SPECS = {spec.name: spec for spec in (
    ParameterSpec('model.checkpoint', '', 'STARK checkpoint: an official .pth.tar or one trained with '
                  'stark_training; empty: the default model shipped in stark_model (docs/MODEL_CARD.md). '
                  'Changing it at run time reloads the model and drops all targets.', runtime=True),
    ParameterSpec('model.variant', '', 'Variant name (s50, st50, st101, lite, lite_effnet, lite_nano) or YAML path; '
                  'empty: the one embedded in the checkpoint, else inferred from its weights.', runtime=True),
    ParameterSpec('model.checkpoint_sha256', '', 'Expected sha256 of the checkpoint file (64 hex digits); '
                  'a file with another digest is refused. Empty: not checked.', runtime=True,
                  pattern=SHA256_PATTERN, pattern_text='64 hex digits (or empty)'),
    ParameterSpec('model.device', 'auto', 'cpu, cuda, cuda:N, or auto (CUDA when available).', runtime=True,
                  pattern=DEVICE_PATTERN, pattern_text='one of auto, cpu, cuda, cuda:N'),
    ParameterSpec('model.precision', 'fp32', 'fp32, or fp16/bf16 autocast (fp16 on CUDA only).', runtime=True,
                  choices=tuple(PRECISIONS)),
    ParameterSpec('model.backend', 'auto', 'Inference backend; auto: the variant\'s fastest CPU backend '
                  '(ONNX Runtime for the default model), else pytorch.', runtime=True, choices=BACKEND_CHOICES),
    # 1, not one per core: on a busy 2-core machine one thread tracked 5x faster (README, CPU threads).
    ParameterSpec('model.cpu_threads', 1, 'PyTorch CPU threads of the inference thread; 0: PyTorch\'s default '
                  '(one per core).',
                  runtime=True, minimum=0, maximum=1024),
    ParameterSpec('model.exit_on_load_failure', False, 'true: the plain node (tracker_node) exits with status 1 '
                  'when its model cannot be loaded at start-up, so that a launch system notices; false: it '
                  'stays up, says why, and loads once model.checkpoint is set right. The lifecycle node '
                  'fails configure instead, either way.'),
    ParameterSpec('model.update_profile', 'default', 'Dynamic-template update intervals of this benchmark '
                  'profile; changes apply at once and keep the targets.', runtime=True, choices=UPDATE_PROFILES),
    ParameterSpec('input.image_topic', 'image', 'Camera topic (relative names follow the namespace; '
                  'remapping "image" works too). With compressed transport "/compressed" is appended to '
                  'the remapped name, as image_transport does.'),
    ParameterSpec('input.transport', 'raw', 'raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage.',
                  choices=('raw', 'compressed')),
    ParameterSpec('input.qos', 'sensor_data', 'sensor_data (best effort) or reliable.',
                  choices=('sensor_data', 'reliable')),
    ParameterSpec('input.qos_depth', 5, 'History depth of the image subscription.', minimum=1, maximum=1000),
    ParameterSpec('input.max_image_pixels', 7680 * 4320, 'Frames with more pixels (width x height) are '
                  'refused before conversion; the default admits 8K.', runtime=True, minimum=1,
                  maximum=2**31 - 1),
    ParameterSpec('input.no_frames_warning_s', 5.0, 'Warn (log and /diagnostics) when no frame arrived for this '
                  'many seconds, naming the camera topic and the likely cause (no publisher at all: the remap '
                  'to use; publishers present: QoS or frame size).', runtime=True, minimum=0.5, maximum=3600.0),
    ParameterSpec('tracking.max_targets', 8, 'Most targets tracked at once.', runtime=True, minimum=1, maximum=256),
    ParameterSpec('tracking.lost_threshold', 0.3, 'A target whose score stays under this is counted as lost.',
                  runtime=True, minimum=0.0, maximum=1.0),
    ParameterSpec('tracking.lost_patience', 10, 'Consecutive frames under the threshold before LOST.',
                  runtime=True, minimum=0, maximum=1_000_000),
    ParameterSpec('tracking.search_factor', 0.0, 'Search region side as a multiple of the target size; 0: '
                  'the model\'s own (STARK ST50/ST101 5.0, the default model 3.3). Smaller keeps nearby '
                  'look-alikes out of view but loses faster motion. Applies from the next frame.',
                  runtime=True, minimum=0.0, maximum=20.0),
    ParameterSpec('tracking.frame_buffer_size', 15, 'Recent frames kept for init requests on a past stamp.',
                  runtime=True, minimum=1, maximum=1000),
    ParameterSpec('output.debug_image', False, 'Publish stark/debug_image with the boxes drawn '
                  '(only while someone subscribes).', runtime=True),
    ParameterSpec('output.diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
                  minimum=0.1, maximum=60.0),
    ParameterSpec('output.diagnostics_window', 10.0, 'Seconds over which rejected frames make /diagnostics '
                  'WARN; it returns to OK once a window passes without one.', runtime=True,
                  minimum=0.5, maximum=3600.0),
)}

# Parameters every node has or that rclpy handles itself (qos_overrides.*: see unused_qos_overrides).
STANDARD_PREFIXES = ('use_sim_time', 'qos_overrides.', 'start_type_description_service')
QOS_OVERRIDE_PREFIX = 'qos_overrides.'


def declare_all(node: Node, report: Callable[[str], None]) -> dict[str, Any]:
    """Declare every parameter; returns the values in effect. Problems go to `report`."""
    values = {}
    for spec in SPECS.values():
        descriptor = ParameterDescriptor(description=spec.description)
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor).value
        except (InvalidParameterTypeException, ParameterException) as error:
            report(f'parameter {spec.name}: {error}; using the default {spec.default!r}')
            value = node.declare_parameter(spec.name, spec.default, descriptor, ignore_override=True).value
        problem = spec.problem(value)
        if problem:
            report(f'{problem}; using the default {spec.default!r}')
            node.set_parameters([Parameter(spec.name, value=spec.default)])
            value = spec.default
        values[spec.name] = value
    for name in unknown_overrides(node):
        close = difflib.get_close_matches(name, SPECS, n=1)
        hint = f' (did you mean {close[0]}?)' if close else ''
        report(f'unknown parameter {name}{hint}; it is ignored')
    return values


def unknown_overrides(node: Node) -> list[str]:
    """Names given in parameter files or on the command line that this node does not have."""
    overrides = getattr(node, '_parameter_overrides', {})
    return sorted(name for name in overrides
                  if name not in SPECS and not name.startswith(STANDARD_PREFIXES))


def unused_qos_overrides(node: Node) -> list[str]:
    """Problems with qos_overrides.* given at start-up that no entity of the node declared (only the
    camera subscription accepts overrides); each names the key and what is accepted instead."""
    overrides = getattr(node, '_parameter_overrides', {})
    declared = sorted(name for name in node.list_parameters([], 0).names if name.startswith(QOS_OVERRIDE_PREFIX))
    problems = []
    for name in sorted(overrides):
        if name.startswith(QOS_OVERRIDE_PREFIX) and not node.has_parameter(name):
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f'did you mean {close[0]}?' if close else f'accepted: {", ".join(declared) or "none"}'
            problems.append(f'parameter {name} is ignored: only the camera subscription takes QoS overrides '
                            f'({hint}); input.qos and input.qos_depth set it too')
    return problems


def change_problem(name: str, value: Any) -> str | None:
    """Why a run-time change of `name` to `value` is refused, or None."""
    spec = SPECS.get(name)
    if spec is None:
        return None if name.startswith(STANDARD_PREFIXES) else f'unknown parameter {name}'
    if not spec.runtime:
        return f'parameter {name} can only be set at start-up (restart the node)'
    return spec.problem(value)
