"""OTB-2013/OTB-100 (evaluation only: never train on it): `<root>/<seq>/img/%04d.jpg` and
`groundtruth_rect.txt` (comma, space or tab separated), or `groundtruth.txt` as many copies of OTB
(and ../shared/data/otb_val) name it. Videos with two targets (Jogging, Skating2) have
groundtruth_rect.1.txt and .2.txt and give sequences '<seq>-1' and '<seq>-2'.
Box i belongs to frame start + i, where start is 1 except in START_FRAMES (the videos whose
annotation starts later, from the OTB toolkit's sequence table); copies that renumbered such a
video's annotated frames from 0001 are recognised by the missing later frames and start at 1.
Videos with extra frames after the last box (Football1, Freeman3, ...) simply use the first ones.
Boxes are returned as written (OTB counts pixels from 1; see docs/EVALUATION.md, --box-origin).
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetError, Sequence, SequenceDataset, box_is_valid, read_boxes, require_dir

START_FRAMES = {'David': 300, 'BlurCar1': 247, 'BlurCar3': 3, 'BlurCar4': 18}
# Single-target ground-truth file names, in order of preference: the OTB toolkit's, then the
# name that many redistributed copies use.
PLAIN_NAMES = ('groundtruth_rect.txt', 'groundtruth.txt')


class OTB(SequenceDataset):
    """OTB sequences; `start_frames` adds or overrides first annotated frame numbers by video."""

    name = 'otb'

    def __init__(self, root: str | Path, start_frames: dict[str, int] | None = None) -> None:
        super().__init__()
        self.root = require_dir(Path(root), 'the OTB root (<seq>/img/, <seq>/groundtruth_rect.txt or '
                                'groundtruth.txt)')
        self.start_frames = {**START_FRAMES, **(start_frames or {})}
        self._entries: list[tuple[Path, Path]] = []
        for video in sorted(p for p in self.root.iterdir() if p.is_dir()):
            plain = next((video / n for n in PLAIN_NAMES if (video / n).is_file()), None)
            numbered = sorted(video.glob('groundtruth_rect.*.txt'))
            if plain is not None:
                self._entries.append((video, plain))
                self._names.append(video.name)
            for path in numbered:
                self._entries.append((video, path))
                suffix = re.fullmatch(r'groundtruth_rect\.(\w+)\.txt', path.name).group(1)
                self._names.append(video.name if len(numbered) == 1 and plain is None
                                   else f'{video.name}-{suffix}')
        if not self._entries:
            raise DatasetError(f'{self.root}: no <seq>/groundtruth_rect.txt or <seq>/groundtruth.txt found '
                               '(expected <seq>/img/0001.jpg ... beside it)')

    def _load(self, index: int) -> Sequence:
        video, gt_path = self._entries[index]
        boxes = read_boxes(gt_path, separators=', \t')
        image_dir = require_dir(video / 'img', f'the frames of {video.name}')
        start = self._first_frame(video.name, image_dir, len(boxes))
        frames = [image_dir / f'{start + t:04d}.jpg' for t in range(len(boxes))]
        if not frames[-1].is_file():
            raise DatasetError(f'{gt_path}: {len(boxes)} boxes from frame {start}, but {frames[-1]} is missing')
        return Sequence(self._names[index], self.name, frames, boxes, box_is_valid(boxes),
                        attributes={'start_frame': start})

    def _first_frame(self, video: str, image_dir: Path, count: int) -> int:
        """The toolkit's start frame, or 1 where the frames were renumbered (its last frame missing)."""
        start = self.start_frames.get(video, 1)
        if start != 1 and not (image_dir / f'{start + count - 1:04d}.jpg').is_file() \
                and (image_dir / f'{count:04d}.jpg').is_file():
            return 1
        return start
