"""The multi-target tracker: one batched forward per frame, targets come and go, template update."""
import dataclasses

import numpy as np
import pytest
import torch

from backend_fixtures import lite_model
from stark_model import TrackerError, create_tracker, load_model
from stark_model.tracker import StarkTracker

HEIGHT, WIDTH = 240, 320


@pytest.fixture(scope='module')
def lite():
    return lite_model(seed=0)


@pytest.fixture(scope='module')
def frames():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(6)]


BOXES = {'a': (40.0, 30.0, 50.0, 40.0), 'b': (200.0, 120.0, 60.0, 80.0), 'c': (10.0, 180.0, 30.0, 30.0)}


def count_calls(tracker: StarkTracker, method: str) -> list:
    calls = []
    original = getattr(tracker.network, method)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    setattr(tracker.network, method, counted)
    return calls


def test_all_targets_share_one_batched_forward(lite, frames):
    tracker = create_tracker(lite)
    for target_id, box in BOXES.items():
        tracker.initialize(frames[0], box, target_id)
    decodes, encodes = count_calls(tracker, 'decode'), count_calls(tracker, 'encode')
    try:
        results = tracker.track(frames[1])
    finally:
        del tracker.network.decode, tracker.network.encode
    assert len(decodes) == 1 and len(encodes) == 1, 'one search encode and one decode per frame'
    assert decodes[0][0].features.shape[1] == len(BOXES)
    assert encodes[0][0].shape[0] == len(BOXES)
    assert sorted(results) == sorted(BOXES)


def test_batched_results_equal_one_tracker_per_target(lite, frames):
    together = create_tracker(lite)
    for target_id, box in BOXES.items():
        together.initialize(frames[0], box, target_id)
    alone = {}
    for target_id, box in BOXES.items():
        alone[target_id] = create_tracker(lite)
        alone[target_id].initialize(frames[0], box, target_id)
    for frame in frames[1:]:
        batched = together.track(frame)
        for target_id, tracker in alone.items():
            single = tracker.track(frame)[target_id]
            assert batched[target_id].box == pytest.approx(single.box, abs=1e-3)
            assert batched[target_id].score == pytest.approx(single.score, abs=1e-5)


def test_targets_added_and_removed_at_any_frame(lite, frames):
    tracker = create_tracker(lite, max_targets=2)
    assert tracker.track(frames[0]) == {}
    tracker.initialize(frames[0], BOXES['a'], 'a')
    tracker.track(frames[1])
    tracker.initialize(frames[1], BOXES['b'], 'b')
    results = tracker.track(frames[2])
    assert (results['a'].frames_tracked, results['b'].frames_tracked) == (2, 1)
    with pytest.raises(TrackerError, match='already tracking 2 targets'):
        tracker.initialize(frames[2], BOXES['c'], 'c')
    tracker.initialize(frames[2], BOXES['c'], 'a')  # re-initialising an id is not a new target
    assert tracker.track(frames[3])['a'].frames_tracked == 1
    assert tracker.remove('b') and not tracker.remove('b')
    assert list(tracker.track(frames[4])) == ['a']
    tracker.clear()
    assert tracker.target_ids == [] and tracker.track(frames[5]) == {}


def dynamic_tracker(lite, interval: int, threshold: float) -> StarkTracker:
    config = dataclasses.replace(lite.variant.tracker, update_intervals={'default': interval},
                                 update_threshold=threshold)
    return StarkTracker(lite.network, config)


def test_dynamic_template_replaced_on_interval_when_score_clears_threshold(lite, frames):
    tracker = dynamic_tracker(lite, interval=2, threshold=0.0)
    tracker.initialize(frames[0], BOXES['a'], 'a')
    initial = tracker._targets['a'].templates[1].features.clone()
    updated = [tracker.track(frame)['a'].template_updated for frame in frames[1:]]
    assert updated == [False, True, False, True, False]
    assert not torch.equal(tracker._targets['a'].templates[1].features, initial)
    assert torch.equal(tracker._targets['a'].templates[0].features, initial), 'first template stays'


def test_no_update_when_score_does_not_exceed_threshold(lite, frames):
    tracker = dynamic_tracker(lite, interval=1, threshold=1.0)  # sigmoid never exceeds 1
    tracker.initialize(frames[0], BOXES['a'], 'a')
    assert not any(tracker.track(frame)['a'].template_updated for frame in frames[1:])


def test_stark_s_has_one_template_and_a_proxy_score_in_unit_range(frames):
    model = load_model(variant='s50', allow_untrained=True)
    tracker = create_tracker(model)
    tracker.initialize(frames[0], BOXES['a'], 'a')
    assert len(tracker._targets['a'].templates) == 1
    result = tracker.track(frames[1])['a']
    assert 0.0 <= result.score <= 1.0 and not result.template_updated


def test_results_are_finite_boxes_inside_the_image(lite, frames):
    tracker = create_tracker(lite)
    for target_id, box in BOXES.items():
        tracker.initialize(frames[0], box, target_id)
    for frame in frames[1:]:
        for result in tracker.track(frame).values():
            x, y, w, h = result.box
            assert np.isfinite(result.box).all() and 0 <= result.score <= 1
            assert 0 <= x <= WIDTH - 10 and 0 <= y <= HEIGHT - 10 and w >= 10 and h >= 10
            assert x + w <= WIDTH + 1e-6 and y + h <= HEIGHT + 1e-6


def test_device_and_precision_choices(lite, frames):
    with pytest.raises(TrackerError, match='fp16 needs a CUDA device'):
        create_tracker(lite, precision='fp16')
    with pytest.raises(TrackerError, match="precision 'int8' is not one of"):
        create_tracker(lite, precision='int8')
    if not torch.cuda.is_available():
        with pytest.raises(TrackerError, match='CUDA is not available'):
            create_tracker(lite, device='cuda')
    with pytest.raises(TrackerError, match='not a valid torch device'):
        create_tracker(lite, device='gpu0')
    reference, bf16 = create_tracker(lite), create_tracker(lite, precision='bf16')
    for tracker in (reference, bf16):
        tracker.initialize(frames[0], BOXES['b'], 'b')
    exact, approximate = reference.track(frames[1])['b'], bf16.track(frames[1])['b']
    assert np.allclose(exact.box, approximate.box, atol=8.0), 'bf16 autocast runs the same path'


@pytest.mark.parametrize('image, message', [
    (np.zeros((10, 10), np.uint8), r'shape \(H, W, 3\)'),
    (np.zeros((10, 10, 3), np.float32), 'uint8'),
    (np.zeros((0, 10, 3), np.uint8), 'empty'),
    ([[0]], 'numpy array'),
])
def test_bad_images_are_rejected_with_the_reason(lite, image, message):
    tracker = create_tracker(lite)
    with pytest.raises(TrackerError, match=message):
        tracker.initialize(image, (1, 1, 5, 5), 'a')
    with pytest.raises(TrackerError, match=message):
        tracker.track(image)


def test_benchmark_script_prints_a_row_per_variant(capsys):
    from stark_model import benchmark

    assert benchmark.main(['--variants', 'lite', '--targets', '1', '2', '--repeats', '1',
                           '--frames', '1', '--warmup', '0']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('# STARK speed on') and 'FPS 2 tgt' in lines[1]
    cells = lines[3].strip('|').split('|')
    assert cells[0].strip() == 'lite' and all(float(c) > 0 for c in cells[1:])
