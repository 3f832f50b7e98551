"""Synthetic videos made of real photos: a patch cut from one photo moves over another photo.

Each sequence takes its background from one photo and its target from a rectangle of another;
the target follows a smooth random path with a slowly changing size and aspect, and the background
pans slowly, so crops look like real imagery while the ground truth is exact. Used for training
pairs (photos listed in the training config) and for evaluation sequences (other photos).
Deterministic for a given seed and photo list.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence as Seq

import cv2
import numpy as np

from .datasets.base import DatasetError, Sequence, SequenceDataset
from .datasets.synthetic import InMemorySequence


def read_photo(path: Path) -> np.ndarray:
    """RGB uint8 photo; DatasetError naming the file when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f'{path}: cannot be read as an image (missing or not an image file)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _smooth_path(rng: np.random.Generator, num_frames: int, low: float, high: float, speed: float) -> np.ndarray:
    """A smooth random walk in [low, high] moving about `speed` per frame (sum of two sinusoids)."""
    span = max(high - low, 1e-6)
    t = np.arange(num_frames, dtype=np.float64)
    phases = rng.uniform(0, 2 * math.pi, 2)
    frequencies = speed / span * rng.uniform(0.5, 1.5, 2)
    wave = 0.6 * np.sin(frequencies[0] * t + phases[0]) + 0.4 * np.sin(2.1 * frequencies[1] * t + phases[1])
    return low + span * (0.5 + 0.5 * wave)


def _moving_patch(source: np.ndarray, rng: np.random.Generator, num_frames: int, size: tuple[int, int],
                  motion: float) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle cut from `source` and its xywh box per frame along a smooth random path, with
    a slowly changing size."""
    width, height = size
    src_h, src_w = source.shape[:2]
    patch_w = int(rng.uniform(0.2, 0.5) * src_w)
    patch_h = int(np.clip(patch_w * rng.uniform(0.5, 2.0), 0.15 * src_h, 0.6 * src_h))
    px, py = int(rng.integers(0, src_w - patch_w + 1)), int(rng.integers(0, src_h - patch_h + 1))
    patch = source[py:py + patch_h, px:px + patch_w]

    base_side = rng.uniform(0.12, 0.3) * min(width, height)
    sizes = base_side * np.exp(0.25 * np.sin(np.linspace(0, rng.uniform(1, 3), num_frames) + rng.uniform(0, 6)))
    aspect = patch_w / patch_h
    widths, heights = sizes * math.sqrt(aspect), sizes / math.sqrt(aspect)
    margin = sizes.max()
    cx = _smooth_path(rng, num_frames, margin / 2, width - margin / 2, motion)
    cy = _smooth_path(rng, num_frames, margin / 2, height - margin / 2, motion)
    boxes = []
    for t in range(num_frames):
        w, h = max(int(round(widths[t])), 4), max(int(round(heights[t])), 4)
        x = int(np.clip(round(cx[t] - w / 2), 0, width - w))
        y = int(np.clip(round(cy[t] - h / 2), 0, height - h))
        boxes.append((x, y, w, h))
    return patch, np.asarray(boxes, np.float64)


def make_photo_sequence(background: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                        num_frames: int = 40, size: tuple[int, int] = (480, 360), motion: float = 4.0,
                        distractor_sources: Seq[np.ndarray] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (RGB uint8, size = (width, height)) and the xywh box per frame of a target patch cut
    from `source`, pasted over a slowly panning view of `background`. Each of `distractor_sources`
    adds another moving patch (beneath the target, which stays fully visible): things that look
    like targets but are not the one the template shows."""
    width, height = size
    scale = max(width / background.shape[1], height / background.shape[0]) * 1.25
    canvas = cv2.resize(background, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pan_x = _smooth_path(rng, num_frames, 0, canvas.shape[1] - width, 1.0).round().astype(int)
    pan_y = _smooth_path(rng, num_frames, 0, canvas.shape[0] - height, 1.0).round().astype(int)
    target = _moving_patch(source, rng, num_frames, size, motion)
    others = [_moving_patch(other, rng, num_frames, size, motion) for other in distractor_sources]

    frames = []
    for t in range(num_frames):
        frame = canvas[pan_y[t]:pan_y[t] + height, pan_x[t]:pan_x[t] + width].copy()
        for patch, boxes in [*others, target]:
            x, y, w, h = (int(v) for v in boxes[t])
            frame[y:y + h, x:x + w] = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    return frames, target[1]


class PhotoSequences(SequenceDataset):
    """`num_sequences` videos from the listed photos; sequence i draws its background and target
    photos (always two different ones) from a generator seeded with (seed, i)."""

    name = 'photos'
    cache_size = 16  # a sequence holds its frames in memory (about 20 MB)

    def __init__(self, photos: Seq[str | Path], num_sequences: int = 32, num_frames: int = 40,
                 seed: int = 0, size: tuple[int, int] = (480, 360), distractors: int = 0) -> None:
        super().__init__()
        self.photo_paths = [Path(p) for p in photos]
        if len(self.photo_paths) < 2:
            raise DatasetError(f'photo sequences need at least 2 photos, got {len(self.photo_paths)}')
        self.photos = [read_photo(p) for p in self.photo_paths]
        self.num_frames = num_frames
        self.seed = seed
        self.size = size
        self.distractors = distractors
        self._names = [f'photos-{seed}-{i}' for i in range(num_sequences)]

    def _load(self, index: int) -> Sequence:
        rng = np.random.default_rng([self.seed, index])
        background, target = rng.choice(len(self.photos), 2, replace=False)
        # Distractors: patches of any listed photo, the target's own included (the hardest case),
        # chosen by a generator of their own so that the target's video is the one without them.
        chooser = np.random.default_rng([self.seed, index, 1])
        others = [self.photos[k] for k in chooser.integers(0, len(self.photos), self.distractors)]
        frames, boxes = make_photo_sequence(self.photos[background], self.photos[target], rng,
                                            self.num_frames, self.size, distractor_sources=others)
        sequence = InMemorySequence(self._names[index], frames, boxes, dataset='synthetic')
        sequence.attributes['photos'] = [self.photo_paths[background].name, self.photo_paths[target].name]
        return sequence


def photo_sequences(root: str | Path, photos: Seq[str], sequences: int = 32, frames: int = 40, seed: int = 0,
                    width: int = 480, height: int = 360, distractors: int = 0) -> PhotoSequences:
    """The `photos` reader of open_dataset: PhotoSequences of the named photos in `root`."""
    return PhotoSequences([Path(root) / name for name in photos], sequences, frames, seed, (width, height),
                          distractors)
