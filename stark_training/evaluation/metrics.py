"""Tracking accuracy and speed metrics, computed as the named toolkits compute them.

Three protocols; each states what it copies, and `docs/EVALUATION.md` repeats this table:

| aspect | `ope` (got10k toolkit: ExperimentOTB, -UAV123, -LaSOT, -TrackingNet) | `got10k` (got10k toolkit: ExperimentGOT10k, val) | `pytracking` (STARK's fork of pytracking analysis) |
|---|---|---|---|
| used for | OTB, UAV123, NfS, LaSOT, TrackingNet, folders, synthetic | GOT-10k val | STARK's published LaSOT/OTB/UAV/NfS numbers (`--protocol pytracking`) |
| IoU | continuous (x2 = x + w) | continuous, both boxes clipped to the image first | `br = x + w - 1`, `+1` sizes: algebraically the same IoU, rounded differently (computed their way) |
| centre | x + (w - 1) / 2 | - | x + (w - 1) / 2 |
| first frame | prediction replaced by the GT box (IoU 1, counted) | frame 0 excluded | prediction replaced by the GT box (counted) |
| absent / fully occluded frames | GT rows with NaN are skipped (out of numerator and denominator); other rows count | only frames with `cover > 0` count (`cover` attribute, else `visible`) | invalid = not (w > 0 and h > 0 and visible): IoU -1 and centre error inf (always failures; UAV123: centre -1, a hit), normalised error -1 (a hit) except LaSOT-invisible (inf); the denominator stays the full length |
| success curve | 21 thresholds 0..1, `iou > t`, per sequence, then mean over sequences | 101 thresholds, frames pooled | 21 thresholds, per sequence, then mean |
| success AUC | mean of the curve | mean of the curve | mean of the curve |
| precision | thresholds 0..50 px, `err <= t`, score at 20 px | - (reported as for `ope`) | same, score at 20 px |
| normalised precision | centre error / max(1, GT w, h) per axis; 51 thresholds 0..0.5; score = MEAN of the curve | - (reported as for `ope`) | centre error / GT (w, h); thresholds 0..0.5 step 0.01; score at 0.20 |
| AO, SR0.50, SR0.75 | mean over sequences of per-sequence mean IoU / rate `iou > t` | all frames pooled (server: SR0.75 too) | AO: per-sequence mean over valid frames, then mean; SR = curve at 0.50 / 0.75 |
| FPS | per sequence mean of 1/t (t > 0), then mean over sequences | all frames pooled, mean of 1/t | as `ope` |

Predictions that are not finite (a tracker that lost the target and wrote NaN) count as failures
(IoU 0, centre error inf) in every protocol; the toolkits would propagate NaN instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SUCCESS_BINS = {'ope': 21, 'got10k': 101, 'pytracking': 21}
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)           # pixels
NORMALIZED_THRESHOLDS = np.linspace(0.0, 0.5, 51)                   # 0, 0.01, ..., 0.5
PRECISION_INDEX = 20                                                # 20 px / 0.20
PROTOCOLS = tuple(SUCCESS_BINS)
# The protocol each dataset's own toolkit uses; anything else is evaluated like OTB.
DATASET_PROTOCOLS = {'got10k': 'got10k'}


class MetricsError(ValueError):
    """Predictions and ground truth that cannot be compared (shape, length, protocol)."""


def protocol_for(dataset: str) -> str:
    """The default protocol of a dataset name ('got10k' for GOT-10k, 'ope' otherwise)."""
    return DATASET_PROTOCOLS.get(dataset.lower().replace('-', ''), 'ope')


def success_thresholds(protocol: str) -> np.ndarray:
    """Overlap thresholds of a protocol's success curve (21 or 101 points from 0 to 1)."""
    return np.linspace(0.0, 1.0, SUCCESS_BINS[protocol])


def iou(pred: np.ndarray, gt: np.ndarray, bound: tuple[float, float] | None = None) -> np.ndarray:
    """Per-row IoU of (N, 4) xywh boxes, continuous convention, optionally both clipped to a
    (width, height) image first (GOT-10k); rows with a non-finite value get IoU 0."""
    pred, gt = np.array(pred, np.float64, ndmin=2), np.array(gt, np.float64, ndmin=2)
    if bound is not None:
        pred, gt = _clip_to_image(pred, bound), _clip_to_image(gt, bound)
    x1 = np.maximum(pred[:, 0], gt[:, 0])
    y1 = np.maximum(pred[:, 1], gt[:, 1])
    x2 = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
    y2 = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        # The toolkits add machine epsilon to the union (so two empty boxes give 0, not NaN).
        values = np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)
    return np.where(np.isfinite(values), values, 0.0)


def _clip_to_image(boxes: np.ndarray, bound: tuple[float, float]) -> np.ndarray:
    width, height = bound
    out = boxes.copy()
    out[:, 0] = np.clip(out[:, 0], 0, width)
    out[:, 1] = np.clip(out[:, 1], 0, height)
    out[:, 2] = np.clip(out[:, 2], 0, width - out[:, 0])
    out[:, 3] = np.clip(out[:, 3], 0, height - out[:, 1])
    return out


def centre_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-row distance between box centres x + (w - 1) / 2 in pixels; inf where not finite."""
    delta = _centre(pred) - _centre(gt)
    errors = np.sqrt((delta ** 2).sum(axis=1))
    return np.where(np.isfinite(errors), errors, np.inf)


def normalized_centre_error(pred: np.ndarray, gt: np.ndarray, floor: float = 1.0) -> np.ndarray:
    """Centre error divided per axis by the GT width and height (at least `floor`), then L2."""
    scale = np.maximum(np.asarray(gt, np.float64)[:, 2:], floor)
    delta = (_centre(pred) - _centre(gt)) / scale
    errors = np.sqrt((delta ** 2).sum(axis=1))
    return np.where(np.isfinite(errors), errors, np.inf)


def _pixel_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pytracking's IoU: the same value as `iou` in exact arithmetic, but computed through
    inclusive corners (x + w - 1) without epsilon or clipping, so its rounding (an IoU of
    1 + 2e-16 passes the threshold 1.0) is reproduced too."""
    top_left = np.maximum(pred[:, :2], gt[:, :2])
    bottom_right = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
    size = np.clip(bottom_right - top_left + 1.0, 0, None)
    intersection = size.prod(axis=1)
    return intersection / (pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - intersection)


def _centre(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    return boxes[:, :2] + (boxes[:, 2:] - 1) / 2


@dataclass
class SequenceResult:
    """One sequence scored under one protocol: the per-frame values that count and the curves."""

    name: str
    protocol: str
    ious: np.ndarray               # counted frames only (pytracking: invalid frames as -1)
    success_curve: np.ndarray
    precision_curve: np.ndarray
    normalized_precision_curve: np.ndarray
    average_overlap: float
    frames: int                    # frames in the sequence
    counted: int                   # frames in the curves' denominator
    speeds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 1/t per timed frame
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def auc(self) -> float:
        return float(np.mean(self.success_curve))

    @property
    def precision(self) -> float:
        return float(self.precision_curve[PRECISION_INDEX])

    @property
    def normalized_precision(self) -> float:
        return _normalized_score(self.protocol, self.normalized_precision_curve)

    @property
    def fps(self) -> float:
        return float(np.mean(self.speeds)) if len(self.speeds) else math.nan

    def success_rate(self, threshold: float) -> float:
        return float(np.mean(self.ious > threshold)) if self.counted else 0.0


def _normalized_score(protocol: str, curve: np.ndarray) -> float:
    # got10k averages the whole 0..0.5 curve; pytracking reads it at 0.20.
    return float(curve[PRECISION_INDEX]) if protocol == 'pytracking' else float(np.mean(curve))


def _as_boxes(values: Any, what: str) -> np.ndarray:
    boxes = np.array(values, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise MetricsError(f'{what} must be an (N, 4) array of xywh boxes, got shape {boxes.shape}')
    return boxes


def _curves(ious: np.ndarray, errors: np.ndarray, normalized: np.ndarray, protocol: str,
            denominator: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if denominator == 0:
        return (np.zeros(SUCCESS_BINS[protocol]), np.zeros(len(PRECISION_THRESHOLDS)),
                np.zeros(len(NORMALIZED_THRESHOLDS)))
    success = (ious[:, None] > success_thresholds(protocol)[None]).sum(0) / denominator
    precision = (errors[:, None] <= PRECISION_THRESHOLDS[None]).sum(0) / denominator
    normalized = (normalized[:, None] <= NORMALIZED_THRESHOLDS[None]).sum(0) / denominator
    return success, precision, normalized


def evaluate_sequence(pred: Any, gt: Any, protocol: str = 'ope', name: str = '',
                      visible: Any = None, cover: Any = None, image_size: tuple[int, int] | None = None,
                      times: Any = None, dataset: str = '', attributes: Mapping[str, Any] | None = None
                      ) -> SequenceResult:
    """Score one sequence's xywh predictions against its ground truth under `protocol`.

    visible: per-frame bool (target present, not fully occluded); cover: GOT-10k cover levels;
    image_size: (width, height), needed by 'got10k'; times: per-frame seconds for FPS.
    """
    if protocol not in SUCCESS_BINS:
        raise MetricsError(f'unknown protocol {protocol!r} (known: {", ".join(PROTOCOLS)})')
    pred, gt = _as_boxes(pred, f'predictions of {name or "the sequence"}'), _as_boxes(gt, 'ground truth')
    if len(pred) != len(gt):
        raise MetricsError(f'sequence {name!r}: {len(pred)} predicted boxes for {len(gt)} frames')
    if len(gt) == 0:
        raise MetricsError(f'sequence {name!r} has no frames')
    visible = np.ones(len(gt), bool) if visible is None else np.asarray(visible, bool).reshape(-1)
    if len(visible) != len(gt):
        raise MetricsError(f'sequence {name!r}: {len(visible)} visibility flags for {len(gt)} frames')
    scorer = {'ope': _score_ope, 'got10k': _score_got10k, 'pytracking': _score_pytracking}[protocol]
    result = scorer(pred, gt, visible, cover, image_size, dataset, name)
    result.speeds = _speeds(times)
    result.attributes = dict(attributes or {})
    return result


def _speeds(times: Any) -> np.ndarray:
    if times is None:
        return np.zeros(0)
    times = np.asarray(times, np.float64).reshape(-1)
    times = times[np.isfinite(times) & (times > 0)]
    return 1.0 / times


def _score_ope(pred, gt, visible, cover, image_size, dataset, name) -> SequenceResult:
    pred = pred.copy()
    pred[0] = gt[0]
    counted = ~np.isnan(gt).any(axis=1)
    return _counted_frames_result(name, 'ope', iou(pred[counted], gt[counted]), pred, gt, counted)


def _score_got10k(pred, gt, visible, cover, image_size, dataset, name) -> SequenceResult:
    if image_size is None:
        raise MetricsError(f'sequence {name!r}: the got10k protocol clips boxes to the image, '
                           'so it needs image_size=(width, height)')
    cover = visible.astype(np.int64) if cover is None else np.asarray(cover).reshape(-1)
    if len(cover) != len(gt):
        raise MetricsError(f'sequence {name!r}: {len(cover)} cover labels for {len(gt)} frames')
    counted = np.zeros(len(gt), bool)
    counted[1:] = cover[1:] > 0
    # Centre errors are not part of GOT-10k; they are reported as the OTB-style figures on the same frames.
    return _counted_frames_result(name, 'got10k', iou(pred[counted], gt[counted], bound=image_size),
                                  pred, gt, counted)


def _counted_frames_result(name: str, protocol: str, ious: np.ndarray, pred: np.ndarray, gt: np.ndarray,
                           counted: np.ndarray) -> SequenceResult:
    """Curves and mean overlap over the `counted` frames only (the toolkit protocols), given their IoUs."""
    errors = centre_error(pred[counted], gt[counted])
    normalized = normalized_centre_error(pred[counted], gt[counted])
    curves = _curves(ious, errors, normalized, protocol, int(counted.sum()))
    return SequenceResult(name, protocol, ious, *curves, float(np.mean(ious)) if len(ious) else 0.0,
                          len(gt), int(counted.sum()))


def _score_pytracking(pred, gt, visible, cover, image_size, dataset, name) -> SequenceResult:
    pred = np.where(np.isfinite(pred), pred, 0.0)
    # A zero-size prediction repeats the previous box (where the frame is annotated).
    for index in range(1, len(pred)):
        if (pred[index, 2:] == 0).any() and not np.isnan(gt[index]).any():
            pred[index] = pred[index - 1]
    pred[0] = gt[0]
    valid = (gt[:, 2] > 0) & (gt[:, 3] > 0) & visible
    with np.errstate(invalid='ignore', divide='ignore'):
        ious = np.where(valid, _pixel_iou(pred, gt), -1.0)
        errors = np.where(valid, centre_error(pred, gt), np.inf)
        delta = (_centre(pred) - _centre(gt)) / gt[:, 2:]
        normalized = np.where(valid, np.sqrt((delta ** 2).sum(axis=1)), -1.0)
    if dataset == 'uav123':  # pytracking's 'uav': unannotated frames count as centre hits
        errors[~valid] = -1.0
    if dataset == 'lasot':
        errors[~visible] = np.inf
        normalized[~visible] = np.inf
    curves = _curves(ious, errors, normalized, 'pytracking', len(gt))
    overlap = float(np.mean(ious[valid])) if valid.any() else 0.0
    return SequenceResult(name, 'pytracking', ious, *curves, overlap, len(gt), len(gt))


@dataclass
class Summary:
    """Overall figures of one tracker on a set of sequences under one protocol."""

    protocol: str
    sequences: int
    success_curve: np.ndarray
    precision_curve: np.ndarray
    normalized_precision_curve: np.ndarray
    auc: float
    precision: float
    normalized_precision: float
    average_overlap: float
    sr50: float
    sr75: float
    fps: float

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers and lists (JSON-ready)."""
        return {key: (value.tolist() if isinstance(value, np.ndarray) else value)
                for key, value in self.__dict__.items()}


def summarize(results: Sequence[SequenceResult]) -> Summary:
    """Combine sequence results of one protocol: frames pooled for 'got10k', else sequence means."""
    if not results:
        raise MetricsError('no sequence results to summarise')
    protocols = {r.protocol for r in results}
    if len(protocols) != 1:
        raise MetricsError(f'sequence results mix protocols: {", ".join(sorted(protocols))}')
    protocol = protocols.pop()
    if protocol == 'got10k':
        return _summarize_pooled(results)
    success = np.mean([r.success_curve for r in results], axis=0)
    precision = np.mean([r.precision_curve for r in results], axis=0)
    normalized = np.mean([r.normalized_precision_curve for r in results], axis=0)
    thresholds = success_thresholds(protocol)
    speeds = [r.fps for r in results if len(r.speeds)]
    return Summary(protocol, len(results), success, precision, normalized, float(np.mean(success)),
                   float(precision[PRECISION_INDEX]), _normalized_score(protocol, normalized),
                   float(np.mean([r.average_overlap for r in results])),
                   float(success[np.argmin(np.abs(thresholds - 0.5))]),
                   float(success[np.argmin(np.abs(thresholds - 0.75))]),
                   float(np.mean(speeds)) if speeds else math.nan)


def _summarize_pooled(results: Sequence[SequenceResult]) -> Summary:
    ious = np.concatenate([r.ious for r in results])
    weights = np.array([r.counted for r in results], np.float64)
    total = weights.sum()

    def pooled(curves: Iterable[np.ndarray]) -> np.ndarray:
        # Frame-weighted mean of per-sequence curves = the curve of all frames pooled.
        stacked = np.array(list(curves))
        return (stacked * weights[:, None]).sum(0) / total if total else np.zeros(stacked.shape[1])

    success = pooled(r.success_curve for r in results)
    precision = pooled(r.precision_curve for r in results)
    normalized = pooled(r.normalized_precision_curve for r in results)
    speeds = np.concatenate([r.speeds for r in results])
    return Summary('got10k', len(results), success, precision, normalized, float(np.mean(success)),
                   float(precision[PRECISION_INDEX]), float(np.mean(normalized)),
                   float(np.mean(ious)) if len(ious) else 0.0,
                   float(np.mean(ious > 0.5)) if len(ious) else 0.0,
                   float(np.mean(ious > 0.75)) if len(ious) else 0.0,
                   float(np.mean(speeds)) if len(speeds) else math.nan)


def sequence_attribute_names(attributes: Mapping[str, Any]) -> list[str]:
    """The attributes a sequence has: true flags, per-frame arrays with any non-zero entry, and
    the names in a list of strings (e.g. {'attributes': ['IV', 'SV']})."""
    names = []
    for key, value in attributes.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            names.extend(value)
        elif isinstance(value, (bool, np.bool_)) and value:
            names.append(key)
        elif isinstance(value, np.ndarray) and value.dtype != object and value.size and np.any(value != 0):
            names.append(key)
    return sorted(set(names))


def attribute_breakdown(results: Sequence[SequenceResult]) -> dict[str, Summary]:
    """A summary per attribute over the sequences that have it (see sequence_attribute_names)."""
    groups: dict[str, list[SequenceResult]] = {}
    for result in results:
        for name in sequence_attribute_names(result.attributes):
            groups.setdefault(name, []).append(result)
    return {name: summarize(group) for name, group in sorted(groups.items())}


def score_separation(scores: Any, ious: Any, high: float = 0.5, low: float = 0.1) -> float:
    """How well a tracker's confidence tells frames on the target (IoU > high) from frames off it
    (IoU < low): the ROC AUC of the score between the two groups (1 = every on-target frame scores
    above every off-target frame, 0.5 = chance; ties count half). NaN when a group is empty."""
    scores, ious = np.asarray(scores, np.float64), np.asarray(ious, np.float64)
    if scores.shape != ious.shape:
        raise MetricsError(f'{scores.shape[0]} scores for {ious.shape[0]} IoUs')
    positive, negative = scores[ious > high], scores[ious < low]
    if not len(positive) or not len(negative):
        return float('nan')
    ranks = _average_ranks(np.concatenate([positive, negative]))
    wins = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2  # Mann-Whitney U
    return float(wins / (len(positive) * len(negative)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind='mergesort')
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]
