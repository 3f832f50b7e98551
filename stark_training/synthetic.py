"""Synthetic video sequences with exact ground truth, for tests, demos and smoke training.

Textured rectangles move smoothly over a textured background, changing scale slightly; every
frame's ground-truth box of every target is known exactly. Deterministic for a given seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class SyntheticSequence:
    """frames: RGB uint8 (H, W, 3) each; boxes[t][k]: xywh float box of target k in frame t."""

    frames: list[np.ndarray]
    boxes: list[list[tuple[float, float, float, float]]]

    def __len__(self) -> int:
        return len(self.frames)


def _texture(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth random colour texture: a coarse random grid upsampled bicubically."""
    coarse = rng.integers(0, 256, (cells, max(1, cells * width // max(height, 1)), 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _object_patch(rng: np.random.Generator, size: int) -> np.ndarray:
    """A distinctive object: bold stripes and a disc on a saturated colour."""
    base = np.zeros((size, size, 3), np.uint8)
    base[:] = rng.integers(60, 256, 3, dtype=np.uint8)
    stripe = rng.integers(0, 256, 3, dtype=np.uint8)
    period = max(4, size // 6)
    for start in range(0, size, 2 * period):
        base[:, start:start + period] = stripe
    cv2.circle(base, (size // 2, size // 2), size // 4, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return base


def make_sequence(num_frames: int = 60, width: int = 640, height: int = 480, num_targets: int = 1,
                  seed: int = 0, target_size: float = 70.0, motion: float = 2.5) -> SyntheticSequence:
    """Targets start spread across the image and follow smooth Lissajous paths at about
    `motion` pixels per frame, with sizes varying by up to +-20%."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, height, width, cells=12)
    patches = [_object_patch(rng, 128) for _ in range(num_targets)]
    aspect = rng.uniform(0.6, 1.6, num_targets)
    phases = rng.uniform(0, 2 * math.pi, (num_targets, 3))
    centres = [(width * (k + 1) / (num_targets + 1), height / 2) for k in range(num_targets)]
    radius = (min(width / (2 * (num_targets + 1)), width / 4), height / 4)
    angular = motion / max(radius)

    frames, boxes = [], []
    for t in range(num_frames):
        frame = background.copy()
        frame_boxes = []
        for k in range(num_targets):
            scale = 1 + 0.2 * math.sin(0.05 * t + phases[k, 2])
            w = target_size * scale * math.sqrt(aspect[k])
            h = target_size * scale / math.sqrt(aspect[k])
            cx = centres[k][0] + radius[0] * math.sin(angular * t + phases[k, 0])
            cy = centres[k][1] + radius[1] * math.sin(1.3 * angular * t + phases[k, 1])
            x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
            x2, y2 = int(round(cx + w / 2)), int(round(cy + h / 2))
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            frame[y1:y2, x1:x2] = cv2.resize(patches[k], (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
            frame_boxes.append((float(x1), float(y1), float(x2 - x1), float(y2 - y1)))
        frames.append(frame)
        boxes.append(frame_boxes)
    return SyntheticSequence(frames, boxes)
