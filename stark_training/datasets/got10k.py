"""GOT-10k: `<root>/<split>/list.txt` and `<root>/<split>/<seq>/%08d.jpg`, groundtruth.txt,
absence.label, cover.label (0-8), cut_by_image.label, meta_info.ini.

The test split's groundtruth.txt holds only the first frame's box: the other frames get NaN boxes
and visible=False (attribute 'annotated' marks the frames with a box). The original STARK trains on
'vottrain' (train minus the 1,000 'votval' sequences); those lists are not shipped here: pass
vot_split=<file> with one sequence name or 0-based list.txt index per line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (DatasetError, Sequence, SequenceDataset, box_is_valid, read_boxes, read_flags, read_lines,
                   require_dir, sorted_frames)


class GOT10k(SequenceDataset):
    """GOT-10k sequences of a split; visible = not absent, cover > 0 and a non-empty box."""

    name = 'got10k'

    def __init__(self, root: str | Path, split: str = 'train', vot_split: str | Path | None = None) -> None:
        super().__init__()
        if split not in ('train', 'val', 'test'):
            raise ValueError(f'GOT-10k split {split!r}: use train, val or test')
        self.split = split
        self.split_dir = require_dir(Path(root) / split, f'the GOT-10k {split} split')
        names = [line for line in read_lines(self.split_dir / 'list.txt') if line]
        self._names = names if vot_split is None else _select(names, Path(vot_split))

    def _load(self, index: int) -> Sequence:
        name = self._names[index]
        folder = require_dir(self.split_dir / name, f'GOT-10k sequence {name} (listed in list.txt)')
        frames = sorted_frames(folder, ('.jpg',))
        gt_path = folder / 'groundtruth.txt'
        given = read_boxes(gt_path, separators=',')
        attributes = {'meta': read_meta_info(folder / 'meta_info.ini')}
        if self.split == 'test':
            boxes = np.full((len(frames), 4), np.nan)
            boxes[:len(given)] = given[:len(frames)]
            annotated = np.isfinite(boxes).all(axis=1)
            attributes['annotated'] = annotated
            return Sequence(name, self.name, frames, boxes, annotated & box_is_valid(boxes), attributes)
        if len(given) != len(frames):
            raise DatasetError(f'{gt_path}: {len(given)} boxes, but {folder} has {len(frames)} frames')
        absence = read_flags(folder / 'absence.label', len(frames)).astype(bool)
        cover = read_flags(folder / 'cover.label', len(frames))
        cut = read_flags(folder / 'cut_by_image.label', len(frames)).astype(bool)
        attributes.update(absence=absence, cover=cover, cut_by_image=cut)
        return Sequence(name, self.name, frames, given, ~absence & (cover > 0) & box_is_valid(given), attributes)


def _select(names: list[str], split_file: Path) -> list[str]:
    """The sequences a split file lists, by name or by 0-based index into list.txt."""
    if not split_file.is_file():
        raise DatasetError(f'{split_file}: missing (vot_split is a file of sequence names or list.txt '
                           'indices; the vottrain/votval lists are not shipped with stark_training)')
    chosen = []
    for number, entry in enumerate(read_lines(split_file), start=1):
        if not entry:
            continue
        if entry.isdigit():
            if int(entry) >= len(names):
                raise DatasetError(f'{split_file}:{number}: index {entry} beyond the {len(names)} sequences')
            chosen.append(names[int(entry)])
        elif entry in names:
            chosen.append(entry)
        else:
            raise DatasetError(f'{split_file}:{number}: sequence {entry!r} is not in list.txt')
    return chosen


def read_meta_info(path: Path) -> dict[str, str]:
    """'key: value' lines of meta_info.ini (after its [METAINFO] header); {} when the file is absent."""
    if not path.is_file():
        return {}
    meta = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line or line.startswith('[') or line.startswith(('#', ';')):
            continue
        key, sep, value = line.partition(':')
        if not sep:
            raise DatasetError(f'{path}:{number}: expected "key: value", got {line!r}')
        meta[key.strip()] = value.strip()
    return meta
