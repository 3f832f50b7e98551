"""stark-init: start, restart or cancel tracking from the command line.

    stark-init 120 80 60 40 --label cup          # box x y width height on the latest frame
    stark-init --draw --image-topic /camera/image_raw   # draw the box on the current frame
    stark-init --cancel target-1 | --cancel-all

Exit status 0 when the node accepted the request, 1 when it refused (its reason is printed),
2 for usage errors or when the node cannot be reached.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from stark_ros.srv import CancelTarget, InitTarget

from .image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb


class ClientError(RuntimeError):
    """The request could not be made (node unreachable, no display, no frame)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='stark-init', description=__doc__.splitlines()[0])
    parser.add_argument('box', nargs='*', type=float, metavar='X Y W H',
                        help='target box in pixels: left, top, width, height')
    parser.add_argument('--label', default='', help='label published as class_id')
    parser.add_argument('--id', dest='target_id', default='', help='target id to (re)start; default: a new id')
    parser.add_argument('--stamp', default='0', help='stamp SEC.NANOSEC of the frame the box is on (0: latest)')
    parser.add_argument('--namespace', default='', help='namespace of the tracker node')
    parser.add_argument('--draw', action='store_true', help='draw the box on the current camera frame')
    parser.add_argument('--image-topic', default='image', help='camera topic for --draw')
    parser.add_argument('--compressed', action='store_true', help='--draw reads <image-topic>/compressed')
    parser.add_argument('--cancel', metavar='ID', help='stop tracking this target')
    parser.add_argument('--cancel-all', action='store_true', help='stop tracking every target')
    parser.add_argument('--timeout', type=float, default=10.0, help='seconds to wait for the node')
    args = parser.parse_args(argv)
    modes = sum((bool(args.box), args.draw, args.cancel is not None, args.cancel_all))
    if modes != 1:
        parser.error('give exactly one of: a box (X Y W H), --draw, --cancel ID, --cancel-all')
    if args.box and len(args.box) != 4:
        parser.error(f'a box is 4 numbers X Y W H, got {len(args.box)}')
    return args


def parse_stamp(text: str) -> tuple[int, int]:
    """'SEC.NANOSEC' (nanoseconds as written: 12.5 = 12 s 500000000 ns) to (sec, nanosec)."""
    seconds, _, fraction = text.partition('.')
    if not seconds.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > 9:
        raise ClientError(f'stamp {text!r} is not SEC.NANOSEC')
    return int(seconds), int(fraction.ljust(9, '0')) if fraction else 0


def call(node: Node, service_type: Any, name: str, request: Any, timeout: float) -> Any:
    client = node.create_client(service_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise ClientError(f'service {client.srv_name} is not available after {timeout:g} s: '
                          'is stark_tracker running (and in this namespace and ROS domain)?')
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        raise ClientError(f'{client.srv_name} did not answer within {timeout:g} s')
    return future.result()


def grab_frame(node: Node, topic: str, compressed: bool, timeout: float):
    """The next camera message on `topic` and its RGB pixels."""
    received = []
    message_type = CompressedImage if compressed else Image
    topic = f'{topic}/compressed' if compressed else topic
    subscription = node.create_subscription(message_type, topic, received.append, qos_profile_sensor_data)
    deadline = time.monotonic() + timeout
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        raise ClientError(f'no image on {subscription.topic_name} within {timeout:g} s')
    try:
        return received[0], (compressed_to_rgb if compressed else image_to_rgb)(received[0])
    except ImageConversionError as error:
        raise ClientError(f'cannot show the frame from {topic}: {error}') from None


def check_display() -> None:
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        raise ClientError('--draw needs a display (DISPLAY is not set); give the box as X Y W H instead')


def draw_box(rgb) -> tuple[float, float, float, float]:
    """Let the user drag a box on the frame in an OpenCV window."""
    import cv2
    try:
        x, y, w, h = cv2.selectROI('stark-init: drag a box, Enter to accept, c to cancel',
                                   cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), showCrosshair=True)
        cv2.destroyAllWindows()
    except cv2.error as error:
        raise ClientError('--draw needs OpenCV with GUI support (opencv-python, not -headless): '
                          f'{error.err if hasattr(error, "err") else error}') from None
    if w == 0 or h == 0:
        raise ClientError('no box drawn')
    return float(x), float(y), float(w), float(h)


def run(args: argparse.Namespace, node: Node) -> tuple[bool, str]:
    """Make the request; (accepted, the node's message)."""
    if args.cancel is not None or args.cancel_all:
        request = CancelTarget.Request(target_id=args.cancel or '', cancel_all=args.cancel_all)
        response = call(node, CancelTarget, 'stark/cancel_target', request, args.timeout)
        return response.success, response.message
    request = InitTarget.Request(label=args.label, target_id=args.target_id)
    if args.draw:
        check_display()
        message, rgb = grab_frame(node, args.image_topic, args.compressed, args.timeout)
        box = draw_box(rgb)
        request.stamp = message.header.stamp  # the box belongs to the frame it was drawn on
    else:
        box = tuple(args.box)
        request.stamp.sec, request.stamp.nanosec = parse_stamp(args.stamp)
    request.x, request.y, request.width, request.height = box
    response = call(node, InitTarget, 'stark/init_target', request, args.timeout)
    return response.success, response.message  # an acceptance names the target id already


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    rclpy.init()
    # In the tracker's namespace, so that relative names (stark/..., image) resolve as the node's do.
    node = rclpy.create_node('stark_init_client', namespace=args.namespace or '/')
    try:
        accepted, text = run(args, node)
    except ClientError as error:
        print(f'stark-init: {error}', file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(text if accepted else f'stark-init: refused: {text}', file=sys.stdout if accepted else sys.stderr)
    return 0 if accepted else 1

