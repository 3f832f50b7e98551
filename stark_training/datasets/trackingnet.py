"""TrackingNet: `<root>/TRAIN_<i>/anno/<seq>.txt` (x,y,w,h per line) and
`<root>/TRAIN_<i>/frames/<seq>/<n>.jpg` (n from 0); the test chunk is `<root>/TEST/` whose
annotation holds only the first frame's box (other frames: NaN, visible=False, 'annotated')."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, Sequence, SequenceDataset, box_is_valid, read_boxes, require_dir, sorted_frames


class TrackingNet(SequenceDataset):
    """TrackingNet sequences of the given TRAIN chunks (all found by default) or of TEST."""

    name = 'trackingnet'

    def __init__(self, root: str | Path, chunks: tuple[int, ...] | None = None, split: str = 'train') -> None:
        super().__init__()
        self.root = require_dir(Path(root), 'the TrackingNet root (TRAIN_<i>/, TEST/)')
        if split not in ('train', 'test'):
            raise ValueError(f'TrackingNet split {split!r}: use train or test')
        self.split = split
        if split == 'test':
            chunk_dirs = [require_dir(self.root / 'TEST', 'the TrackingNet TEST chunk')]
        elif chunks is None:
            chunk_dirs = sorted((p for p in self.root.glob('TRAIN_*') if p.is_dir()),
                                key=lambda p: int(p.name[6:]) if p.name[6:].isdigit() else 1 << 30)
            if not chunk_dirs:
                raise DatasetError(f'{self.root}: no TRAIN_<i> chunk folders')
        else:
            chunk_dirs = [require_dir(self.root / f'TRAIN_{i}', f'TrackingNet chunk {i}') for i in chunks]
        self._entries: list[tuple[Path, str]] = []
        for chunk in chunk_dirs:
            anno_dir = require_dir(chunk / 'anno', 'the per-sequence annotation files')
            for path in sorted(anno_dir.glob('*.txt')):
                self._entries.append((chunk, path.stem))
        self._names = [name for _, name in self._entries]

    def _load(self, index: int) -> Sequence:
        chunk, name = self._entries[index]
        gt_path = chunk / 'anno' / f'{name}.txt'
        given = read_boxes(gt_path, separators=', \t')
        frame_dir = chunk / 'frames' / name
        attributes = {'chunk': chunk.name}
        if self.split == 'test':
            count = len(sorted_frames(frame_dir, ('.jpg',)))
            boxes = np.full((count, 4), np.nan)
            boxes[:min(len(given), count)] = given[:count]
            attributes['annotated'] = np.isfinite(boxes).all(axis=1)
        else:
            require_dir(frame_dir, f'the frames of {name}')
            boxes = given
        frames = [frame_dir / f'{t}.jpg' for t in range(len(boxes))]
        if self.split == 'train' and not frames[-1].is_file():
            raise DatasetError(f'{gt_path}: {len(boxes)} boxes, but {frames[-1]} is missing')
        return Sequence(name, self.name, frames, boxes, box_is_valid(boxes), attributes)
