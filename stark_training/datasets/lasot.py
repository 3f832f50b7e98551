"""LaSOT: `<root>/<class>/<class>-<n>/img/%08d.jpg`, groundtruth.txt (x,y,w,h per line),
full_occlusion.txt and out_of_view.txt (comma-separated 0/1 per frame).

Splits follow the LaSOT paper's Protocol II: 'test' is the 280 sequences listed in
lasot_test_split.txt (4 per class, from the LaSOT toolkit); 'train' is every other sequence found
under the root (the official 1,120 on a complete copy); 'all' is everything found.
"""
from __future__ import annotations

from pathlib import Path


from .base import (DatasetError, Sequence, SequenceDataset, box_is_valid, read_boxes, read_flags, read_lines,
                   require_dir)

TEST_SPLIT_FILE = Path(__file__).with_name('lasot_test_split.txt')


def lasot_test_split() -> list[str]:
    """The 280 LaSOT test sequence names."""
    return [line for line in read_lines(TEST_SPLIT_FILE) if line and not line.startswith('#')]


class LaSOT(SequenceDataset):
    """LaSOT sequences of one split; visible = not fully occluded, not out of view, box non-empty."""

    name = 'lasot'

    def __init__(self, root: str | Path, split: str = 'train') -> None:
        super().__init__()
        self.root = require_dir(Path(root), 'the LaSOT root (<class>/<class>-<n>/)')
        if split not in ('train', 'test', 'all'):
            raise ValueError(f'LaSOT split {split!r}: use train, test or all')
        test = lasot_test_split()
        if split == 'test':
            self._names = test
            for name in test:
                require_dir(self._sequence_dir(name), f'LaSOT test sequence {name}')
        else:
            found = sorted(p.name for c in self.root.iterdir() if c.is_dir()
                           for p in c.iterdir() if p.is_dir() and p.name.startswith(f'{c.name}-'))
            excluded = set(test) if split == 'train' else set()
            self._names = [name for name in found if name not in excluded]

    def _sequence_dir(self, name: str) -> Path:
        return self.root / name.rsplit('-', 1)[0] / name

    def _load(self, index: int) -> Sequence:
        name = self._names[index]
        folder = self._sequence_dir(name)
        boxes = read_boxes(folder / 'groundtruth.txt', separators=',')
        occlusion = read_flags(folder / 'full_occlusion.txt', len(boxes)).astype(bool)
        out_of_view = read_flags(folder / 'out_of_view.txt', len(boxes)).astype(bool)
        image_dir = folder / 'img'
        if not image_dir.is_dir():
            raise DatasetError(f'{image_dir}: missing (the frames of {name})')
        frames = [image_dir / f'{t:08d}.jpg' for t in range(1, len(boxes) + 1)]
        visible = ~occlusion & ~out_of_view & box_is_valid(boxes)
        return Sequence(name, self.name, frames, boxes, visible,
                        attributes={'class': name.rsplit('-', 1)[0], 'full_occlusion': occlusion,
                                    'out_of_view': out_of_view})
