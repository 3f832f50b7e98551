"""Recent camera frames: a short history by stamp (for init requests on a past frame) and the
newest unprocessed frame for the inference worker (a newer frame replaces an unprocessed one)."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """A converted camera frame: RGB pixels, its image header, when it arrived (monotonic s) and
    how long the conversion took."""

    rgb: np.ndarray
    header: object  # std_msgs/Header, passed through to the outputs unchanged
    stamp_ns: int
    arrival: float
    conversion_ms: float = 0.0


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def set_stamp(stamp, stamp_ns: int) -> None:
    """Write nanoseconds into a builtin_interfaces/Time (the inverse of stamp_to_ns)."""
    stamp.sec, stamp.nanosec = divmod(stamp_ns, 1_000_000_000)


def format_stamp(stamp_ns: int) -> str:
    return f'{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}'


class NoFrameYet(LookupError):
    """No camera frame has arrived yet (the node adds which topic it listens to)."""


class FrameBuffer:
    """Thread-safe: the executor pushes, the worker takes, services look frames up by stamp."""

    def __init__(self, capacity: int) -> None:
        self._history: deque[Frame] = deque(maxlen=max(1, capacity))
        self._pending: Frame | None = None
        self._closed = False
        self._condition = threading.Condition()

    def resize(self, capacity: int) -> None:
        with self._condition:
            self._history = deque(self._history, maxlen=max(1, capacity))

    def push(self, frame: Frame) -> bool:
        """Store a new frame; True when it replaced one the worker had not taken (a dropped frame)."""
        with self._condition:
            dropped = self._pending is not None
            self._pending = frame
            self._history.append(frame)
            self._condition.notify()
            return dropped

    def take_newest(self, timeout: float) -> Frame | None:
        """Wait up to `timeout` s for a frame not yet taken; None on timeout or after close()."""
        with self._condition:
            self._condition.wait_for(lambda: self._pending is not None or self._closed, timeout)
            frame, self._pending = self._pending, None
            return frame

    def find(self, stamp_ns: int) -> Frame:
        """The frame with this exact stamp (0: the newest); LookupError says what is held instead."""
        with self._condition:
            if not self._history:
                raise NoFrameYet('no camera frame has been received yet')
            if stamp_ns == 0:
                return self._history[-1]
            for frame in reversed(self._history):
                if frame.stamp_ns == stamp_ns:
                    return frame
            held = (f'{len(self._history)} frames, stamps {format_stamp(self._history[0].stamp_ns)} to '
                    f'{format_stamp(self._history[-1].stamp_ns)}')
            raise LookupError(f'no frame with stamp {format_stamp(stamp_ns)} in the buffer (it holds {held}); '
                              'use a zero stamp for the latest frame')

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
