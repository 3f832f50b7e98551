"""Box formats and the box arithmetic of the STARK tracker; the one place formats are converted.

Formats: xywh = (left, top, width, height) in pixels, as trackers and datasets report boxes;
xyxy = (x1, y1, x2, y2); cxcywh = (centre x, centre y, width, height), as the network predicts.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

Box = tuple[float, float, float, float]


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes as corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def generalized_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise GIoU and IoU of two (N, 4) xyxy box sets (row i with row i).

    An inverted box (x2 < x1, which an untrained corner head can predict) counts as empty rather
    than failing: its IoU is 0 and the enclosing-box term still pulls it towards the other box.
    """
    wh1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0)
    wh2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0)
    area1, area2 = wh1[:, 0] * wh1[:, 1], wh2[:, 0] * wh2[:, 1]
    inner = (torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    intersection = inner[:, 0] * inner[:, 1]
    union = area1 + area2 - intersection
    iou = intersection / (union + eps)
    outer = (torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])).clamp(min=0)
    enclosing = outer[:, 0] * outer[:, 1]
    return iou - (enclosing - union) / (enclosing + eps), iou


# A box wider or taller than this many images is refused: no target is, and its crop would be a
# square of thousands of image sizes (crop_square stays bounded, but nothing useful is in it).
MAX_BOX_TO_IMAGE = 16
# The smallest box area accepted (a hundredth of a pixel).
MIN_BOX_AREA = 0.01


def validate_box(box: Sequence[float], image_width: int, image_height: int) -> Box:
    """A finite xywh box of at least MIN_BOX_AREA that overlaps the image and is at most
    MAX_BOX_TO_IMAGE times its width and height, else ValueError saying why."""
    if len(box) != 4:
        raise ValueError(f'a box has 4 values (x, y, width, height), got {len(box)}')
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f'box ({x}, {y}, {w}, {h}) has a non-finite value')
    if w <= 0 or h <= 0:
        raise ValueError(f'box size {w:g}x{h:g} must be positive')
    if w * h < MIN_BOX_AREA:
        # Below this the crop side rounds to nothing (or w*h underflows to 0).
        raise ValueError(f'box size {w:g}x{h:g} is too small: its area must be at least {MIN_BOX_AREA:g} px²')
    if w > MAX_BOX_TO_IMAGE * image_width or h > MAX_BOX_TO_IMAGE * image_height:
        raise ValueError(f'box size {w:g}x{h:g} is more than {MAX_BOX_TO_IMAGE} times the '
                         f'{image_width}x{image_height} image')
    if x >= image_width or y >= image_height or x + w <= 0 or y + h <= 0:
        raise ValueError(f'box ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the '
                         f'{image_width}x{image_height} image')
    return x, y, w, h


def clip_box(box: Sequence[float], image_height: int, image_width: int, margin: float = 10) -> Box:
    """Clip an xywh box into the image keeping at least `margin` pixels of it and of its size.

    STARK's test-time rule: the result never collapses to zero size when the prediction leaves
    the image, so the next search region stays anchored near the border. On an image narrower or
    lower than the margin the margin shrinks to the image's size, so the box stays inside (the
    original's rule would place it partly left of or above the image).
    """
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    margin_x, margin_y = min(margin, image_width), min(margin, image_height)
    x1 = min(max(0, x1), image_width - margin_x)
    x2 = min(max(margin_x, x2), image_width)
    y1 = min(max(0, y1), image_height - margin_y)
    y2 = min(max(margin_y, y2), image_height)
    # float(): max(0, x) and max(margin, w) return the int bound, and a Box is floats (ROS float64
    # message fields refuse ints).
    return float(x1), float(y1), float(max(margin_x, x2 - x1)), float(max(margin_y, y2 - y1))


def map_box_back(pred_box: Sequence[float], previous: Sequence[float], search_size: int,
                 resize_factor: float) -> Box:
    """Map a cxcywh prediction in search-crop pixels (already scaled to image units by
    1/resize_factor) back to an xywh box in the image, the crop being centred on `previous`."""
    cx_prev = previous[0] + 0.5 * previous[2]
    cy_prev = previous[1] + 0.5 * previous[3]
    cx, cy, w, h = pred_box
    half_side = 0.5 * search_size / resize_factor
    cx_real = cx + (cx_prev - half_side)
    cy_real = cy + (cy_prev - half_side)
    return cx_real - 0.5 * w, cy_real - 0.5 * h, w, h


def iou_xywh(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xywh boxes, continuous convention (x2 = x + w)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
