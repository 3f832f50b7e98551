"""Throughput and latency figures of the node over sliding windows."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class RateMeter:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def rate(self, now: float) -> float:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


@dataclass
class StatsSnapshot:
    input_fps: float
    processed_fps: float
    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    latency_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    # Median milliseconds per frame of each stage: conversion, crop, model, update, publish.
    stage_p50_ms: dict[str, float] = field(default_factory=dict)
    # Frames rejected within the recent window (see NodeStats.rejection_window) and the latest reason.
    recently_rejected: int = 0
    last_rejection: str = ''

    @property
    def drop_rate(self) -> float:
        return self.frames_dropped / self.frames_received if self.frames_received else 0.0


class NodeStats:
    """Counters and meters shared by the executor (arrivals) and the worker (results).

    The frame rates are measured only by measure_rates() (the /diagnostics timer calls it) and
    every snapshot carries that latest measurement: TrackerStatus, published per processed frame,
    and /diagnostics then report the same figures instead of two samples of a sliding window taken
    at different moments (which disagreed widely when frames arrive in bursts or get lost)."""

    def __init__(self, latency_window: int = 500, rejection_window: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._input, self._output = RateMeter(), RateMeter()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._stages: dict[str, deque[float]] = {}
        self._window = latency_window
        self.rejection_window = rejection_window  # seconds; may change at run time
        self._rejections: deque[float] = deque()
        self._last_rejection = ''
        self.received = self.processed = self.dropped = self.rejected = 0
        self.last_arrival: float | None = None  # monotonic time of the last message, good or not
        self._rates = (0.0, 0.0)  # input and processed frames per second at the latest measure_rates()

    def frame_received(self, now: float, dropped_pending: bool) -> None:
        with self._lock:
            self.received += 1
            self.dropped += int(dropped_pending)
            self._input.tick(now)
            self.last_arrival = now

    def frame_rejected(self, now: float | None = None, reason: str = '') -> None:
        """A message that could not be used; counted in the totals and in the recent window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.rejected += 1
            self._rejections.append(now)
            self._last_rejection = reason
            self.last_arrival = now
            self._forget_old_rejections(now)

    def _forget_old_rejections(self, now: float) -> None:
        while self._rejections and now - self._rejections[0] > self.rejection_window:
            self._rejections.popleft()

    def frame_processed(self, arrival: float, now: float, stages_ms: dict[str, float] | None = None) -> None:
        """A frame's result went out `now`; `stages_ms` breaks its processing time down."""
        with self._lock:
            self.processed += 1
            self._output.tick(now)
            self._latencies.append((now - arrival) * 1000.0)
            for stage, value in (stages_ms or {}).items():
                self._stages.setdefault(stage, deque(maxlen=self._window)).append(value)

    def record_stage(self, stage: str, milliseconds: float) -> None:
        """A stage timed after the frame was counted (publishing its outputs)."""
        with self._lock:
            self._stages.setdefault(stage, deque(maxlen=self._window)).append(milliseconds)

    def measure_rates(self, now: float | None = None) -> tuple[float, float]:
        """Measure the input and processed frame rates now; later snapshots carry these values."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._rates = (self._input.rate(now), self._output.rate(now))
            return self._rates

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        now = time.monotonic() if now is None else now
        with self._lock:
            latencies = np.array(self._latencies) if self._latencies else np.zeros(1)
            p50, p95, p99 = np.percentile(latencies, (50, 95, 99))
            stages = {stage: float(np.median(values)) for stage, values in self._stages.items()}
            self._forget_old_rejections(now)
            return StatsSnapshot(*self._rates, self.received,
                                 self.processed, self.dropped, self.rejected, float(latencies[-1]),
                                 float(p50), float(p95), float(p99), stages, len(self._rejections),
                                 self._last_rejection)
