"""Template/search pairs drawn from several datasets, as the original STARK training samples them.

Frame choice: 'causal' (STARK-S, one template): a visible template frame, then a visible search
frame within max_gap after it (the window widening by 5 each time nothing fits). 'trident_pro'
(STARK-ST, two templates): the first template and the search frame are any visible frames; the
dynamic template lies within max_gap of the search frame on the first template's side and may be
invisible. Image datasets (COCO) give every frame from the same image. Stage 2 keeps the pair with
probability pos_prob (label 1); otherwise (label 0) the search region is, with probability
hard_negative_prob (ours), another place of the same search frame with the target out of the crop
(background, another object or a look-alike near it: the score must mean "this is the target", not
"an object is here"), else an invisible frame of the same video with a centre box, or a frame of
another sequence.

Every item is a pure function of (seed, epoch, index): it builds its own numpy Generator from them,
so single-process, DDP and resumed runs see the same samples.
"""
from __future__ import annotations

from typing import Sequence as Seq

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets.base import Sequence, SequenceDataset
from .processing import ProcessingSettings, centre_box, joint_augment, process_group

Frames = tuple[Sequence, list[int]]


class TrackingPairDataset(Dataset):
    """Processed (templates, search, box, label) samples; `samples_per_epoch` items per epoch."""

    def __init__(self, datasets: Seq[SequenceDataset], ratios: Seq[float], samples_per_epoch: int,
                 settings: ProcessingSettings | None = None, stage: int = 1, num_templates: int = 1,
                 seed: int = 0, frame_sample_mode: str | None = None) -> None:
        if not datasets or len(datasets) != len(ratios):
            raise ValueError(f'{len(datasets)} datasets but {len(ratios)} ratios; give one ratio per dataset')
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f'ratios {list(ratios)} must be >= 0 with a positive sum')
        empty = [d.name for d, r in zip(datasets, ratios) if r > 0 and len(d) == 0]
        if empty:
            raise ValueError(f'dataset {empty[0]!r} has no sequences')
        if stage not in (1, 2):
            raise ValueError(f'stage must be 1 or 2, got {stage!r}')
        if num_templates not in (1, 2):
            raise ValueError(f'num_templates must be 1 (STARK-S) or 2 (STARK-ST), got {num_templates!r}')
        self.datasets = list(datasets)
        self.probabilities = np.asarray(ratios, np.float64) / float(sum(ratios))
        self.samples_per_epoch = int(samples_per_epoch)
        self.settings = settings or ProcessingSettings()
        self.stage = stage
        self.num_templates = num_templates
        self.seed = int(seed)
        self.epoch = 0
        self.frame_sample_mode = frame_sample_mode or ('causal' if num_templates == 1 else 'trident_pro')
        if self.frame_sample_mode not in ('causal', 'trident', 'trident_pro'):
            raise ValueError(f'frame_sample_mode {self.frame_sample_mode!r}: use causal, trident or trident_pro')

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples __getitem__ returns."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        for _ in range(self.settings.max_attempts):
            item = self._try_sample(rng)
            if item is not None:
                return item
        raise RuntimeError(f'no valid sample after {self.settings.max_attempts} attempts (epoch {self.epoch}, '
                           f'index {index}): check that the datasets have sequences with visible targets')

    # ------------------------------------------------------------------------------------------
    def _try_sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
        """One attempt: frames, then processing; None when the attempt is rejected."""
        dataset = self._pick_dataset(rng)
        sequence = self._pick_sequence(dataset, rng)
        if sequence is None:
            return None
        ids = self._frame_ids(dataset, sequence, rng)
        if ids is None:
            return None
        template_ids, search_id = ids
        search_sequence, search_box, label = sequence, sequence.boxes[search_id], 1.0
        search = None  # the search frame, read once (a hard negative needs its size first)
        if self.stage == 2 and rng.random() >= self.settings.pos_prob:
            label = 0.0
            negative = None
            if rng.random() < self.settings.hard_negative_prob:
                search = sequence.image(search_id)
                moved = nearby_box(sequence.boxes[search_id], search.shape[1], search.shape[0],
                                   self.settings.search_factor, rng)
                negative = None if moved is None else (sequence, search_id, moved)
            if negative is None:
                search = None
                negative = self._negative_search(dataset, sequence, rng)
            if negative is None:
                return None
            search_sequence, search_id, search_box = negative
        templates = [sequence.image(i) for i in template_ids]
        if search is None:
            search = search_sequence.image(search_id)
        if not np.isfinite(search_box).all():
            # Placed after reading the frame so that the centre box uses its size.
            search_box = centre_box(*search.shape[:2])
        images, boxes = joint_augment(templates + [search], [sequence.boxes[i] for i in template_ids]
                                      + [search_box], self.settings, rng)
        template_group = process_group(images[:-1], boxes[:-1], 'template', self.settings, rng)
        if template_group is None:
            return None
        search_group = process_group(images[-1:], boxes[-1:], 'search', self.settings, rng)
        if search_group is None:
            return None
        x, y, w, h = search_group.boxes[0] / self.settings.search_size
        return {
            'template_images': torch.from_numpy(template_group.images),
            'template_masks': torch.from_numpy(template_group.masks),
            'search_images': torch.from_numpy(search_group.images[0]),
            'search_masks': torch.from_numpy(search_group.masks[0]),
            'search_box': torch.tensor([x, y, x + w, y + h], dtype=torch.float32),
            'label': torch.tensor(label, dtype=torch.float32),
        }

    def _pick_dataset(self, rng: np.random.Generator) -> SequenceDataset:
        return self.datasets[int(rng.choice(len(self.datasets), p=self.probabilities))]

    def _pick_sequence(self, dataset: SequenceDataset, rng: np.random.Generator) -> Sequence | None:
        """A random sequence with enough visible frames (videos: more than 2 per sampled frame and
        at least min_sequence_length frames, as the original; images: a visible object)."""
        sequence = dataset[int(rng.integers(len(dataset)))]
        if not dataset.is_video:
            return sequence if sequence.visible[0] else None
        needed = 2 * (self.num_templates + 1)
        if sequence.visible.sum() > needed and len(sequence) >= self.settings.min_sequence_length:
            return sequence
        return None

    def _frame_ids(self, dataset: SequenceDataset, sequence: Sequence, rng: np.random.Generator
                   ) -> tuple[list[int], int] | None:
        """Template frame ids and the search frame id, or None when none fit."""
        if not dataset.is_video:
            return [0] * self.num_templates, 0
        if self.frame_sample_mode == 'causal':
            return causal_ids(sequence.visible, self.num_templates, self.settings.max_gap, rng)
        return trident_ids(sequence.visible, self.settings.max_gap, rng,
                           allow_invisible=self.frame_sample_mode == 'trident_pro')

    def _negative_search(self, dataset: SequenceDataset, sequence: Sequence, rng: np.random.Generator
                         ) -> tuple[Sequence, int, np.ndarray] | None:
        """Stage-2 negative: an invisible frame of this video (centre box) if there is one, else a
        frame of another random sequence with its own box (centre box where it has none)."""
        if dataset.is_video:
            invisible = sample_ids(sequence.visible, rng, mode='invisible')
            if invisible is not None:
                return sequence, invisible, np.full(4, np.nan)
        other_dataset = self._pick_dataset(rng)
        other = self._pick_sequence(other_dataset, rng)
        if other is None:
            return None
        frame = sample_ids(other.visible, rng, mode='any') if other_dataset.is_video else 0
        box = other.boxes[frame] if other.visible[frame] else np.full(4, np.nan)
        return other, frame, box


def nearby_box(box: np.ndarray, width: int, height: int, search_factor: float, rng: np.random.Generator,
               tries: int = 20) -> np.ndarray | None:
    """`box` (xywh) moved so that a search crop around it (side search_factor * sqrt(w h)) holds
    none of the original box, by at most one crop side more than that needs, its centre kept inside
    the image; None when no such place is found in `tries` random directions."""
    x, y, w, h = (float(v) for v in box)
    crop = search_factor * np.sqrt(w * h)
    for _ in range(tries):
        angle = rng.uniform(0, 2 * np.pi)
        dx, dy = np.cos(angle), np.sin(angle)
        # The shortest move along (dx, dy) that takes the box out of the crop on one axis.
        clear = min((crop + w) / 2 / max(abs(dx), 1e-6), (crop + h) / 2 / max(abs(dy), 1e-6))
        distance = clear * 1.001 + rng.uniform(0.0, crop)
        cx, cy = x + w / 2 + dx * distance, y + h / 2 + dy * distance
        if 0 <= cx < width and 0 <= cy < height:
            return np.array([cx - w / 2, cy - h / 2, w, h])
    return None


def sample_ids(visible: np.ndarray, rng: np.random.Generator, low: int = 0, high: int | None = None,
               mode: str = 'visible') -> int | None:
    """A random frame id in [low, high) that is visible ('visible'), not ('invisible') or any
    ('any'); None when there is none. The range is clipped to the sequence."""
    high = len(visible) if high is None else min(high, len(visible))
    low = max(low, 0)
    if low >= high:
        return None
    window = visible[low:high]
    if mode == 'visible':
        candidates = np.flatnonzero(window)
    elif mode == 'invisible':
        candidates = np.flatnonzero(~window)
    else:
        candidates = np.arange(high - low)
    return None if len(candidates) == 0 else low + int(candidates[rng.integers(len(candidates))])


def causal_ids(visible: np.ndarray, num_templates: int, max_gap: int, rng: np.random.Generator,
               max_tries: int = 100) -> tuple[list[int], int] | None:
    """'causal': a base template, extra templates up to max_gap before it, the search frame up to
    max_gap after it; the gap grows by 5 after each failed try, as the original."""
    gap_increase = 0
    for _ in range(max_tries):
        base = sample_ids(visible, rng, num_templates - 1, len(visible) - 1)
        if base is None:
            return None
        previous = [sample_ids(visible, rng, base - max_gap - gap_increase, base) for _ in range(num_templates - 1)]
        if any(p is None for p in previous):
            gap_increase += 5
            continue
        search = sample_ids(visible, rng, base + 1, base + max_gap + gap_increase)
        gap_increase += 5
        if search is not None:
            return [base] + previous, search
    return None


def trident_ids(visible: np.ndarray, max_gap: int, rng: np.random.Generator, allow_invisible: bool,
                max_tries: int = 100) -> tuple[list[int], int] | None:
    """'trident(_pro)': initial template and search frame anywhere (visible), the dynamic template
    within max_gap of the search frame on the initial template's side (invisible allowed in _pro)."""
    for _ in range(max_tries):
        first = sample_ids(visible, rng)
        search = sample_ids(visible, rng)
        if first is None or search is None:
            return None
        low, high = (search, search + max_gap) if first >= search else (search - max_gap, search)
        dynamic = sample_ids(visible, rng, low, high, mode='any' if allow_invisible else 'visible')
        if dynamic is not None:
            return [first, dynamic], search
    return None

