"""UAV123 / UAV20L (evaluation only: never train on them): frames in
`<root>/data_seq/UAV123/<video>/%06d.jpg`, boxes in `<root>/anno/<subset>/<seq>.txt` (x,y,w,h,
'NaN' rows where the target is out of view).

Long UAV123 videos are split into sequences '<video>_<k>' that share one frame folder. Part k
starts on the last frame of part k-1 (the toolkit's table), except the three parts listed in
PART_STARTS, which start after a gap.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetError, Sequence, SequenceDataset, box_is_valid, read_boxes, require_dir

PART_STARTS = {'bird1_2': 775, 'bird1_3': 1573, 'uav1_3': 2473}
_PART = re.compile(r'(.+)_(\d+)$')


class UAV123(SequenceDataset):
    """UAV123 (subset='UAV123') or UAV20L (subset='UAV20L') sequences."""

    name = 'uav123'

    def __init__(self, root: str | Path, subset: str = 'UAV123') -> None:
        super().__init__()
        self.root = Path(root)
        self.anno_dir = require_dir(self.root / 'anno' / subset, f'the {subset} annotation files')
        self.frame_root = require_dir(self.root / 'data_seq' / 'UAV123', 'the frame folders')
        self._paths = sorted(self.anno_dir.glob('*.txt'))
        if not self._paths:
            raise DatasetError(f'{self.anno_dir}: no <seq>.txt annotation files')
        self._names = [p.stem for p in self._paths]

    def _video_and_start(self, name: str) -> tuple[str, int]:
        """The frame folder of a sequence and its first frame number."""
        match = _PART.match(name)
        if not match or (self.frame_root / name).is_dir():
            return name, 1
        video, part = match.group(1), int(match.group(2))
        if part == 1:
            return video, 1
        if name in PART_STARTS:
            return video, PART_STARTS[name]
        previous = f'{video}_{part - 1}'
        _, start = self._video_and_start(previous)
        return video, start + len(read_boxes(self.anno_dir / f'{previous}.txt')) - 1

    def _load(self, index: int) -> Sequence:
        name = self._names[index]
        boxes = read_boxes(self._paths[index], separators=', \t')
        video, start = self._video_and_start(name)
        frame_dir = require_dir(self.frame_root / video, f'the frames of {name}')
        frames = [frame_dir / f'{start + t:06d}.jpg' for t in range(len(boxes))]
        if not frames[-1].is_file():
            raise DatasetError(f'{self._paths[index]}: {len(boxes)} boxes from frame {start}, '
                               f'but {frames[-1]} is missing')
        return Sequence(name, self.name, frames, boxes, box_is_valid(boxes),
                        attributes={'video': video, 'start_frame': start})
