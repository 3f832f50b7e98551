"""Need for Speed (evaluation only: never train on it): frames in `<root>/<seq>/<fps>/<seq>/*.jpg`
and the annotation `<root>/<seq>/<fps>/<seq>.txt`, one line per annotated frame:
`track_id xmin ymin xmax ymax frame lost occluded generated "label"` (whitespace separated).

A box goes to the frame its frame column names (1-based); frames without a line, and frames
marked lost, are not visible. An annotation whose frame numbers run past the frame folder (e.g.
counted at another frame rate) is an error naming the line, rather than a silent misalignment.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, Sequence, SequenceDataset, read_lines, require_dir, sorted_frames


class NfS(SequenceDataset):
    """NfS sequences at one frame rate (30 or 240)."""

    name = 'nfs'

    def __init__(self, root: str | Path, fps: int = 30) -> None:
        super().__init__()
        self.root = require_dir(Path(root), 'the NfS root (<seq>/<fps>/<seq>/)')
        self.fps = fps
        self._names = sorted(p.name for p in self.root.iterdir() if (p / str(fps) / f'{p.name}.txt').is_file())
        if not self._names:
            raise DatasetError(f'{self.root}: no <seq>/{fps}/<seq>.txt annotation files')

    def _load(self, index: int) -> Sequence:
        name = self._names[index]
        folder = self.root / name / str(self.fps)
        frames = sorted_frames(folder / name, ('.jpg',))
        gt_path = folder / f'{name}.txt'
        boxes = np.full((len(frames), 4), np.nan)
        lost = np.zeros(len(frames), bool)
        occluded = np.zeros(len(frames), bool)
        for number, line in enumerate(read_lines(gt_path), start=1):
            if not line:
                continue
            fields = line.split()
            try:
                x1, y1, x2, y2 = (float(v) for v in fields[1:5])
                frame, is_lost, is_occluded = int(fields[5]), int(fields[6]), int(fields[7])
            except (ValueError, IndexError):
                raise DatasetError(f'{gt_path}:{number}: expected "id xmin ymin xmax ymax frame lost '
                                   f'occluded ...", got {line!r}') from None
            if not 1 <= frame <= len(frames):
                raise DatasetError(f'{gt_path}:{number}: frame {frame} outside the {len(frames)} frames '
                                   f'of {folder / name}')
            boxes[frame - 1] = (x1, y1, x2 - x1, y2 - y1)
            lost[frame - 1], occluded[frame - 1] = bool(is_lost), bool(is_occluded)
        visible = np.isfinite(boxes).all(axis=1) & ~lost & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        return Sequence(name, self.name, frames, boxes, visible,
                        attributes={'fps': self.fps, 'lost': lost, 'occluded': occluded})
