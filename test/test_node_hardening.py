"""The node's defences and conventions (issue 7), on the installed executable over real DDS:
compressed transport under a remap, warnings when no frames arrive, diagnostics that recover,
CPU threads on the inference thread, parameter validation, background model reloads, the frame
size cap. The model is the 'lite' variant with untrained (seeded) weights.
"""
import hashlib
import os
import time
import uuid
from pathlib import Path

import cv2
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image

from stark_model import load_model, save_checkpoint
from stark_ros.driver import NodeClient, NodeError
from stark_ros.frame_buffer import set_stamp
from stark_training.synthetic import make_sequence

from node_session import finish, show, stamp, start, write_lite_checkpoint

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 320, 240



@pytest.fixture(scope='module')
def lite_checkpoint(tmp_path_factory) -> Path:
    return write_lite_checkpoint(tmp_path_factory.mktemp('model'), seed=7)


@pytest.fixture(scope='module')
def sequence():
    return make_sequence(num_frames=40, width=WIDTH, height=HEIGHT, num_targets=1, seed=5, target_size=40)





def feed_until(peer: NodeClient, sequence, condition, what: str, timeout: float = 30.0, node=None) -> None:
    """Keep publishing good frames (5 Hz) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        peer.publish(sequence.frames[index % len(sequence.frames)], stamp(index % len(sequence.frames)))
        index += 1
        try:
            peer.wait_until(condition, timeout=0.2, what=what, node=node)
            return
        except NodeError:
            if node is not None and not node.alive():
                raise
    raise AssertionError(f'timed out after {timeout:g} s waiting for {what}; last diagnostics: '
                         f'{peer.latest_diagnostics()}\n{node.log_tail() if node else ""}')


def diagnostics_say(peer: NodeClient, text: str, level: int | None = None):
    def check() -> bool:
        latest = peer.latest_diagnostics()
        return text in latest.get('message', '') and (level is None or latest.get('level') == level)
    return check


def jpeg(sequence, index: int) -> CompressedImage:
    message = CompressedImage(format='jpeg')
    ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(sequence.frames[index], cv2.COLOR_RGB2BGR))
    message.data = encoded.tobytes()
    set_stamp(message.header.stamp, stamp(index))
    return message


# ------------------------------------------------------------------------------ compressed + remap
def test_compressed_transport_follows_a_remap_of_the_base_topic(lite_checkpoint, sequence):
    base = f'/cam_{uuid.uuid4().hex[:8]}/img'
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu', 'model.cpu_threads': 1,
                        'input.transport': 'compressed', 'tracking.lost_threshold': 0.0},
                       {'extra_ros_args': ('-r', f'image:={base}')}, compressed=True,
                       camera_topic=f'{base}/compressed')
    try:
        assert f'subscribed to {base}/compressed (compressed' in node.log()
        show(peer, sequence, 0, send=lambda: peer.publish_message(jpeg(sequence, 0)), node=node)
        started = peer.init_target(sequence.boxes[0][0], stamp(0), label='remapped')
        assert started.success, started.message
        tracked = show(peer, sequence, 1, send=lambda: peer.publish_message(jpeg(sequence, 1)), node=node)
        assert [d.results[0].hypothesis.class_id for d in tracked.detections] == ['remapped']
    finally:
        finish(node, peer)


# ------------------------------------------------------------------------ a camera topic nobody publishes
def test_a_camera_topic_without_publishers_is_named_with_the_remap_to_use(lite_checkpoint):
    """The camera publishes elsewhere (a wrong image_topic): the node's log, /diagnostics and the init
    refusal name the subscribed topic, its 0 publishers, the topic that has a camera, and the remap."""
    elsewhere = f'/cam_{uuid.uuid4().hex[:8]}/image_raw'
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu',
                        'input.no_frames_warning_s': 0.5, 'output.diagnostics_period': 0.3},
                       camera_topic=elsewhere, ready=lambda client: client.init_client.service_is_ready())
    try:
        subscribed = f'{node.namespace}/image'
        peer.wait_until(lambda: peer.camera.get_subscription_count() == 0 and elsewhere in
                        peer.latest_diagnostics().get('message', ''), timeout=20,
                        what='a WARN that names the topic with a publisher', node=node)
        message = peer.latest_diagnostics()['message']
        assert peer.latest_diagnostics()['level'] == DiagnosticStatus.WARN
        for text in (f'on {subscribed}: it has 0 publishers', f'image topics with publishers: {elsewhere}',
                     'image_topic:=/your/camera (ros2 launch)', '--ros-args -r image:=/your/camera (ros2 run)'):
            assert text in message, message
        assert 'no frame arrived for' in node.log() and f'on {subscribed}: it has 0 publishers' in node.log()
        refused = peer.init_target((10, 10, 40, 40))
        assert not refused.success
        assert refused.message.startswith(f'no camera frame has been received yet on {subscribed}: it has 0 '
                                          'publishers'), refused.message
        assert '-r image:=/your/camera' in refused.message
    finally:
        finish(node, peer)


# ------------------------------------------------------------------ one reliable node, many checks
@pytest.fixture(scope='module')
def reliable(lite_checkpoint, tmp_path_factory):
    """A node on reliable QoS that warns after 1 s without frames, with one threaded inference,
    a QoS override for its camera subscription and one for a topic it does not have."""
    namespace = f'/stark_{uuid.uuid4().hex[:8]}'
    overrides = tmp_path_factory.mktemp('params') / 'qos.yaml'
    overrides.write_text('/**:\n  ros__parameters:\n    qos_overrides:\n'
                         f'      {namespace}/image:\n        subscription:\n          depth: 7\n'
                         f'      {namespace}/imgae:\n        subscription:\n          depth: 3\n')
    node, peer = start({'model.checkpoint': lite_checkpoint, 'model.device': 'cpu', 'model.cpu_threads': 1,
                        'input.qos': 'reliable', 'input.no_frames_warning_s': 1.0,
                        'output.diagnostics_period': 0.3, 'tracking.lost_threshold': 0.0,
                        'model.update_profile': 'lasott'},
                       {'namespace': namespace, 'extra_ros_args': ('--params-file', str(overrides)),
                        # OpenMP threads that sleep rather than spin when idle: 2 threads on a busy 2-core CI machine
                        'environment': {'OMP_WAIT_POLICY': 'PASSIVE'}},
                       camera_qos='reliable')
    yield node, peer
    finish(node, peer)


def omp_worker_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process."""
    ticks = os.sysconf('SC_CLK_TCK')
    times = {}
    for task in Path(f'/proc/{pid}/task').iterdir():
        try:
            fields = (task / 'stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        times[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return times


def test_cpu_threads_changed_at_run_time_reach_the_inference_thread(reliable, sequence):
    node, peer = reliable
    feed_until(peer, sequence, lambda: peer.latest_diagnostics().get('cpu_threads') == '1',
               'one CPU thread in force', node=node)
    # cpu_threads is in force before any frame arrives (the inference thread sets it at once): under
    # load the init request used to overtake the first frame. Wait until the node answered frame 0.
    show(peer, sequence, 0, node=node)
    started = peer.init_target(sequence.boxes[0][0], stamp(0), target_id='threads')
    assert started.success, started.message
    for index in range(1, 4):
        show(peer, sequence, index, node=node)
    before = omp_worker_cpu(node.process.pid)

    assert peer.set_parameter('model.cpu_threads', 2).successful
    for index in range(4, 10):
        show(peer, sequence, index, node=node)
    after = omp_worker_cpu(node.process.pid)
    new_busy = {tid: cpu for tid, cpu in after.items() if tid not in before and cpu >= 0.05}
    assert new_busy, ('after model.cpu_threads 1 -> 2, inference should run on a second (OpenMP) thread; '
                      f'threads new since: { {t: c for t, c in after.items() if t not in before} }')
    feed_until(peer, sequence, lambda: peer.latest_diagnostics().get('cpu_threads') == '2',
               'diagnostics reporting the 2 threads in force', node=node)
    assert peer.set_parameter('model.cpu_threads', 1).successful
    assert peer.cancel(cancel_all=True).success


def test_status_and_diagnostics_report_the_same_frame_rates(reliable, sequence):
    """TrackerStatus carries the rates measured for the latest /diagnostics: at 5 Hz input, every
    status after the first measurement repeats a diagnostics value (not a sample of its own)."""
    node, peer = reliable
    with peer._lock:
        first_status, first_diagnostics = len(peer.statuses), len(peer.diagnostics)
    for index in range(25):
        peer.publish(sequence.frames[index % len(sequence.frames)], stamp(index % len(sequence.frames)))
        time.sleep(0.2)
    time.sleep(0.5)
    with peer._lock:
        measured = [(float(d['input_fps']), float(d['processed_fps'])) for d in peer.diagnostics[first_diagnostics:]]
        reported = [(s.input_fps, s.processed_fps) for s in peer.statuses[first_status:]]
    assert len(measured) >= 5 and len(reported) >= 10, (measured, reported)
    later = reported[len(reported) // 3:]  # statuses after a few measurements at 5 Hz
    for input_fps, processed_fps in later:
        assert any(abs(input_fps - m_in) < 0.006 and abs(processed_fps - m_out) < 0.006 for m_in, m_out in measured), \
            f'status {input_fps:.3f}/{processed_fps:.3f} fps is none of the diagnostics values {measured}'
    assert 3.0 < sorted(m_in for m_in, _ in measured)[len(measured) // 2] < 7.0, measured


def test_no_frames_from_present_publishers_warn_with_the_cause(reliable, sequence):
    node, peer = reliable
    peer.wait_until(diagnostics_say(peer, 'no frame arrived', DiagnosticStatus.WARN), timeout=20,
                    what='a WARN about the silent publisher', node=node)
    message = peer.latest_diagnostics()['message']
    assert 'FASTDDS_DEFAULT_PROFILES_FILE=' in message and 'fastdds_large_frames.xml' in message, message
    assert 'but no frame arrived for' in node.log()

    best_effort = NodeClient(node.namespace, camera_qos='sensor_data')  # cannot match a reliable reader
    try:
        best_effort.wait_until(lambda: peer.camera.get_subscription_count() > 0, timeout=10)
        best_effort.publish(sequence.frames[0], stamp(0))
        peer.wait_until(diagnostics_say(peer, 'QoS mismatch', DiagnosticStatus.WARN), timeout=20,
                        what='a WARN naming the QoS mismatch', node=node)
        assert 'set input.qos to sensor_data' in peer.latest_diagnostics()['message']
    finally:
        best_effort.close()
    feed_until(peer, sequence, lambda: peer.latest_diagnostics().get('level') == DiagnosticStatus.OK,
               'OK once frames arrive', node=node)


def bad_image() -> Image:
    image = Image(height=4, width=4, encoding='rgb8', step=11)
    image.data = bytes(48)
    return image


def test_diagnostics_recover_after_rejected_frames_and_drops_are_no_fault(reliable, sequence):
    node, peer = reliable
    assert peer.set_parameter('output.diagnostics_window', 2.0).successful
    for _ in range(3):
        peer.publish_message(bad_image())
    peer.wait_until(diagnostics_say(peer, 'frames rejected in the last 2 s', DiagnosticStatus.WARN),
                    timeout=20, what='a WARN about rejected frames', node=node)
    assert 'step 11 is smaller than width 4' in peer.latest_diagnostics()['last_rejection']
    feed_until(peer, sequence, lambda: peer.latest_diagnostics().get('level') == DiagnosticStatus.OK,
               'diagnostics back to OK once the window passes', node=node)

    # A burst faster than inference: the newest frame wins and the others count as dropped.
    assert peer.init_target(sequence.boxes[0][0], target_id='burst').success
    before = int(peer.latest_diagnostics()['frames_dropped'])
    for index in range(30):
        peer.publish(sequence.frames[index], stamp(index))
    peer.wait_until(lambda: int(peer.latest_diagnostics()['frames_dropped']) > before, timeout=20,
                    what='dropped frames counted', node=node)
    feed_until(peer, sequence, lambda: peer.latest_diagnostics().get('level') == DiagnosticStatus.OK
               and peer.latest_diagnostics()['message'] == 'tracking', 'OK while dropping frames', node=node)
    assert peer.cancel(cancel_all=True).success


def test_frames_over_the_pixel_cap_are_refused_before_conversion(reliable, sequence):
    node, peer = reliable
    assert peer.set_parameter('input.max_image_pixels', WIDTH * HEIGHT - 1).successful
    try:
        feed_until(peer, sequence, lambda: 'over the cap' in peer.latest_diagnostics().get('last_rejection', ''),
                   'a refusal naming the cap', node=node)
        reason = peer.latest_diagnostics()['last_rejection']
        assert reason == (f'image is {WIDTH}x{HEIGHT} = {WIDTH * HEIGHT} pixels, over the cap of '
                          f'{WIDTH * HEIGHT - 1} (parameter input.max_image_pixels)')
        assert peer.latest_diagnostics()['level'] == DiagnosticStatus.WARN
        feed_until(peer, sequence, lambda: f'skipped a camera frame: {reason}' in node.log(),
                   'the refusal in the log (throttled to one per 5 s)', node=node)
        # A frame declaring a huge size with almost no data is refused for its size, not its data.
        huge = Image(height=100_000, width=100_000, encoding='rgb8', step=300_000)
        huge.data = bytes(16)
        peer.publish_message(huge)
        peer.wait_until(lambda: '100000x100000' in peer.latest_diagnostics().get('last_rejection', ''),
                        timeout=20, what='the 1e10-pixel frame refused', node=node)
    finally:
        assert peer.set_parameter('input.max_image_pixels', 7680 * 4320).successful
    show(peer, sequence, 3, node=node)


def test_parameters_are_validated_by_name(reliable, sequence):
    node, peer = reliable
    log = node.log()
    # Start-up: a bad profile falls back to the default, an override of a topic we lack is named.
    assert "parameter model.update_profile: 'lasott' is not one of" in log and '(did you mean lasot?)' in log
    assert f'parameter qos_overrides.{node.namespace}/imgae.subscription.depth is ignored' in log
    assert f'did you mean qos_overrides.{node.namespace}/image.subscription.depth?' in log
    assert f'subscribed to {node.namespace}/image (raw, reliable, depth 7)' in log, 'the valid override applies'

    refused = peer.set_parameter('tracking.lost_threshold', float('nan'))
    assert not refused.successful and refused.reason == 'parameter tracking.lost_threshold: nan is not a finite number'
    refused = peer.set_parameter('tracking.lost_threshold', float('inf'))
    assert not refused.successful and 'not a finite number' in refused.reason
    refused = peer.set_parameter('model.update_profile', 'got10k')
    assert not refused.successful and '(did you mean got10k_test?)' in refused.reason
    refused = peer.set_parameter('model.device', 'gpu')
    assert not refused.successful and 'is not one of auto, cpu, cuda, cuda:N' in refused.reason
    refused = peer.set_parameter('model.checkpoint_sha256', 'abc')
    assert not refused.successful and "'abc' is not 64 hex digits (or empty)" in refused.reason
    refused = peer.set_parameter('model.checkpoint', '/no/such/model.pth.tar')
    assert not refused.successful and 'does not exist' in refused.reason

    # A known profile applies at once and keeps the targets (no reload).
    show(peer, sequence, 5, node=node)
    assert peer.init_target(sequence.boxes[5][0], stamp(5), target_id='kept').success
    assert peer.set_parameter('model.update_profile', 'lasot').successful
    tracked = show(peer, sequence, 6, node=node)
    assert [d.id for d in tracked.detections] == ['kept']
    assert peer.latest_status().model_state == 'ready'
    assert peer.cancel(cancel_all=True).success


# ------------------------------------------------------------------------------ background reload
@pytest.fixture(scope='module')
def st50_checkpoint(tmp_path_factory) -> Path:
    """A large model (ResNet-50 STARK-ST), whose load and warm-up take seconds here."""
    torch.manual_seed(3)
    model = load_model(variant='st50', allow_untrained=True)
    return save_checkpoint(tmp_path_factory.mktemp('st50') / 'st50.pth.tar', model.network, model.variant)


def test_a_model_reload_runs_in_the_background(reliable, sequence, st50_checkpoint):
    node, peer = reliable
    show(peer, sequence, 7, node=node)
    assert peer.init_target(sequence.boxes[7][0], stamp(7), target_id='old').success
    result = peer.set_parameter('model.checkpoint', str(st50_checkpoint))
    assert result.successful, result.reason
    refused = peer.init_target((10, 10, 30, 30))  # a service answers at once, and says why it refuses
    assert not refused.success and 'is loading' in refused.message, refused.message
    # While the big model loads, frames are still tracked with the old one and services answer.
    loading_seen = []

    def status_while_loading() -> bool:
        status = peer.latest_status()
        if status is not None and status.model_state == 'loading':
            loading_seen.append([t.target_id for t in status.targets])
        return len(loading_seen) >= 2

    feed_until(peer, sequence, status_while_loading, 'statuses published during the reload', node=node)
    assert loading_seen[0] == ['old'], 'the old model keeps tracking until the new one is ready'
    peer.wait_for_model(timeout=180, node=node)
    # /diagnostics is periodic: its first report after the swap names the new model.
    peer.wait_until(lambda: (peer.latest_diagnostics() or {}).get('variant') == 'st50', timeout=30,
                    what='the new model in the diagnostics', node=node)
    assert 'targets dropped: old' in node.log()


# ------------------------------------------------------------------------------ hostile checkpoints
def test_torchscript_checkpoints_never_run_and_model_settings_work_without_a_model(lite_checkpoint, tmp_path, sequence):
    from hostile_files import write_torchscript_bomb
    start_marker, runtime_marker = tmp_path / 'went_off_at_start', tmp_path / 'went_off_at_run_time'
    bomb = write_torchscript_bomb(tmp_path / 'start.pth.tar', start_marker)
    runtime_bomb = write_torchscript_bomb(tmp_path / 'runtime.pth.tar', runtime_marker)
    node, peer = start({'model.checkpoint': bomb, 'model.device': 'cpu', 'model.cpu_threads': 1,
                        'output.diagnostics_period': 0.3})
    try:
        peer.wait_until(diagnostics_say(peer, f'cannot load model {bomb}', DiagnosticStatus.ERROR), timeout=30,
                        what='the refused TorchScript checkpoint in the diagnostics', node=node)
        assert 'TorchScript' in peer.latest_diagnostics()['message']
        refused = peer.init_target((1, 1, 5, 5))
        assert not refused.success and f'cannot load model {bomb}' in refused.message
        # With no model loaded, the other model settings can still be given first.
        assert peer.set_parameter('model.device', 'cpu').successful
        assert peer.set_parameter('model.precision', 'bf16').successful

        digest = hashlib.sha256(lite_checkpoint.read_bytes()).hexdigest()
        assert peer.set_parameter('model.checkpoint_sha256', '0' * 64).successful  # no checkpoint to check yet
        assert peer.set_parameter('model.checkpoint', str(lite_checkpoint)).successful
        peer.wait_until(diagnostics_say(peer, f'has sha256 {digest}, but {"0" * 64} is expected'), timeout=30,
                        what='the sha256 mismatch reported', node=node)
        assert peer.latest_status() is None or peer.latest_status().model_state != 'ready'
        assert peer.set_parameter('model.checkpoint_sha256', digest.upper()).successful
        peer.wait_for_model(node=node)
        assert peer.latest_diagnostics()['precision'] == 'bf16'

        assert peer.set_parameter('model.checkpoint_sha256', '').successful
        assert peer.set_parameter('model.checkpoint', str(runtime_bomb)).successful
        peer.wait_until(diagnostics_say(peer, 'the latest model change was not applied', DiagnosticStatus.WARN),
                        timeout=30, what='the refused run-time TorchScript checkpoint', node=node)
        assert 'TorchScript' in peer.latest_diagnostics()['message']
        assert peer.latest_diagnostics()['checkpoint'] == str(lite_checkpoint), 'the good model stays in use'
        show(peer, sequence, 0, node=node)
        assert peer.init_target(sequence.boxes[0][0], stamp(0)).success
    finally:
        finish(node, peer)
    assert not start_marker.exists() and not runtime_marker.exists(), 'a checkpoint ran its own code'
