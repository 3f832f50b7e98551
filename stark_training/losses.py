"""STARK's training objectives: box regression (stage 1) and target-presence scoring (stage 2).

Stage 1: `l1_weight * L1 + giou_weight * (1 - GIoU)` between the predicted boxes and the ground
truth, both as normalised xyxy in the search crop, the ground truth clamped to [0, 1] (the target
may stick out of the crop after jitter; the network can only predict inside it). Every query is
compared with the one ground-truth box. Stage 2: binary cross-entropy on the score head's logit.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from stark_model.box_ops import cxcywh_to_xyxy, generalized_iou


class NonFiniteLossError(FloatingPointError):
    """The network produced NaN or infinite boxes or logits; training cannot continue sensibly."""


class LossResult(NamedTuple):
    """The loss to back-propagate and its parts as plain floats for logging; unpacks as (total, parts)."""

    total: torch.Tensor
    parts: dict[str, float]


def box_loss(pred_boxes: torch.Tensor, search_box: torch.Tensor, l1_weight: float = 5.0,
             giou_weight: float = 2.0) -> LossResult:
    """Stage 1. pred_boxes: (B, Nq, 4) normalised cxcywh (NetworkOutput.boxes); search_box: (B, 4)
    normalised xyxy ground truth (unclamped)."""
    predicted = cxcywh_to_xyxy(pred_boxes.float()).reshape(-1, 4)  # (B*Nq, 4)
    if not torch.isfinite(predicted).all():
        raise NonFiniteLossError('the network predicted non-finite boxes (diverged training?)')
    queries = pred_boxes.shape[1]
    target = search_box.float().repeat_interleave(queries, dim=0).clamp(0.0, 1.0)
    giou, iou = generalized_iou(predicted, target)
    giou_term = (1 - giou).mean()
    l1_term = F.l1_loss(predicted, target)
    total = giou_weight * giou_term + l1_weight * l1_term
    return LossResult(total, {'loss': float(total.detach()), 'giou': float(giou_term.detach()),
                              'l1': float(l1_term.detach()), 'iou': float(iou.detach().mean())})


def score_loss(logits: torch.Tensor, label: torch.Tensor, cls_weight: float = 1.0) -> LossResult:
    """Stage 2. logits: (B, Nq, 1) (NetworkOutput.logits); label: (B,) 1.0 where the target is in
    the search crop, 0.0 where it is not."""
    logits = logits.float().reshape(label.shape[0], -1).mean(dim=1)
    if not torch.isfinite(logits).all():
        raise NonFiniteLossError('the score head produced non-finite logits')
    bce = F.binary_cross_entropy_with_logits(logits, label.float())
    accuracy = ((logits > 0).float() == label.float()).float().mean()
    total = cls_weight * bce
    return LossResult(total, {'loss': float(total.detach()), 'bce': float(bce.detach()),
                              'accuracy': float(accuracy)})
