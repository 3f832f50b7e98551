"""Synthetic sequences (stark_training.synthetic) as a SequenceDataset, frames held in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..synthetic import make_sequence
from .base import Sequence, SequenceDataset


class InMemorySequence(Sequence):
    """A Sequence whose frames are arrays in memory; `frames` holds placeholder names only."""

    def __init__(self, name: str, images: list[np.ndarray], boxes: np.ndarray, dataset: str = 'synthetic') -> None:
        self.images = images
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        visible = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        super().__init__(name, dataset, [Path(name) / f'{t:05d}' for t in range(len(images))], boxes, visible)

    def image(self, index: int) -> np.ndarray:
        """Frame `index` (RGB uint8, not copied)."""
        return self.images[index]


class SyntheticDataset(SequenceDataset):
    """`num_sequences` synthetic single-target videos; sequence i is make_sequence(seed=seed+i)."""

    name = 'synthetic'
    cache_size = 8

    def __init__(self, num_sequences: int = 4, num_frames: int = 30, width: int = 320, height: int = 240,
                 seed: int = 0, target_size: float = 50.0) -> None:
        super().__init__()
        self.options = dict(num_frames=num_frames, width=width, height=height, target_size=target_size)
        self.seed = seed
        self._names = [f'synthetic-{seed + i}' for i in range(num_sequences)]

    def _load(self, index: int) -> Sequence:
        video = make_sequence(seed=self.seed + index, **self.options)
        boxes = np.asarray([frame[0] for frame in video.boxes], np.float64)
        return InMemorySequence(self._names[index], video.frames, boxes)
