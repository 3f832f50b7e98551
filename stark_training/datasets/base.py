"""The common shape of every dataset: a Sequence of frames and boxes, and a SequenceDataset of them.

Readers for each on-disk layout subclass SequenceDataset; they list their sequences when built and
read a sequence's annotation files only when it is first asked for (a small per-reader cache keeps
recently used ones), so opening a large dataset is quick.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


@dataclass
class Sequence:
    """One target in one video: frame files, xywh boxes (NaN where none) and visibility per frame."""

    name: str
    dataset: str
    frames: list[Path]
    boxes: np.ndarray
    visible: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.visible = np.asarray(self.visible, bool).reshape(-1)
        if not (len(self.frames) == len(self.boxes) == len(self.visible)):
            raise DatasetError(f'sequence {self.name!r} ({self.dataset}): {len(self.frames)} frames, '
                               f'{len(self.boxes)} boxes and {len(self.visible)} visibility flags differ')

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, index: int) -> np.ndarray:
        """Frame `index` as RGB uint8 (H, W, 3)."""
        return read_rgb(self.frames[index])


class SequenceDataset:
    """A list of Sequences read from one on-disk layout; subclasses implement _load(index)."""

    name: str = 'dataset'
    is_video: bool = True
    cache_size: int = 64

    def __init__(self) -> None:
        self._names: list[str] = []
        self._cache: OrderedDict[int, Sequence] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index: int) -> Sequence:
        if not -len(self) <= index < len(self):
            raise IndexError(f'{self.name}: sequence index {index} out of range (0..{len(self) - 1})')
        index %= len(self)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        sequence = self._load(index)
        self._cache[index] = sequence
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return sequence

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def sequence_names(self) -> list[str]:
        """Names of the sequences, in index order."""
        return list(self._names)

    def _load(self, index: int) -> Sequence:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # DataLoader workers receive a copy; the cache is not worth sending.
        state = self.__dict__.copy()
        state['_cache'] = OrderedDict()
        return state


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3); DatasetError naming the file if it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = 'is missing' if not Path(path).exists() else 'is not a readable image'
        raise DatasetError(f'{path}: {reason}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a directory, else DatasetError saying what was expected there."""
    if not path.is_dir():
        raise DatasetError(f'{path}: missing ({what} expected here)')
    return path


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, stripped; DatasetError naming the file if missing or unreadable."""
    try:
        return [line.strip() for line in path.read_text(encoding='utf-8-sig').splitlines()]
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing') from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f'{path}: unreadable ({exc})') from None


def read_boxes(path: Path, separators: str = ',', allow_nan: bool = True) -> np.ndarray:
    """(N, 4) float64 xywh boxes, one per line separated by any of `separators` (' ' also covers
    tabs); blank trailing lines are ignored; a malformed line raises DatasetError naming file:line."""
    lines = read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    boxes = np.empty((len(lines), 4), np.float64)
    for number, line in enumerate(lines, start=1):
        text = line
        for sep in separators:
            text = text.replace(sep, ' ')
        fields = text.split()
        if len(fields) != 4:
            raise DatasetError(f'{path}:{number}: expected 4 box values (x, y, w, h), got {len(fields)}: {line!r}')
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(f'{path}:{number}: a box value is not a number: {line!r}') from None
        if not allow_nan and not all(math.isfinite(v) for v in values):
            raise DatasetError(f'{path}:{number}: box value is not finite: {line!r}')
        boxes[number - 1] = values
    return boxes


def read_flags(path: Path, count: int | None = None, separators: str = ',') -> np.ndarray:
    """Integer labels (e.g. 0/1 flags, cover levels), comma- or line-separated; DatasetError naming
    file:line for a non-integer and the file when the count differs from `count`."""
    values: list[int] = []
    for number, line in enumerate(read_lines(path), start=1):
        text = line
        for sep in separators:
            text = text.replace(sep, ' ')
        for token in text.split():
            try:
                value = float(token)
            except ValueError:
                value = math.nan
            if not value.is_integer():
                raise DatasetError(f'{path}:{number}: label {token!r} is not an integer')
            values.append(int(value))
    if count is not None and len(values) != count:
        raise DatasetError(f'{path}: {len(values)} labels, but the sequence has {count} frames')
    return np.asarray(values, np.int64)


def box_is_valid(boxes: np.ndarray) -> np.ndarray:
    """Per row: finite with positive width and height."""
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def sorted_frames(folder: Path, extensions: Iterable[str] = ('.jpg', '.jpeg', '.png', '.bmp')) -> list[Path]:
    """Image files in `folder`, in natural (numeric where possible) order; DatasetError if none."""
    require_dir(folder, 'a folder of frames')
    exts = {e.lower() for e in extensions}
    frames = [p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file()]
    if not frames:
        raise DatasetError(f'{folder}: no image files ({", ".join(sorted(exts))})')
    return sorted(frames, key=_natural_key)


def _natural_key(path: Path) -> list:
    # '2.jpg' before '10.jpg' even where numbers are not zero-padded.
    return [(0, int(chunk), '') if chunk.isdigit() else (1, 0, chunk) for chunk in re.split(r'(\d+)', path.name)]


def check_frame_count(sequence_dir: Path, frames: list[Path], boxes: np.ndarray, gt_path: Path) -> None:
    """DatasetError naming the ground-truth file when it has fewer boxes than there are frames."""
    if len(boxes) != len(frames):
        raise DatasetError(f'{gt_path}: {len(boxes)} boxes, but {sequence_dir} has {len(frames)} frames')
