"""Fuzz the running tracker node: hypothesis-generated camera messages and service requests go to
the installed node over DDS; the node must stay up, stay under a memory bound, and refuse
every bad input with a reason that names its cause.

    python -m stark_ros.fuzz --images 10000 --requests 10000 [--max-pixels 1000000] [--rss-limit-mb 2000]
                             [--checkpoint PATH | --variant lite] [--seed 0] [--json PATH]

Images: raw Image messages of any encoding (supported or not) with any width, height, step and
data length (real pixel data up to --max-pixels, which is also the node's input.max_image_pixels;
declared sizes far beyond it), and CompressedImage messages (valid, truncated, corrupted,
mislabelled jpeg/png, and headers declaring sizes over the cap). Each message is also converted
here with the node's own conversion code, so every refusal the node logs must be one of the
refusals expected here. Requests: InitTarget with any floats (NaN, inf, huge, negative), any stamp,
any id and label; CancelTarget with any id. Every refused request must name a known cause.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings, strategies as st
from sensor_msgs.msg import CompressedImage, Image

from stark_ros.srv import CancelTarget, InitTarget

from .driver import NodeClient, NodeProcess, large_frame_transport, untrained_checkpoint
from .frame_buffer import set_stamp
from .image_conversion import SUPPORTED_ENCODINGS, ImageConversionError, compressed_to_rgb, image_to_rgb

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # damaged inputs are the point here

BYTES_PER_PIXEL = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, 'mono16': 2, 'yuv422': 2,
                   'uyvy': 2, 'yuv422_yuy2': 2, 'yuyv': 2, '8UC1': 1, '8UC3': 3, '16UC1': 2}
JUNK_ENCODINGS = ('', 'bayer_rggb8', '32FC1', 'RGB8', 'rgb8 ', 'x' * 40, '\u00e9ncoding')
# Refusals a request may get, by cause (regular expressions on the reply's message).
INIT_REFUSALS = {
    'no frame received yet': r'^no camera frame has been received yet on /\S+ ',
    'stamp not in the frame buffer': r'^no frame with stamp -?\d+\.\d{9} in the buffer',
    'target id too long': r'^target_id is \d+ characters long; at most \d+$',
    'target limit reached': r'^already tracking \d+ targets \(tracking\.max_targets = \d+\)',
    'box refused': r"^cannot start target .*: .*\bbox\b",
    'model loading': r'is loading',
}
CANCEL_REFUSALS = {
    'both id and cancel_all': r'^give either target_id or cancel_all, not both$',
    'neither id nor cancel_all': r'^give a target_id, or set cancel_all$',
    'unknown target': r"^no target .* \(tracking: .*\)$",
}
TEXT = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'), max_size=300)
FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-50, 700),
                  st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e9, -1e9, 1e308]))


class FuzzFailure(AssertionError):
    """The node broke a rule under fuzzing; the message says which and shows the input."""


@dataclass
class FuzzReport:
    images_sent: int = 0
    image_bytes_sent: int = 0
    images_refused_here: int = 0
    image_refusals: Counter = field(default_factory=Counter)
    requests_sent: int = 0
    requests_accepted: int = 0
    request_refusals: Counter = field(default_factory=Counter)
    node_frames_received: int = 0
    node_frames_rejected: int = 0
    node_refusals_logged: int = 0
    seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_limit_mb: float = 0.0
    machine: str = ''


# ---------------------------------------------------------------------------------------- images
# The strategies draw small recipes and the messages are built from them (hypothesis keeps a text
# form of every drawn value, which for megabytes of pixels would cost more than sending them).
@dataclass(frozen=True)
class RawRecipe:
    encoding: str
    width: int
    height: int
    step: int
    is_bigendian: int
    length: int
    data_seed: int

    def build(self) -> Image:
        image = Image(height=self.height, width=self.width, encoding=self.encoding, step=self.step,
                      is_bigendian=self.is_bigendian)
        image.data = np.random.default_rng(self.data_seed).integers(0, 256, self.length, dtype=np.uint8).tobytes()
        return image


@st.composite
def raw_images(draw, max_pixels: int) -> RawRecipe:
    """sensor_msgs/Image with any fields; real data up to `max_pixels` pixels (4 bytes each at most)."""
    encoding = draw(st.sampled_from(SUPPORTED_ENCODINGS * 4 + JUNK_ENCODINGS))
    side = int(math.isqrt(max_pixels))
    size = st.one_of(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(0, 2),
                     st.integers(1, side), st.integers(side, side * 2), st.sampled_from([2**31 - 1, 2**32 - 1]))
    width, height = draw(size), draw(size)
    row = width * BYTES_PER_PIXEL.get(encoding, 3)
    step = draw(st.one_of(st.just(row), st.just(row), st.integers(row - 3, row + 8).map(lambda s: max(0, s)),
                          st.integers(0, 2**32 - 1)).map(lambda s: min(s, 2**32 - 1)))
    wanted = step * height
    length = draw(st.one_of(st.just(wanted), st.just(wanted), st.integers(0, max(0, wanted - 1)),
                            st.integers(wanted, wanted + 64), st.integers(0, 4096)))
    # Real pixels up to the cap; frames declaring more get at most 64 KiB (the cap refuses them unread).
    budget = max_pixels * 4 if width * height <= max_pixels else 65536
    return RawRecipe(encoding, width, height, step, draw(st.integers(0, 1)), min(length, budget),
                     draw(st.integers(0, 2**32 - 1)))


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring this size (CRC not checked before the size cap)."""
    ihdr = width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + bytes([8, 2, 0, 0, 0])
    return b'\x89PNG\r\n\x1a\n' + len(ihdr).to_bytes(4, 'big') + b'IHDR' + ihdr + bytes(4)


@dataclass(frozen=True)
class CompressedRecipe:
    kind: str  # what the data is: jpeg or png
    image_format: str  # what the message says it is
    width: int
    height: int
    pixel_seed: int
    damage: str
    where: float  # position of the damage, as a fraction of the data
    garbage: bytes
    declared_side: int  # for damage 'oversized': the size a png header claims

    def build(self) -> CompressedImage:
        pixels = np.random.default_rng(self.pixel_seed).integers(0, 256, (self.height, self.width, 3), np.uint8)
        data = cv2.imencode('.jpg' if self.kind == 'jpeg' else '.png', pixels)[1].tobytes()
        position = min(int(self.where * len(data)), len(data) - 1)
        if self.damage == 'truncate':
            data = data[:position]
        elif self.damage == 'flip':
            data = data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]
        elif self.damage == 'garbage':
            data = self.garbage
        elif self.damage == 'empty':
            data = b''
        elif self.damage == 'oversized' and self.kind == 'png':
            data = _png_header(self.declared_side, self.declared_side) + data[33:]
        message = CompressedImage(format=self.image_format)
        message.data = data
        return message


@st.composite
def compressed_images(draw, max_pixels: int) -> CompressedRecipe:
    """sensor_msgs/CompressedImage: valid, damaged, mislabelled, or declaring a size over the cap."""
    kind = draw(st.sampled_from(['jpeg', 'png']))
    side = int(math.isqrt(max_pixels))
    other = 'png' if kind == 'jpeg' else 'jpeg'
    image_format = draw(st.sampled_from([kind, kind, 'jpg' if kind == 'jpeg' else 'png',
                                         f'rgb8; {kind} compressed bgr8', other, 'compressedDepth png', '',
                                         'gif', 'jpeg png']))
    return CompressedRecipe(
        kind, image_format, draw(st.one_of(st.integers(1, 96), st.integers(1, side))), draw(st.integers(1, 96)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.sampled_from(['none', 'none', 'truncate', 'flip', 'garbage', 'empty', 'oversized'])),
        draw(st.floats(0, 1)), draw(st.binary(max_size=512)), draw(st.integers(side + 1, 2**31 - 1)))


def requests() -> st.SearchStrategy:
    latest = st.just((0, 0))  # the zero stamp: the latest frame
    stamps = st.one_of(latest, latest, latest, st.tuples(st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1)))
    init = st.builds(lambda x, y, w, h, stamp, target_id, label: _init_request(x, y, w, h, *stamp, target_id, label),
                     FLOAT, FLOAT, FLOAT, FLOAT, stamps,
                     st.one_of(st.just(''), st.sampled_from(['a', 'b', 'c']), TEXT), TEXT)
    cancel = st.builds(lambda target_id, cancel_all: CancelTarget.Request(target_id=target_id, cancel_all=cancel_all),
                       st.one_of(st.just(''), st.sampled_from(['a', 'b', 'c', 'target-1']), TEXT), st.booleans())
    return st.one_of(init, init, cancel)


def _init_request(x, y, w, h, sec, nanosec, target_id, label) -> InitTarget.Request:
    request = InitTarget.Request(x=x, y=y, width=w, height=h, target_id=target_id, label=label)
    request.stamp.sec, request.stamp.nanosec = sec, nanosec
    return request


# ---------------------------------------------------------------------------------------- checks
def refusal_here(message: Image | CompressedImage, max_pixels: int) -> str | None:
    """What the node's conversion code says about this message (None: accepted)."""
    try:
        if isinstance(message, CompressedImage):
            compressed_to_rgb(message, max_pixels)
        else:
            image_to_rgb(message, max_pixels)
    except ImageConversionError as error:
        return str(error)
    return None


def refusal_cause(message: str, causes: dict[str, str]) -> str:
    """The named cause of a refused request's message; FuzzFailure if it names none."""
    for cause, pattern in causes.items():
        if re.search(pattern, message):
            return cause
    raise FuzzFailure(f'a refusal that names no known cause: {message!r}')


def image_cause(reason: str) -> str:
    """A short class of an image refusal, for the tally (the full reason stays in the node's log)."""
    if 'over the cap' in reason:
        return 'over the pixel cap'
    words = re.sub(r"'[^']*'|\d+", '', reason).split()
    return ' '.join(words[:4])


def check_request(request: Any, response: Any, report: FuzzReport) -> None:
    if not response.message or response.message.startswith('internal error'):
        raise FuzzFailure(f'{type(request).__name__} {request} got {response.message!r}')
    if response.success:
        if isinstance(request, InitTarget.Request) and not response.target_id:
            raise FuzzFailure(f'accepted without a target id: {request}')
        report.requests_accepted += 1
        return
    causes = INIT_REFUSALS if isinstance(request, InitTarget.Request) else CANCEL_REFUSALS
    report.request_refusals[refusal_cause(response.message, causes)] += 1


# ---------------------------------------------------------------------------------------- run
def machine_description() -> str:
    model = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                  if line.startswith('model name')), platform.processor() or 'unknown CPU')
    import os
    return f'{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}'


def fuzz(images: int, requests_count: int, checkpoint: Path, max_pixels: int = 1_000_000,
         rss_limit_mb: float = 2000.0, seed: int = 0, compressed_share: float = 0.25,
         progress: bool = True) -> FuzzReport:
    """Fuzz a fresh raw-transport node with raw images and all requests, then a fresh compressed-transport
    node with compressed images; FuzzFailure (or NodeError) on the first broken rule."""
    report = FuzzReport(rss_limit_mb=rss_limit_mb, machine=machine_description())
    compressed = int(round(images * compressed_share))
    started = time.monotonic()
    with large_frame_transport():
        _fuzz_node('raw', images - compressed, requests_count, checkpoint, max_pixels, seed, report, progress)
        if compressed:
            _fuzz_node('compressed', compressed, 0, checkpoint, max_pixels, seed + 1_000_000, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _fuzz_node(transport: str, images: int, requests_count: int, checkpoint: Path, max_pixels: int, seed: int,
               report: FuzzReport, progress: bool) -> None:
    """Start a node for `transport`, send it the inputs, check it, stop it."""
    node = NodeProcess({'model.checkpoint': checkpoint, 'model.device': 'cpu', 'input.qos': 'reliable',
                        'input.transport': transport, 'input.max_image_pixels': max_pixels,
                        'output.diagnostics_period': 0.5})
    peer = NodeClient(node.namespace, camera_qos='reliable', compressed=transport == 'compressed')
    local_refusals: set[str] = set()
    target = (report.images_sent + images, report.requests_sent + requests_count)
    strategy = compressed_images(max_pixels) if transport == 'compressed' else raw_images(max_pixels)
    try:
        peer.wait_for_node(node=node)
        report.rss_start_mb = max(report.rss_start_mb, node.rss_mb())
        rounds = 0
        while report.images_sent < target[0] or report.requests_sent < target[1]:
            _fuzz_round(node, peer, strategy, target, max_pixels, seed + rounds, report, local_refusals, progress)
            rounds += 1
        _wait_until_settled(node, peer, report)
        _check_node_refusals(node, local_refusals, report)
        report.rss_peak_mb = max(report.rss_peak_mb, node.peak_rss_mb())
        if not node.alive():
            raise FuzzFailure(f'the {transport} node died:\n{node.log_tail()}')
    finally:
        peer.close()
        code = node.stop()
    if code != 0:
        raise FuzzFailure(f'the {transport} node exited with {code}:\n{node.log_tail()}')
    if report.rss_peak_mb > report.rss_limit_mb:
        raise FuzzFailure(f'peak RSS {report.rss_peak_mb:.0f} MiB is over the bound of '
                          f'{report.rss_limit_mb:.0f} MiB')


def _fuzz_round(node, peer, strategy, target, max_pixels, round_seed, report, local_refusals, progress) -> None:
    """One hypothesis run of up to the remaining number of examples."""
    remaining = max(target[0] - report.images_sent, target[1] - report.requests_sent)

    @hypothesis_seed(round_seed)
    @settings(max_examples=remaining, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(recipe=strategy, request=requests(), frame_id=st.text(max_size=20),
           sec=st.integers(0, 2**31 - 1), nanosec=st.integers(0, 999_999_999))
    def step(recipe, request, frame_id, sec, nanosec) -> None:
        if report.images_sent < target[0]:
            image = recipe.build()
            image.header.frame_id = frame_id
            set_stamp(image.header.stamp, sec * 1_000_000_000 + nanosec)
            reason = refusal_here(image, max_pixels)
            if reason is not None:
                report.images_refused_here += 1
                report.image_refusals[image_cause(reason)] += 1
                local_refusals.add(reason)
            peer.publish_message(image)
            report.images_sent += 1
            report.image_bytes_sent += len(image.data)
        if report.requests_sent < target[1]:
            client = peer.init_client if isinstance(request, InitTarget.Request) else peer.cancel_client
            check_request(request, peer.call(client, request, timeout=60), report)
            report.requests_sent += 1
        done = report.images_sent + report.requests_sent
        if done % 500 == 0:
            rss = node.rss_mb()
            if not node.alive():
                raise FuzzFailure(f'the node died after {done} inputs:\n{node.log_tail()}')
            if rss > report.rss_limit_mb:
                raise FuzzFailure(f'RSS {rss:.0f} MiB is over the bound of {report.rss_limit_mb:.0f} MiB '
                                  f'after {done} inputs')
            if progress:
                print(f'  {report.images_sent} images, {report.requests_sent} requests; RSS {rss:.0f} MiB',
                      flush=True)

    step()


def _wait_until_settled(node: NodeProcess, peer: NodeClient, report: FuzzReport) -> None:
    """Until the node's counters stop moving (it has handled what was sent)."""
    last, steady_since = None, time.monotonic()
    while time.monotonic() - steady_since < 2.0:
        values = peer.latest_diagnostics()
        current = (values.get('frames_received'), values.get('frames_rejected'))
        if current != last:
            last, steady_since = current, time.monotonic()
        if not node.alive():
            raise FuzzFailure(f'the node died:\n{node.log_tail()}')
        time.sleep(0.1)
    report.node_frames_received += int(last[0] or 0)
    report.node_frames_rejected += int(last[1] or 0)


def _check_node_refusals(node: NodeProcess, local_refusals: set[str], report: FuzzReport) -> None:
    """Every refusal the node logged is one the conversion code gives for a message sent."""
    logged = re.findall(r'skipped a camera frame: (.*)', node.log())
    report.node_refusals_logged += len(logged)
    unexplained = [reason for reason in logged if reason not in local_refusals]
    if unexplained:
        raise FuzzFailure(f'the node refused frames for reasons not expected: {unexplained[:3]}')
    if report.node_frames_rejected > report.images_refused_here:
        raise FuzzFailure(f'the node rejected {report.node_frames_rejected} frames, but only '
                          f'{report.images_refused_here} of those sent are invalid')
    for line in node.log().splitlines():
        if 'Traceback' in line or 'internal error' in line:
            raise FuzzFailure(f'the node logged an internal error:\n{node.log_tail(40)}')


def print_report(report: FuzzReport) -> None:
    print(f'\nmachine: {report.machine}')
    print(f'{report.images_sent} images ({report.image_bytes_sent / 1e6:.1f} MB) and {report.requests_sent} '
          f'requests in {report.seconds:.1f} s')
    print(f'images: {report.images_refused_here} invalid (refused by the conversion code here); the node '
          f'counted {report.node_frames_received} received and {report.node_frames_rejected} rejected, and '
          f'logged {report.node_refusals_logged} refusals (throttled), each an expected one')
    for cause, count in report.image_refusals.most_common(12):
        print(f'  {count:6d}  {cause}')
    print(f'requests: {report.requests_accepted} accepted; refused by cause:')
    for cause, count in report.request_refusals.most_common():
        print(f'  {count:6d}  {cause}')
    print(f'node RSS: {report.rss_start_mb:.0f} MiB after start, peak {report.rss_peak_mb:.0f} MiB '
          f'(bound {report.rss_limit_mb:.0f} MiB)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=10_000)
    parser.add_argument('--requests', type=int, default=10_000)
    parser.add_argument('--max-pixels', type=int, default=1_000_000,
                        help='the node\'s input.max_image_pixels, and the largest real frame sent')
    parser.add_argument('--rss-limit-mb', type=float, default=2000.0)
    parser.add_argument('--checkpoint', type=Path, help='a STARK checkpoint (default: untrained --variant)')
    parser.add_argument('--variant', default='lite')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', type=Path, help='also write the figures here')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = args.checkpoint or untrained_checkpoint(args.variant, Path(scratch))
        try:
            report = fuzz(args.images, args.requests, checkpoint, args.max_pixels, args.rss_limit_mb, args.seed)
        except FuzzFailure as failure:
            print(f'FAILED: {failure}', file=sys.stderr)
            return 1
    print_report(report)
    if args.json:
        figures = {name: dict(value) if isinstance(value, Counter) else value
                   for name, value in vars(report).items()}  # asdict would rebuild a Counter wrongly
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
