"""The command line of tracker_node and managed_tracker_node: `--help` prints the usage (parameters,
topics, services, examples) and exits 0 instead of starting a node; an unknown argument outside
--ros-args is a usage error (exit 2). The parameter list comes from parameters.SPECS, the table the
node declares its parameters from."""
from __future__ import annotations

import argparse
import textwrap

from rclpy.utilities import remove_ros_args

from .parameters import SPECS

TOPICS = (
    ('image', 'in: sensor_msgs/Image (input.transport compressed: <image after remapping>/compressed, '
              'sensor_msgs/CompressedImage)'),
    ('stark/detections', 'out: vision_msgs/Detection2DArray, one per processed frame, the image\'s header'),
    ('stark/status', 'out: stark_ros/TrackerStatus (target states, rates, model_state)'),
    ('stark/debug_image', 'out: sensor_msgs/Image with the boxes (output.debug_image, while subscribed)'),
    ('/diagnostics', 'out: diagnostic_msgs/DiagnosticArray (model, figures, warnings)'),
)
SERVICES = (
    ('stark/init_target', 'stark_ros/srv/InitTarget: start or restart a target from a box'),
    ('stark/cancel_target', 'stark_ros/srv/CancelTarget: stop one target or all'),
)
LIFECYCLE = ('Starts unconfigured: configure loads the model (and fails if it cannot), activate subscribes '
             'and serves, deactivate stops that (targets kept), cleanup drops model and targets.')
PLAIN = 'Loads its model at start and runs until Ctrl-C.'


def _section(title: str, rows: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    lines = [title]
    for name, text in rows:
        lines.append(f'  {name}')
        lines += textwrap.wrap(text, width=96, initial_indent='      ', subsequent_indent='      ')
    return '\n'.join(lines)


def _default_text(value: object) -> str:
    """A default as it is written in YAML / on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


def _parameter_rows() -> list[tuple[str, str]]:
    when = {True: 'run time', False: 'start-up only'}
    return [(f'{spec.name} (default {_default_text(spec.default)}; {when[spec.runtime]})', spec.description)
            for spec in SPECS.values()]


def usage_epilog(executable: str) -> str:
    """Everything --help prints after the argument list."""
    return '\n\n'.join([
        _section('topics (relative to the node\'s namespace):', TOPICS),
        _section('services:', SERVICES),
        _section('parameters (--ros-args -p NAME:=VALUE, or --params-file config/tracker.yaml):', _parameter_rows()),
        'examples:\n'
        f'  ros2 run stark_ros {executable} --ros-args -r image:=/camera/image_raw\n'
        f'  ros2 run stark_ros {executable} --ros-args -p model.checkpoint:=/path/model.pth.tar -p model.device:=cpu\n'
        '  ros2 launch stark_ros tracker.launch.py --show-args',
    ])


def parse_node_args(argv: list[str], executable: str, managed: bool) -> argparse.Namespace:
    """Check the arguments outside --ros-args (rclpy takes those); --help exits 0 here."""
    parser = argparse.ArgumentParser(
        prog=executable, usage=f'{executable} [-h] [--ros-args ROS_ARGUMENTS ...]',
        description=f'The STARK tracker node (stark_tracker{", lifecycle" if managed else ""}): camera '
                    f'frames in, tracks out. {LIFECYCLE if managed else PLAIN}',
        epilog=usage_epilog(executable), formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(remove_ros_args([executable, *argv])[1:])
