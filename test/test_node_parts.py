"""The node's pure parts: frame history, target states, figures, parameter rules."""
import threading
import time

import numpy as np
import pytest

from stark_model import TargetResult
from stark_ros.frame_buffer import Frame, FrameBuffer, format_stamp
from stark_ros.node_stats import NodeStats, RateMeter
from stark_ros.parameters import SPECS, change_problem
from stark_ros.target_states import TargetBook, TargetState


def frame(stamp_ns: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), header=None, stamp_ns=stamp_ns, arrival=time.monotonic())


def test_newest_frame_wins_and_replaced_frames_count_as_dropped():
    buffer = FrameBuffer(capacity=3)
    assert buffer.push(frame(1)) is False
    assert buffer.push(frame(2)) is True  # frame 1 was never taken
    assert buffer.take_newest(timeout=0).stamp_ns == 2
    assert buffer.take_newest(timeout=0.01) is None
    assert buffer.push(frame(3)) is False


def test_frames_are_found_by_exact_stamp_within_the_history():
    buffer = FrameBuffer(capacity=3)
    with pytest.raises(LookupError, match='no camera frame has been received yet'):
        buffer.find(0)
    for stamp in (1_000_000_001, 2_000_000_002, 3_000_000_003, 4_000_000_004):
        buffer.push(frame(stamp))
    assert buffer.find(0).stamp_ns == 4_000_000_004
    assert buffer.find(2_000_000_002).stamp_ns == 2_000_000_002
    with pytest.raises(LookupError) as error:
        buffer.find(1_000_000_001)  # pushed out of the 3-frame history
    assert 'no frame with stamp 1.000000001' in str(error.value)
    assert '3 frames, stamps 2.000000002 to 4.000000004' in str(error.value)
    buffer.resize(1)
    with pytest.raises(LookupError):
        buffer.find(3_000_000_003)


def test_close_wakes_a_waiting_worker():
    buffer = FrameBuffer(capacity=2)
    taken = []
    worker = threading.Thread(target=lambda: taken.append(buffer.take_newest(timeout=30)))
    worker.start()
    buffer.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and taken == [None]


def test_format_stamp():
    assert format_stamp(12_000_000_005) == '12.000000005'


def result(target_id: str, score: float, frames: int) -> TargetResult:
    return TargetResult(target_id, (1.0, 2.0, 30.0, 40.0), score, frames)


def test_target_states_idle_tracking_lost_and_back():
    book = TargetBook()
    target = book.start('a', 'cup', (0, 0, 10, 10))
    assert target.state == TargetState.IDLE and target.label == 'cup'
    scores = [0.9, 0.1, 0.1, 0.1, 0.8, 0.1]
    states = []
    for frames, score in enumerate(scores, start=1):
        book.update({'a': result('a', score, frames)}, lost_threshold=0.5, lost_patience=3)
        states.append(book['a'].state)
    T, L = TargetState.TRACKING, TargetState.LOST
    assert states == [T, T, T, L, T, T]
    assert book['a'].frames_below_threshold == 1 and book['a'].frames_tracked == 6
    assert book['a'].box == (1.0, 2.0, 30.0, 40.0)


def test_zero_patience_loses_at_once_and_low_first_score_tracks_within_patience():
    book = TargetBook()
    book.start('a', '', (0, 0, 10, 10))
    book.start('b', '', (0, 0, 10, 10))
    book.update({'a': result('a', 0.1, 1)}, lost_threshold=0.5, lost_patience=0)
    book.update({'b': result('b', 0.1, 1)}, lost_threshold=0.5, lost_patience=2)
    assert book['a'].state == TargetState.LOST and book['b'].state == TargetState.TRACKING


def test_ids_labels_restart_and_removal():
    book = TargetBook()
    assert book.new_id() == book.new_id() == 'target-1', 'asking (a request that may be refused) uses no id up'
    book.start(book.new_id(), '', (0, 0, 1, 1))
    book.start('target-3', 'x', (0, 0, 1, 1))
    assert book.new_id() == 'target-2'
    book.start(book.new_id(), '', (0, 0, 1, 1))
    assert book.new_id() == 'target-4', 'ids in use are skipped'
    book.remove('target-1')
    book.remove('target-2')
    book.start('a', 'dog', (0, 0, 1, 1))
    book.update({'a': result('a', 0.9, 5)}, 0.5, 3)
    restarted = book.start('a', '', (5, 5, 1, 1))
    assert restarted.label == 'dog' and restarted.state == TargetState.IDLE and restarted.frames_tracked == 0
    assert book.start('b', '', (0, 0, 1, 1)).label == 'target'
    snapshot = book.snapshot()
    snapshot[0].label = 'changed'
    assert book['target-3'].label == 'x', 'snapshots are copies'
    assert book.remove('a') and not book.remove('a')
    book.update({'a': result('a', 0.9, 6)}, 0.5, 3)  # a result for a cancelled target is ignored
    assert 'a' not in book
    assert sorted(book.clear()) == ['b', 'target-3'] and len(book) == 0


def test_rates_and_latency_percentiles():
    meter = RateMeter(window=2.0)
    for index in range(11):
        meter.tick(100.0 + index * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert meter.rate(110.0) == 0.0, 'old events leave the window'
    stats = NodeStats()
    for index in range(100):
        stats.frame_received(10.0 + index / 30, dropped_pending=index % 10 == 9)
        stats.frame_processed(arrival=10.0 + index / 30, now=10.0 + index / 30 + (index + 1) / 1000)
    assert stats.snapshot(now=10.0 + 99 / 30).input_fps == 0.0, 'rates exist only once measured'
    assert stats.measure_rates(now=10.0 + 99 / 30)[0] == pytest.approx(30.0, rel=0.01)
    stats.frame_received(20.0, dropped_pending=False)
    figures = stats.snapshot(now=20.0)  # still the measured rates: /diagnostics and stark/status agree
    assert (figures.frames_received, figures.frames_processed, figures.frames_dropped) == (101, 100, 10)
    assert figures.drop_rate == pytest.approx(10 / 101)
    assert figures.latency_p50_ms == pytest.approx(50.5, abs=0.01)
    assert figures.latency_p99_ms == pytest.approx(99.01, abs=0.01)
    assert figures.input_fps == pytest.approx(30.0, rel=0.01)


def test_parameter_rules():
    assert SPECS['tracking.max_targets'].problem(0) == 'parameter tracking.max_targets: 0 is below the minimum 1'
    assert 'must be float, got str' in SPECS['tracking.lost_threshold'].problem('high')
    assert "'fp8' is not one of fp32, fp16, bf16" in SPECS['model.precision'].problem('fp8')
    assert SPECS['tracking.lost_patience'].problem(3) is None
    assert 'only be set at start-up' in change_problem('input.image_topic', 'other')
    assert change_problem('tracking.lost_threshold', 0.7) is None
    assert change_problem('tracking.nonsense', 1) == 'unknown parameter tracking.nonsense'
    assert change_problem('use_sim_time', True) is None


def test_rejected_frames_leave_the_recent_window_but_stay_in_the_totals():
    stats = NodeStats(rejection_window=2.0)
    stats.frame_rejected(100.0, 'step 11 is smaller than width 4 x 3 bytes for rgb8')
    stats.frame_rejected(101.0, 'encoding bayer is not supported')
    recent = stats.snapshot(now=101.5)
    assert (recent.frames_rejected, recent.recently_rejected) == (2, 2)
    assert recent.last_rejection == 'encoding bayer is not supported'
    assert stats.snapshot(now=102.5).recently_rejected == 1
    later = stats.snapshot(now=103.5)
    assert (later.frames_rejected, later.recently_rejected) == (2, 0)
    assert stats.last_arrival == 101.0


def test_diagnostics_level_ignores_dropped_frames_and_recovers():
    from diagnostic_msgs.msg import DiagnosticStatus
    from builtin_interfaces.msg import Time
    from stark_ros.messages import diagnostics
    stats = NodeStats(rejection_window=1.0)
    for index in range(10):
        stats.frame_received(10.0 + index * 0.01, dropped_pending=index % 2 == 1)
    status = diagnostics(Time(), '/n', stats.snapshot(now=10.2), {}, None, [], targets=1).status[0]
    assert status.level == DiagnosticStatus.OK and status.message == 'tracking', 'newest-frame-wins is no fault'
    assert {kv.key: kv.value for kv in status.values}['frames_dropped'] == '5'
    status = diagnostics(Time(), '/n', stats.snapshot(now=10.2), {}, None, ['2 frames rejected'], 0).status[0]
    assert status.level == DiagnosticStatus.WARN and status.message == '2 frames rejected'
    status = diagnostics(Time(), '/n', stats.snapshot(now=10.2), {}, 'no model', ['x'], 0).status[0]
    assert status.level == DiagnosticStatus.ERROR and status.message == 'no model; x'


def test_parameter_values_are_checked_by_name():
    assert SPECS['tracking.lost_threshold'].problem(float('nan')) == \
        'parameter tracking.lost_threshold: nan is not a finite number'
    assert 'inf is not a finite number' in SPECS['output.diagnostics_period'].problem(float('inf'))
    assert SPECS['model.update_profile'].problem('lasot') is None
    assert SPECS['model.update_profile'].problem('trackingnett') == (
        "parameter model.update_profile: 'trackingnett' is not one of default, lasot, got10k_test, trackingnet, "
        'vot20, vot20lt (did you mean trackingnet?)')
    assert SPECS['model.device'].problem('cuda:1') is None and SPECS['model.device'].problem('cpu') is None
    assert "'gpu' is not one of auto, cpu, cuda, cuda:N" in SPECS['model.device'].problem('gpu')
    assert SPECS['model.checkpoint_sha256'].problem('') is None
    assert SPECS['model.checkpoint_sha256'].problem('ab' * 32) is None
    assert 'is not 64 hex digits' in SPECS['model.checkpoint_sha256'].problem('ab' * 31)
    assert SPECS['input.max_image_pixels'].default == 7680 * 4320
    assert change_problem('qos_overrides./image.subscription.depth', 3) is None  # rclpy refuses (read-only)


def test_model_loader_builds_off_the_calling_thread_and_the_newest_request_wins():
    from stark_ros.model_loader import ModelLoader
    release = threading.Event()
    built, finished = [], []

    def build(settings):
        built.append(settings['name'])
        if settings['name'] == 'first':
            assert release.wait(10)
        if settings['name'] == 'broken':
            raise RuntimeError('truncated file')
        return settings['name'].upper()

    loader = ModelLoader(build, lambda s, result, problem: finished.append((s['name'], result, problem)),
                         lambda s, error: f'cannot load {s["name"]}: {error}')
    try:
        loader.request({'name': 'first'})
        deadline = time.monotonic() + 10
        while built != ['first'] and time.monotonic() < deadline:
            time.sleep(0.01)
        loader.request({'name': 'second'})
        loader.request({'name': 'third'})  # replaces 'second', which never starts
        assert loader.busy() == {'name': 'third'}
        release.set()
        while loader.busy() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert built == ['first', 'third']
        assert finished == [('third', 'THIRD', None)], 'a superseded result is never swapped in'
        loader.request({'name': 'broken'})
        while len(finished) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert finished[-1] == ('broken', None, 'cannot load broken: truncated file')
    finally:
        loader.close()


def test_readme_and_params_file_list_exactly_the_node_parameters():
    import re
    from pathlib import Path

    import yaml
    root = Path(__file__).resolve().parents[1]
    documented = set()
    for row in re.findall(r'^\| (`(?:model|input|tracking|output)\.[^|]*)\|', (root / 'README.md').read_text(), re.M):
        documented.update(re.findall(r'`([a-z_]+\.[a-z_0-9]+)`', row))
    assert documented == set(SPECS), f'README parameter table: missing {set(SPECS) - documented}, ' \
                                     f'unknown {documented - set(SPECS)}'
    tree = yaml.safe_load((root / 'config' / 'tracker.yaml').read_text())['/**/stark_tracker']['ros__parameters']
    in_file = {f'{group}.{key}' for group, values in tree.items() for key in values}
    assert in_file == set(SPECS)
    for name, value in ((f'{g}.{k}', v) for g, values in tree.items() for k, v in values.items()):
        assert SPECS[name].problem(value) is None and value == SPECS[name].default, name
