"""Users' own footage: a folder of frames plus groundtruth.txt (x,y,w,h per frame; comma, space or
tab separated; 'NaN' or an empty box where the target is absent).

Either `<root>/<seq>/` for each sequence, or `<root>` itself as one sequence. Frames lie in the
sequence folder or in its `img/` subfolder, in natural name order. An optional `absence.label`
(one 0/1 per frame) marks frames where the target is absent.
"""
from __future__ import annotations

from pathlib import Path


from .base import (DatasetError, Sequence, SequenceDataset, box_is_valid, check_frame_count, read_boxes,
                   read_flags, require_dir, sorted_frames)

GROUNDTRUTH = 'groundtruth.txt'


class FrameFolder(SequenceDataset):
    """Sequences under `root`, each a folder with frames and groundtruth.txt."""

    name = 'folder'

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = require_dir(Path(root), 'a folder of sequences, or one sequence folder')
        if (self.root / GROUNDTRUTH).is_file():
            self._folders = [self.root]
        else:
            self._folders = sorted(p for p in self.root.iterdir() if (p / GROUNDTRUTH).is_file())
            if not self._folders:
                raise DatasetError(f'{self.root}: no {GROUNDTRUTH} in it or in any sub-folder')
        self._names = [p.name for p in self._folders]

    def _load(self, index: int) -> Sequence:
        folder = self._folders[index]
        image_dir = folder / 'img' if (folder / 'img').is_dir() else folder
        frames = sorted_frames(image_dir)
        gt_path = folder / GROUNDTRUTH
        boxes = read_boxes(gt_path, separators=', \t')
        check_frame_count(image_dir, frames, boxes, gt_path)
        visible = box_is_valid(boxes)
        attributes = {}
        absence_path = folder / 'absence.label'
        if absence_path.is_file():
            absence = read_flags(absence_path, len(frames)).astype(bool)
            attributes['absence'] = absence
            visible &= ~absence
        return Sequence(self._names[index], self.name, frames, boxes, visible, attributes)
