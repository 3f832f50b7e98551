"""Trackers users already know, behind the evaluator's single-target interface.

    tracker = make_baseline('csrt')                       # or 'kcf', 'mil', 'nano'
    tracker.initialize(rgb_image, (x, y, w, h))
    box = tracker.track(next_rgb_image)                    # (x, y, w, h) floats

'csrt' and 'kcf' come from OpenCV's contrib build (opencv-contrib-python-headless, this project's
OpenCV requirement); 'mil' and 'nano' from its main modules. 'nano' runs NanoTrack v2 ONNX models
(nanotrack_backbone_sim.onnx, nanotrack_head_sim.onnx) from a folder the user names: they are
never shipped with this project.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float]
NANO_FILES = ('nanotrack_backbone_sim.onnx', 'nanotrack_head_sim.onnx')
BASELINES = ('csrt', 'kcf', 'mil', 'nano')


class BaselineError(ValueError):
    """A baseline that cannot be built here (unknown name, OpenCV build without it, missing model files)."""


def _opencv_factory(name: str) -> Callable[[], object]:
    class_name = {'csrt': 'TrackerCSRT', 'kcf': 'TrackerKCF', 'mil': 'TrackerMIL'}[name]
    tracker_class = getattr(cv2, class_name, None)
    if tracker_class is None:
        raise BaselineError(
            f'this OpenCV ({cv2.__version__}) has no cv2.{class_name}: it is in the contrib build; '
            f'install opencv-contrib-python-headless=={cv2.__version__}.* instead of opencv-python-headless')
    return tracker_class.create


@contextmanager
def opencv_log_level(level: int) -> Iterator[None]:
    """OpenCV's log level set to `level` for a block, then put back.

    TrackerNano's creation loads its two networks with a DNN target that OpenCV 5's graph engine
    ignores, and each load logs a "setPreferableTarget ... not supported" warning to stderr
    (a C++ log, not a Python warning): two lines per sequence in every evaluation. Tracking is
    unaffected, so warnings are hidden while the tracker is made; errors still show."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(min(previous, level))  # never louder than the user asked for
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def _nano_factory(nano_dir: str | os.PathLike | None) -> Callable[[], object]:
    if nano_dir is None:
        raise BaselineError('the nano baseline needs nano_dir: the folder holding ' + ' and '.join(NANO_FILES))
    folder = Path(nano_dir)
    missing = [name for name in NANO_FILES if not (folder / name).is_file()]
    if missing:
        raise BaselineError(f'NanoTrack model folder {folder} lacks {", ".join(missing)}')

    def create() -> object:
        params = cv2.TrackerNano_Params()
        params.backbone = str(folder / NANO_FILES[0])
        params.neckhead = str(folder / NANO_FILES[1])
        with opencv_log_level(cv2.utils.logging.LOG_LEVEL_ERROR):
            return cv2.TrackerNano.create(params)

    return create


class OpenCVTracker:
    """An OpenCV tracker (fed BGR, as OpenCV expects) with the evaluator's initialize/track calls.

    When OpenCV reports a lost target it returns no box; the last box is kept then, as the
    benchmarks need one box per frame."""

    def __init__(self, name: str, create: Callable[[], object]) -> None:
        self.name = name
        self._create = create
        self._tracker: object | None = None
        self._box: Box | None = None

    def initialize(self, image: np.ndarray, box: Sequence[float]) -> None:
        """Start tracking the xywh `box` on an RGB image."""
        x, y, w, h = (float(v) for v in box)
        if not (w > 0 and h > 0):
            raise BaselineError(f'{self.name}: box size {w:g}x{h:g} must be positive')
        self._tracker = self._create()  # a fresh tracker: OpenCV's keep state across init() calls
        rect = (int(round(x)), int(round(y)), max(1, int(round(w))), max(1, int(round(h))))
        self._tracker.init(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), rect)
        self._box = (x, y, w, h)

    def track(self, image: np.ndarray) -> Box:
        """The target's xywh box in the next RGB frame."""
        if self._tracker is None:
            raise BaselineError(f'{self.name}: track() before initialize()')
        found, rect = self._tracker.update(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if found and rect[2] > 0 and rect[3] > 0:
            self._box = tuple(float(v) for v in rect)
        return self._box


def make_baseline(name: str, nano_dir: str | os.PathLike | None = None) -> OpenCVTracker:
    """A baseline tracker by name: 'csrt', 'kcf', 'mil' or 'nano' (needs nano_dir)."""
    key = name.lower()
    if key not in BASELINES:
        raise BaselineError(f'unknown baseline {name!r} (known: {", ".join(BASELINES)})')
    create = _nano_factory(nano_dir) if key == 'nano' else _opencv_factory(key)
    return OpenCVTracker(key, create)
