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


def validate_box(box: Sequence[float], image_width: int, image_height: int) -> Box:
    """A finite xywh box with positive size that overlaps the image, else ValueError saying why."""
    if len(box) != 4:
        raise ValueError(f'a box has 4 values (x, y, width, height), got {len(box)}')
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f'box ({x}, {y}, {w}, {h}) has a non-finite value')
    if w <= 0 or h <= 0:
        raise ValueError(f'box size {w:g}x{h:g} must be positive')
    if x >= image_width or y >= image_height or x + w <= 0 or y + h <= 0:
        raise ValueError(f'box ({x:g}, {y:g}, {w:g}, {h:g}) lies outside the '
                         f'{image_width}x{image_height} image')
    return x, y, w, h


def clip_box(box: Sequence[float], image_height: int, image_width: int, margin: float = 10) -> Box:
    """Clip an xywh box into the image keeping at least `margin` pixels of it and of its size.

    STARK's test-time rule: the result never collapses to zero size when the prediction leaves
    the image, so the next search region stays anchored near the border.
    """
    x1, y1, w, h = box
    x2, y2 = x1 + w, y1 + h
    x1 = min(max(0, x1), image_width - margin)
    x2 = min(max(margin, x2), image_width)
    y1 = min(max(0, y1), image_height - margin)
    y2 = min(max(margin, y2), image_height)
    # float(): max(0, x) and max(margin, w) return the int bound, and a Box is floats (ROS float64
    # message fields refuse ints).
    return float(x1), float(y1), float(max(margin, x2 - x1)), float(max(margin, y2 - y1))


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
