"""The tracker node as users run it: installed executable, params file, real DDS between processes.

The model is the small 'lite' variant with untrained (seeded) weights, so these tests check the
plumbing and the model's real output shapes and ranges, not tracking accuracy.
"""
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image

from stark_ros.driver import NodeClient, NodeProcess
from stark_ros.frame_buffer import set_stamp
from stark_ros.msg import TargetStatus
from stark_training.synthetic import make_sequence

from node_session import finish, show, stamp, start, write_lite_checkpoint

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 320, 240
FRAME_PERIOD_S = 0.2  # 5 Hz: a 2-core CI machine keeps up with two targets on the lite model



@pytest.fixture(scope='module')
def lite_checkpoint(tmp_path_factory) -> Path:
    return write_lite_checkpoint(tmp_path_factory.mktemp('model'), seed=7)


@pytest.fixture(scope='module')
def sequence():
    return make_sequence(num_frames=40, width=WIDTH, height=HEIGHT, num_targets=2, seed=3, target_size=40)




@pytest.fixture(scope='module')
def running(lite_checkpoint):
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu',
                        'tracking.max_targets': 2, 'tracking.lost_threshold': 0.0,
                        'tracking.lost_patience': 3, 'tracking.frame_buffer_size': 10})
    yield node, peer
    finish(node, peer)



def play(peer: NodeClient, sequence, indices) -> list:
    """Publish frames at 1 / FRAME_PERIOD_S Hz; returns their headers."""
    headers = []
    for index in indices:
        headers.append(peer.publish(sequence.frames[index], stamp(index)))
        time.sleep(FRAME_PERIOD_S)
    return headers


def test_refuses_init_before_any_frame(lite_checkpoint):
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu'})
    try:
        response = peer.init_target((10, 10, 40, 40))
        assert not response.success
        assert response.message == f'no camera frame has been received yet on {node.namespace}/image (1 publisher(s))'
    finally:
        finish(node, peer)


def test_tracks_two_targets_with_image_headers_ids_and_labels(running, sequence):
    node, peer = running
    play(peer, sequence, range(0, 4))
    assert show(peer, sequence, 4).detections == [], 'no target yet: an empty array per frame'

    first = peer.init_target(sequence.boxes[2][0], stamp(2), target_id='cup', label='mug')
    assert first.success and first.target_id == 'cup', first.message
    assert 'on the frame stamped 1700000000.200000000' in first.message
    second = peer.init_target(sequence.boxes[4][1])  # latest frame, fresh id, default label
    assert second.success and second.target_id.startswith('target-'), second.message

    # Each frame waits for its answer, so that a busy shared CPU cannot starve the tracker of frames.
    headers = [show(peer, sequence, index).header for index in range(5, 25)]
    published = {(h.stamp.sec, h.stamp.nanosec): h.frame_id for h in headers}
    answered = [peer.detection_for(stamp(i)) for i in range(5, 25)]
    answered = [message for message in answered if message is not None]
    assert len(answered) >= 5, 'frames get results (the newest wins when the node is busy)'
    for message in answered:
        key = (message.header.stamp.sec, message.header.stamp.nanosec)
        assert published[key] == message.header.frame_id == 'camera'
        assert {d.id for d in message.detections} == {'cup', second.target_id}
        for detection in message.detections:
            assert detection.header == message.header
            hypothesis = detection.results[0].hypothesis
            assert hypothesis.class_id == ('mug' if detection.id == 'cup' else 'target')
            assert 0.0 <= hypothesis.score <= 1.0
            box = detection.bbox
            assert 10 <= box.size_x <= WIDTH and 10 <= box.size_y <= HEIGHT
            assert 0 <= box.center.position.x - box.size_x / 2 and box.center.position.x + box.size_x / 2 <= WIDTH + 1e-6
            assert 0 <= box.center.position.y - box.size_y / 2 and box.center.position.y + box.size_y / 2 <= HEIGHT + 1e-6

    states = [t.state for s in peer.statuses for t in s.targets if t.target_id == 'cup']
    assert states[0] == TargetStatus.IDLE and TargetStatus.TRACKING in states
    assert states.index(TargetStatus.TRACKING) > 0 and TargetStatus.LOST not in states
    last = peer.statuses[-1]
    assert last.frames_received >= 20 and last.frames_processed >= len(answered)  # best effort may drop one
    assert last.frames_received - last.frames_processed - last.frames_dropped in (0, 1), 'every frame accounted for'
    assert max(t.frames_tracked for t in last.targets if t.target_id == 'cup') >= 10


def test_lost_after_patience_and_recovery_with_runtime_thresholds(running, sequence):
    node, peer = running
    assert peer.set_parameter('tracking.lost_threshold', 1.0).successful  # no score reaches 1
    play(peer, sequence, range(25, 31))
    peer.wait_until(lambda: any(t.state == TargetStatus.LOST for s in peer.statuses[-3:] for t in s.targets),
                    what='a LOST target')
    lost = [t for t in peer.statuses[-1].targets if t.target_id == 'cup'][0]
    assert lost.frames_below_threshold >= 3
    assert peer.set_parameter('tracking.lost_threshold', 0.0).successful
    assert peer.set_parameter('tracking.search_factor', 3.0).successful  # from the next frame, targets kept
    play(peer, sequence, range(31, 34))
    peer.wait_until(lambda: all(t.state == TargetStatus.TRACKING for t in peer.statuses[-1].targets),
                    what='recovery to TRACKING')

    refused = peer.set_parameter('input.image_topic', 'elsewhere')
    assert not refused.successful and 'only be set at start-up' in refused.reason
    refused = peer.set_parameter('tracking.search_factor', -1.0)
    assert not refused.successful and 'below the minimum 0.0' in refused.reason
    refused = peer.set_parameter('tracking.max_targets', 0)
    assert not refused.successful and 'below the minimum 1' in refused.reason
    refused = peer.set_parameter('model.checkpoint', '/nonexistent/model.pth.tar')
    assert not refused.successful and 'does not exist' in refused.reason
    assert peer.init_target((10, 10, 40, 40), target_id='cup').success, 'the old model is still in use'


@pytest.mark.parametrize('box, stamp_ns, message', [
    ((WIDTH + 5, 10, 20, 20), 0, 'lies outside the 320x240 image'),
    ((-50, -50, 20, 20), 0, 'lies outside'),
    ((10, 10, 0, 20), 0, 'size 0x20 must be positive'),
    ((10, 10, -4, 20), 0, 'must be positive'),
    ((10, 10, math.nan, 20), 0, 'non-finite'),
    ((math.inf, 10, 10, 20), 0, 'non-finite'),
    ((10, 10, 20, 20), 123_000_000_456, 'no frame with stamp 123.000000456 in the buffer'),
])
def test_bad_init_requests_are_refused_with_the_reason(running, box, stamp_ns, message):
    node, peer = running
    response = peer.init_target(box, stamp_ns, target_id='cup')
    assert not response.success and message in response.message and response.target_id == ''


def test_target_limit_ids_and_cancellation(running, sequence):
    node, peer = running
    peer.cancel(cancel_all=True)
    assert peer.init_target((10, 10, 40, 40), target_id='a').success
    assert peer.init_target((100, 50, 40, 40), target_id='b').success
    third = peer.init_target((200, 50, 40, 40), target_id='c')
    assert not third.success and 'tracking.max_targets = 2' in third.message
    assert peer.set_parameter('tracking.max_targets', 3).successful
    assert peer.init_target((200, 50, 40, 40), target_id='c').success, 'the limit changes at run time'
    assert peer.set_parameter('tracking.max_targets', 2).successful
    assert peer.cancel('c').success
    assert not peer.init_target((1, 1, 5, 5), target_id='x' * 200).success

    assert peer.cancel('nobody').message == "no target 'nobody' (tracking: a, b)"
    assert peer.cancel('a', cancel_all=True).message == 'give either target_id or cancel_all, not both'
    assert not peer.cancel().success
    cancelled = peer.cancel('a')
    assert cancelled.success and list(cancelled.cancelled_ids) == ['a']
    assert [d.id for d in show(peer, sequence, 34).detections] == ['b']
    assert list(peer.cancel(cancel_all=True).cancelled_ids) == ['b']
    assert show(peer, sequence, 35).detections == []


def bad_images() -> list[Image]:
    good = dict(height=4, width=4, encoding='rgb8', step=12, data=bytes(48))
    variants = [dict(step=11), dict(data=bytes(20)), dict(data=b''), dict(encoding='bayer_grbg8'),
                dict(width=0, step=0, data=b''), dict(encoding='mono8')]  # mono8 with a 12-byte step is fine
    images = []
    for change in variants:
        fields = {**good, **change}
        image = Image(height=fields['height'], width=fields['width'], encoding=fields['encoding'],
                      step=fields['step'])
        image.data = fields['data']
        images.append(image)
    return images


def test_defective_images_are_skipped_and_counted(running, sequence):
    node, peer = running
    for image in bad_images():
        image.header.stamp.sec = 99
        peer.publish_message(image)
        time.sleep(0.05)
    show(peer, sequence, 36)  # a good frame after the bad ones
    peer.wait_until(lambda: int(peer.latest_diagnostics().get('frames_rejected', 0)) >= 5,
                    timeout=10, what='diagnostics counting the rejected frames')
    log = node.log()
    assert 'skipped a camera frame: step 11 is smaller than width 4' in log
    assert node.alive()


def test_diagnostics_report_figures_and_model(running):
    node, peer = running
    peer.wait_until(lambda: 'model_ms_p50' in peer.latest_diagnostics(), timeout=10,
                    what='diagnostics with stage timings')
    values = peer.latest_diagnostics()
    assert values['variant'] == 'lite' and values['device'] == 'cpu' and values['backend'] == 'pytorch'
    for key in ('input_fps', 'processed_fps', 'latency_p50_ms', 'latency_p95_ms', 'latency_p99_ms',
                'conversion_ms_p50', 'crop_ms_p50', 'model_ms_p50', 'publish_ms_p50', 'drop_rate'):
        assert math.isfinite(float(values[key])), key
    assert values['level'] in (DiagnosticStatus.OK, DiagnosticStatus.WARN)


def test_unloadable_checkpoint_keeps_the_node_up_until_a_good_one_is_set(tmp_path, lite_checkpoint, sequence):
    broken = tmp_path / 'broken.pth.tar'
    broken.write_bytes(lite_checkpoint.read_bytes()[:5000])
    node, peer = start({'model.checkpoint': broken, 'model.device': 'cpu', 'tracking.max_target': 3})
    try:
        refused = peer.init_target(sequence.boxes[0][0])
        assert not refused.success and 'cannot load model' in refused.message and 'truncated' in refused.message
        peer.wait_until(lambda: peer.latest_diagnostics().get('level') == DiagnosticStatus.ERROR,
                        timeout=10, what='an ERROR diagnostic')
        assert 'unknown parameter tracking.max_target (did you mean tracking.max_targets?)' in node.log()
        assert peer.set_parameter('model.checkpoint', str(lite_checkpoint)).successful
        peer.wait_for_model(node=node)  # loads in the background
        show(peer, sequence, 1)
        accepted = peer.init_target(sequence.boxes[1][0], stamp(1))
        assert accepted.success, accepted.message
    finally:
        finish(node, peer)


def test_exit_on_load_failure_ends_the_plain_node_with_status_1(tmp_path):
    node = NodeProcess({'model.checkpoint': tmp_path / 'missing.pth.tar', 'model.device': 'cpu',
                        'model.exit_on_load_failure': True})
    try:
        code = node.process.wait(timeout=60)
    finally:
        node.stop()
    assert code == 1, f'status {code}:\n{node.log()}'
    assert 'exiting with status 1 (model.exit_on_load_failure is true): cannot load model' in node.log()
    assert 'Traceback' not in node.log()


def test_target_ids_advance_only_on_success(running, sequence):
    node, peer = running
    peer.cancel(cancel_all=True)
    show(peer, sequence, 30)
    first = peer.init_target(sequence.boxes[30][0], stamp(30))
    assert first.success and first.target_id.startswith('target-'), first.message
    number = int(first.target_id.rsplit('-', 1)[1])
    for box in ((1000, 1000, 10, 10), (10, 10, 0, 20), (10, 10, math.nan, 20)):
        refused = peer.init_target(box, stamp(30))
        assert not refused.success and refused.target_id == ''
    second = peer.init_target(sequence.boxes[30][1], stamp(30))
    assert second.success and second.target_id == f'target-{number + 1}', 'refusals used no ids up'
    peer.cancel(cancel_all=True)


def test_compressed_transport(lite_checkpoint, sequence):
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu',
                        'input.transport': 'compressed', 'tracking.lost_threshold': 0.0}, compressed=True)
    try:
        def publish(index: int) -> None:
            message = CompressedImage(format='jpeg')
            ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(sequence.frames[index], cv2.COLOR_RGB2BGR))
            message.data = encoded.tobytes()
            set_stamp(message.header.stamp, stamp(index))
            peer.publish_message(message)
        show(peer, sequence, 0, send=lambda: publish(0))
        assert peer.init_target(sequence.boxes[0][0], stamp(0), label='jpeg').success
        for index in range(1, 3):
            publish(index)
            time.sleep(FRAME_PERIOD_S)
        tracked = show(peer, sequence, 3, send=lambda: publish(3))
        assert [d.results[0].hypothesis.class_id for d in tracked.detections] == ['jpeg']
    finally:
        finish(node, peer)


# ------------------------------------------------------------------------------------------ fuzz
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from stark_ros.image_conversion import SUPPORTED_ENCODINGS  # noqa: E402
from stark_ros.srv import CancelTarget, InitTarget  # noqa: E402

TEXT = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'), max_size=300)
NUMBER = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-50, 400)
IMAGES = st.builds(
    dict,
    encoding=st.sampled_from(SUPPORTED_ENCODINGS + ('', 'bayer_rggb8', '32FC1', 'x' * 40)),
    width=st.integers(0, 48) | st.sampled_from([2**31 - 1, 2**32 - 1]),
    height=st.integers(0, 48) | st.sampled_from([2**31 - 1]),
    step=st.integers(0, 300) | st.sampled_from([2**32 - 1]),
    is_bigendian=st.integers(0, 1),
    data=st.binary(max_size=3000),
)
REQUESTS = st.builds(
    dict, x=NUMBER, y=NUMBER, width=NUMBER, height=NUMBER, sec=st.integers(-2**31, 2**31 - 1),
    nanosec=st.integers(0, 2**32 - 1), target_id=TEXT, label=TEXT)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(image=IMAGES, request=REQUESTS, cancel_id=TEXT, cancel_all=st.booleans())
def test_fuzzed_images_and_requests_never_break_the_node(running, image, request, cancel_id, cancel_all):
    node, peer = running
    message = Image(height=image['height'], width=image['width'], encoding=image['encoding'],
                    step=image['step'], is_bigendian=image['is_bigendian'])
    message.data = image['data']
    peer.publish_message(message)
    init = InitTarget.Request(x=request['x'], y=request['y'], width=request['width'], height=request['height'],
                              target_id=request['target_id'], label=request['label'])
    init.stamp.sec, init.stamp.nanosec = request['sec'], request['nanosec']
    response = peer.call(peer.init_client, init)
    assert isinstance(response.success, bool) and response.message
    assert bool(response.target_id) == response.success
    cancelled = peer.call(peer.cancel_client, CancelTarget.Request(target_id=cancel_id, cancel_all=cancel_all))
    assert isinstance(cancelled.success, bool) and cancelled.message
    assert node.alive(), node.log()


def test_node_still_works_after_fuzzing(running, sequence):
    node, peer = running
    peer.cancel(cancel_all=True)
    show(peer, sequence, 37)
    assert peer.init_target(sequence.boxes[37][0], stamp(37), target_id='after').success
    play(peer, sequence, [38])
    assert [d.id for d in show(peer, sequence, 39).detections] == ['after']
    assert 'internal error' not in node.log() and 'Traceback' not in node.log()


# ------------------------------------------------------------------------------------ stark-init
import shutil  # noqa: E402
import subprocess  # noqa: E402


def stark_init(namespace: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    executable = shutil.which('stark-init')
    assert executable, 'stark-init is not on PATH (install/stark_ros/bin)'
    return subprocess.run([executable, '--namespace', namespace, '--timeout', '20', *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_stark_init_command_line_client(running, sequence):
    node, peer = running
    peer.cancel(cancel_all=True)
    show(peer, sequence, 20)
    x, y, w, h = sequence.boxes[20][0]
    started = stark_init(node.namespace, str(x), str(y), str(w), str(h), '--label', 'cli', '--id', 'cli-1',
                         '--stamp', '1700000002.0')
    assert started.returncode == 0, started.stderr
    assert "tracking 'cli-1' (label 'cli')" in started.stdout and 'stamped 1700000002.000000000' in started.stdout
    assert started.stdout.count('cli-1') == 1, f'the id is printed once: {started.stdout}'
    refused = stark_init(node.namespace, '1000', '1000', '10', '10')
    assert refused.returncode == 1 and 'refused' in refused.stderr and 'lies outside' in refused.stderr
    cancelled = stark_init(node.namespace, '--cancel-all')
    assert cancelled.returncode == 0 and 'cancelled 1 targets' in cancelled.stdout
    no_display = stark_init(node.namespace, '--draw', env={k: v for k, v in os.environ.items()
                                                           if k not in ('DISPLAY', 'WAYLAND_DISPLAY')})
    assert no_display.returncode == 2 and 'needs a display' in no_display.stderr
    usage = stark_init(node.namespace, '1', '2', '3')
    assert usage.returncode == 2 and 'a box is 4 numbers' in usage.stderr
    unreachable = stark_init('/nobody_here', '--timeout', '1', '--cancel-all')
    assert unreachable.returncode == 2 and 'is not available' in unreachable.stderr


def test_debug_image_only_when_enabled_and_subscribed(running, sequence):
    node, peer = running
    received = []
    subscription = peer.node.create_subscription(Image, 'stark/debug_image', received.append, 10)
    try:
        peer.cancel(cancel_all=True)
        show(peer, sequence, 21)
        assert peer.init_target(sequence.boxes[21][0], stamp(21), target_id='drawn').success
        play(peer, sequence, [22])
        show(peer, sequence, 23)
        assert received == [], 'off by default'
        assert peer.set_parameter('output.debug_image', True).successful
        play(peer, sequence, [24, 25])
        peer.wait_until(lambda: len(received) >= 1, timeout=10, what='a debug image')
        image = received[-1]
        assert (image.encoding, image.width, image.height) == ('rgb8', WIDTH, HEIGHT)
        assert stamp_of(image) in (stamp(24), stamp(25)), 'debug image keeps the camera header'
        drawn = np.frombuffer(bytes(image.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        original = sequence.frames[24 if stamp_of(image) == stamp(24) else 25]
        assert (drawn != original).any(axis=2).sum() > 50, 'boxes are drawn on the frame'
    finally:
        peer.set_parameter('output.debug_image', False)
        peer.node.destroy_subscription(subscription)
        peer.cancel(cancel_all=True)


def stamp_of(message) -> int:
    return message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
