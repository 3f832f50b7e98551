"""Evaluation metrics: hand-computed cases and agreement with the got10k toolkit (PyPI got10k 0.1.3)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from stark_training.evaluation import formats
from stark_training.evaluation.metrics import (MetricsError, attribute_breakdown, centre_error, evaluate_sequence,
                                               iou, normalized_centre_error, summarize)

BOX = [10.0, 20.0, 10.0, 10.0]


def test_iou_and_centre_error_by_hand() -> None:
    shifted = [15.0, 20.0, 10.0, 10.0]
    assert iou([shifted], [BOX])[0] == pytest.approx(50 / 150)
    assert iou([[100.0, 100.0, 5.0, 5.0]], [BOX])[0] == 0.0
    assert iou([[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]])[0] == 0.0  # empty boxes: no overlap
    assert iou([[math.nan] * 4], [BOX])[0] == 0.0
    assert centre_error(np.array([shifted]), np.array([BOX]))[0] == pytest.approx(5.0)
    assert normalized_centre_error(np.array([shifted]), np.array([BOX]))[0] == pytest.approx(0.5)
    assert centre_error(np.array([[math.nan] * 4]), np.array([BOX]))[0] == math.inf


def test_perfect_predictions_score_one_below_the_last_threshold() -> None:
    gt = np.array([BOX] * 5)
    result = evaluate_sequence(gt, gt, 'ope')
    # IoU = 1 - eps is above every threshold but 1.0 (strict >): 20 of 21 points.
    assert result.success_curve[:-1].tolist() == [1.0] * 20 and result.success_curve[-1] == 0.0
    assert result.auc == pytest.approx(20 / 21)
    assert result.precision == 1.0 and result.normalized_precision == 1.0
    assert result.average_overlap == pytest.approx(1.0)


def test_shifted_box_by_hand() -> None:
    gt = np.array([BOX, BOX])
    pred = np.array([[0.0, 0.0, 1.0, 1.0], [15.0, 20.0, 10.0, 10.0]])  # frame 0 is replaced by the GT
    result = evaluate_sequence(pred, gt, 'ope')
    # Frame 0: IoU 1; frame 1: IoU 1/3 > t for t in 0..0.30 (7 of 21 thresholds).
    assert result.auc == pytest.approx((20 + 7) / 42)
    assert result.precision_curve[4] == 0.5 and result.precision_curve[5] == 1.0  # 5 px error
    # Normalised error 0.5 is within only the last of 51 thresholds 0..0.5.
    assert result.normalized_precision == pytest.approx((51 + 1) / 102)
    assert result.success_rate(0.5) == 0.5
    summary = summarize([result])
    assert summary.sr50 == pytest.approx(0.5) and summary.sr75 == pytest.approx(0.5)


def test_empty_predictions_fail_and_empty_sequences_are_refused() -> None:
    gt = np.array([BOX] * 3)
    pred = np.array([BOX, [0.0, 0.0, 0.0, 0.0], [math.nan] * 4])
    result = evaluate_sequence(pred, gt, 'ope')
    assert result.ious.tolist()[1:] == [0.0, 0.0]
    assert result.precision == pytest.approx(1 / 3)
    with pytest.raises(MetricsError, match='no frames'):
        evaluate_sequence(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(MetricsError, match='2 predicted boxes for 3 frames'):
        evaluate_sequence(pred[:2], gt, name='cup-1')
    with pytest.raises(MetricsError, match='unknown protocol'):
        evaluate_sequence(pred, gt, 'vot')


def test_absent_frames_per_protocol() -> None:
    gt = np.array([BOX, BOX, [math.nan] * 4, BOX])
    visible = np.array([True, True, False, True])
    pred = np.array([BOX, BOX, [200.0, 200.0, 5.0, 5.0], [200.0, 200.0, 5.0, 5.0]])
    # ope (got10k toolkit): the NaN row is skipped: 2 of 3 counted frames succeed.
    ope = evaluate_sequence(pred, gt, 'ope', visible=visible)
    assert ope.counted == 3 and ope.success_curve[0] == pytest.approx(2 / 3)
    # pytracking: the absent frame stays in the denominator as a failure: 2 of 4.
    pyt = evaluate_sequence(pred, np.nan_to_num(gt), 'pytracking', visible=visible)
    assert pyt.counted == 4 and pyt.success_curve[0] == pytest.approx(2 / 4)
    assert pyt.average_overlap == pytest.approx(2 / 3, abs=1e-9)  # mean IoU over the 3 valid frames
    # got10k: frame 0 excluded, cover 0 excluded: frames 1 and 3 count.
    gt10 = np.nan_to_num(gt)
    got = evaluate_sequence(pred, gt10, 'got10k', cover=[8, 8, 0, 8], image_size=(640, 480))
    assert got.counted == 2 and got.average_overlap == pytest.approx(0.5)
    with pytest.raises(MetricsError, match='image_size'):
        evaluate_sequence(pred, gt10, 'got10k')


def test_attribute_breakdown_groups_sequences_by_their_attributes() -> None:
    gt = np.array([BOX] * 3)
    good = evaluate_sequence(gt, gt, name='a', attributes={'attributes': ['IV', 'SV']})
    bad = evaluate_sequence(np.array([BOX] + [[300.0, 300.0, 5.0, 5.0]] * 2), gt, name='b',
                            attributes={'full_occlusion': np.array([0, 1, 0]), 'attributes': ['SV']})
    groups = attribute_breakdown([good, bad])
    assert sorted(groups) == ['IV', 'SV', 'full_occlusion']
    assert groups['IV'].sequences == 1 and groups['SV'].sequences == 2
    assert groups['full_occlusion'].auc == pytest.approx(bad.auc)


def test_fps_is_the_mean_of_inverse_frame_times() -> None:
    gt = np.array([BOX] * 3)
    result = evaluate_sequence(gt, gt, times=[0.5, 0.25, 0.0])  # a zero time is ignored, as the toolkit does
    assert result.fps == pytest.approx(3.0)


# ----------------------------------------------------------------------------------- got10k toolkit
def _random_sequences(rng: np.random.Generator, count: int, nan_rows: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    sequences = []
    for _ in range(count):
        length = int(rng.integers(5, 40))
        gt = np.column_stack([rng.uniform(0, 300, (length, 2)), rng.uniform(2, 120, (length, 2))])
        pred = gt + rng.normal(0, 15, gt.shape)
        pred[:, 2:] = np.abs(pred[:, 2:]) + 1
        if nan_rows:
            gt[rng.random(length) < 0.2] = np.nan
            gt[0] = pred[0] + 1  # the first frame is always annotated
        sequences.append((pred, gt))
    return sequences


def test_ope_protocol_matches_got10k_toolkit_otb_and_uav123() -> None:
    toolkit = pytest.importorskip('got10k.experiments')
    otb = object.__new__(toolkit.ExperimentOTB)
    uav = object.__new__(toolkit.ExperimentUAV123)
    for experiment in (otb, uav):
        experiment.nbins_iou, experiment.nbins_ce = 21, 51
    rng = np.random.default_rng(7)
    for experiment, nan_rows in ((otb, False), (uav, True)):
        curves, ours = [], []
        for pred, gt in _random_sequences(rng, 6, nan_rows):
            boxes = pred.copy()
            boxes[0] = gt[0]  # the toolkit's report() does this before scoring
            ious, errors = experiment._calc_metrics(boxes, gt.copy())
            curves.append(experiment._calc_curves(ious, errors))
            ours.append(evaluate_sequence(pred, gt, 'ope'))
        success = np.mean([c[0] for c in curves], axis=0)
        precision = np.mean([c[1] for c in curves], axis=0)
        summary = summarize(ours)
        np.testing.assert_allclose(summary.success_curve, success, atol=1e-6)
        np.testing.assert_allclose(summary.precision_curve, precision, atol=1e-6)
        assert summary.auc == pytest.approx(float(np.mean(success)), abs=1e-6)
        assert summary.precision == pytest.approx(float(precision[20]), abs=1e-6)
        assert summary.sr50 == pytest.approx(float(success[21 // 2]), abs=1e-6)


def test_normalized_precision_matches_got10k_toolkit_lasot_formula() -> None:
    # got10k 0.1.3 on PyPI predates its LaSOT experiment; the toolkit's formula (GitHub master,
    # utils/metrics.normalized_center_error and experiments/lasot.py), transcribed as facts:
    # centres x + (w - 1) / 2; error per axis divided by max(1, GT w or h); L2; 51 thresholds
    # linspace(0, 0.5, 51) with <=; score = mean of the curve; sequences averaged.
    rng = np.random.default_rng(3)
    curves, ours = [], []
    for pred, gt in _random_sequences(rng, 5, nan_rows=True):
        boxes = pred.copy()
        boxes[0] = gt[0]
        valid = ~np.isnan(gt).any(axis=1)
        c_pred = boxes[valid, :2] + (boxes[valid, 2:] - 1) / 2
        c_gt = gt[valid, :2] + (gt[valid, 2:] - 1) / 2
        errors = np.sqrt((((c_pred - c_gt) / np.maximum(1.0, gt[valid, 2:])) ** 2).sum(-1))
        curves.append((errors[:, None] <= np.linspace(0, 0.5, 51)[None]).mean(0))
        ours.append(evaluate_sequence(pred, gt, 'ope'))
    expected = float(np.mean(np.mean(curves, axis=0)))
    assert summarize(ours).normalized_precision == pytest.approx(expected, abs=1e-6)


def _write_got10k_val(root: Path, rng: np.random.Generator, count: int) -> dict[str, dict]:
    """A GOT-10k val split in the real layout (list.txt, labels, meta_info.ini, frames)."""
    split = root / 'val'
    truth = {}
    for index in range(count):
        name = f'GOT-10k_Val_{index + 1:06d}'
        folder = split / name
        folder.mkdir(parents=True)
        length = int(rng.integers(6, 25))
        width, height = 320, 240
        gt = np.round(np.column_stack([rng.uniform(-20, 300, (length, 2)), rng.uniform(5, 100, (length, 2))]), 3)
        cover = rng.integers(0, 9, length)
        cover[0] = 8
        (folder / 'groundtruth.txt').write_text(formats.boxes_text(gt))
        (folder / 'cover.label').write_text(''.join(f'{c}\n' for c in cover))
        (folder / 'absence.label').write_text(''.join(f'{int(c == 0)}\n' for c in cover))
        (folder / 'cut_by_image.label').write_text('0\n' * length)
        (folder / 'meta_info.ini').write_text(f'[METAINFO]\nresolution: ({width}, {height})\nmajor_class: test\n')
        for frame in range(length):
            (folder / f'{frame + 1:08d}.jpg').write_bytes(b'')  # the toolkit only lists them
        truth[name] = {'gt': gt, 'cover': cover, 'size': (width, height)}
    (split / 'list.txt').write_text('\n'.join(truth) + '\n')
    return truth


def test_got10k_protocol_matches_got10k_toolkit_report(tmp_path: Path, monkeypatch) -> None:
    toolkit = pytest.importorskip('got10k.experiments')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    rng = np.random.default_rng(11)
    truth = _write_got10k_val(tmp_path / 'GOT-10k', rng, 5)
    results_dir = tmp_path / 'results' / 'GOT-10k' / 'ours'
    ours = []
    for name, seq in truth.items():
        pred = seq['gt'] + rng.normal(0, 12, seq['gt'].shape)
        times = rng.uniform(0.01, 0.05, len(pred))
        formats.write_result(results_dir, 'got10k', name, pred, times)
        # Score what was written (3 decimals), exactly as the toolkit reads it back.
        written, read_times = formats.read_result(results_dir, 'got10k', name)
        ours.append(evaluate_sequence(written, seq['gt'], 'got10k', name=name, cover=seq['cover'], image_size=seq['size'],
                                      times=read_times))
    experiment = toolkit.ExperimentGOT10k(str(tmp_path / 'GOT-10k'), subset='val',
                                          result_dir=str(tmp_path / 'results'), report_dir=str(tmp_path / 'reports'))
    cwd = os.getcwd()
    performance = experiment.report(['ours'])['ours']
    os.chdir(cwd)
    summary = summarize(ours)
    overall = performance['overall']
    assert summary.average_overlap == pytest.approx(overall['ao'], abs=1e-6)
    assert summary.sr50 == pytest.approx(overall['sr'], abs=1e-6)
    assert summary.fps == pytest.approx(overall['speed_fps'], abs=1e-6)
    np.testing.assert_allclose(summary.success_curve, overall['succ_curve'], atol=1e-6)
    for result in ours:
        assert result.average_overlap == pytest.approx(performance['seq_wise'][result.name]['ao'], abs=1e-6)


def test_pytracking_protocol_matches_starks_analysis_formulas() -> None:
    # STARK's lib/test/analysis/extract_results.py, transcribed as facts, frame by frame:
    # pred[0] = gt[0]; valid = w > 0 and h > 0 and visible; centres x + 0.5 (w - 1); invalid
    # frames get IoU -1, centre error inf and normalised error -1; LaSOT-invisible frames get
    # inf for both errors; curves divide by the full length; AUC = mean of the 21-point curve.
    rng = np.random.default_rng(5)
    curves, ours = [], []
    for pred, gt in _random_sequences(rng, 4, nan_rows=False):
        visible = rng.random(len(gt)) > 0.2
        gt[rng.random(len(gt)) < 0.1, 2] = 0.0  # some empty GT boxes
        boxes = pred.copy()
        boxes[0] = gt[0]
        overlaps, errors, normalized = [], [], []
        for p, g, seen in zip(boxes, gt, visible):
            valid = g[2] > 0 and g[3] > 0 and seen
            ix = max(0.0, min(p[0] + p[2] - 1, g[0] + g[2] - 1) - max(p[0], g[0]) + 1)
            iy = max(0.0, min(p[1] + p[3] - 1, g[1] + g[3] - 1) - max(p[1], g[1]) + 1)
            overlap = ix * iy / (p[2] * p[3] + g[2] * g[3] - ix * iy)
            dc = (p[:2] + 0.5 * (p[2:] - 1)) - (g[:2] + 0.5 * (g[2:] - 1))
            overlaps.append(overlap if valid else -1.0)
            errors.append(math.hypot(*dc) if valid and seen else math.inf)
            normalized.append(math.hypot(*(dc / g[2:])) if valid else (-1.0 if seen else math.inf))
        overlaps, errors, normalized = map(np.array, (overlaps, errors, normalized))
        curves.append(((overlaps[:, None] > np.arange(0, 1.05, 0.05)[None]).mean(0),
                       (errors[:, None] <= np.arange(51)[None]).mean(0),
                       (normalized[:, None] <= np.arange(51)[None] / 100).mean(0)))
        ours.append(evaluate_sequence(pred, gt, 'pytracking', visible=visible, dataset='lasot'))
    summary = summarize(ours)
    success, precision, norm = (np.mean([c[i] for c in curves], axis=0) for i in range(3))
    np.testing.assert_allclose(summary.success_curve, success, atol=1e-6)
    assert summary.precision == pytest.approx(precision[20], abs=1e-6)
    assert summary.normalized_precision == pytest.approx(norm[20], abs=1e-6)


def test_score_separation_is_the_roc_auc_of_on_versus_off_target_frames():
    from stark_training.evaluation.metrics import score_separation

    ious = np.array([0.9, 0.8, 0.7, 0.05, 0.0, 0.3])  # 0.3 is in neither group
    assert score_separation([0.9, 0.8, 0.7, 0.2, 0.1, 0.0], ious) == 1.0
    assert score_separation([0.1, 0.2, 0.3, 0.8, 0.9, 0.5], ious) == 0.0
    assert score_separation([0.5] * 6, ious) == 0.5  # ties count half
    # One swapped pair of 3 x 2: 5 of 6 pairs ordered.
    assert score_separation([0.9, 0.8, 0.3, 0.4, 0.1, 0.0], ious) == pytest.approx(5 / 6)
    assert np.isnan(score_separation([0.5, 0.5], [0.9, 0.8]))
    with pytest.raises(MetricsError):
        score_separation([0.5], [0.9, 0.8])
