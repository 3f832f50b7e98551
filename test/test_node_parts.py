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
    first, second = book.new_id(), book.new_id()
    assert first != second and first.startswith('target-')
    book.start('target-3', 'x', (0, 0, 1, 1))
    assert book.new_id() == 'target-4', 'ids in use are skipped'
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
    figures = stats.snapshot(now=10.0 + 99 / 30)
    assert (figures.frames_received, figures.frames_processed, figures.frames_dropped) == (100, 100, 10)
    assert figures.drop_rate == pytest.approx(0.1)
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
