"""Per-target bookkeeping of the node: labels, ids and the IDLE / TRACKING / LOST state machine."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

from stark_model import TargetResult


class TargetState(IntEnum):
    """Values equal the constants of stark_ros/msg/TargetStatus."""

    IDLE = 0
    TRACKING = 1
    LOST = 2


@dataclass
class TrackedTarget:
    target_id: str
    label: str
    box: tuple[float, float, float, float]
    state: TargetState = TargetState.IDLE
    score: float = 0.0
    frames_tracked: int = 0
    frames_below_threshold: int = 0


class TargetBook:
    """The node's targets in creation order. Not thread-safe: the node serialises access."""

    def __init__(self) -> None:
        self._targets: dict[str, TrackedTarget] = {}
        self._next_number = 1  # of the next automatic id; advanced only when such a target starts

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, target_id: str) -> bool:
        return target_id in self._targets

    def __getitem__(self, target_id: str) -> TrackedTarget:
        return self._targets[target_id]

    def targets(self) -> list[TrackedTarget]:
        return list(self._targets.values())

    def snapshot(self) -> list[TrackedTarget]:
        """Copies of the targets, safe to read after the lock is released."""
        return [dataclasses.replace(target) for target in self._targets.values()]

    def new_id(self) -> str:
        """The next automatic id ('target-1', 'target-2', ...) that no live target uses. Asking does
        not use it up: only start() does, so refused requests leave no gaps in the numbering."""
        number = self._next_number
        while f'target-{number}' in self._targets:
            number += 1
        return f'target-{number}'

    def start(self, target_id: str, label: str, box: tuple[float, float, float, float]) -> TrackedTarget:
        """Register a new target, or restart an existing one (its label kept unless a new one is given)."""
        if target_id == self.new_id():
            self._next_number = int(target_id.rsplit('-', 1)[1]) + 1
        previous = self._targets.get(target_id)
        label = label or (previous.label if previous else 'target')
        self._targets[target_id] = TrackedTarget(target_id, label, box)
        return self._targets[target_id]

    def remove(self, target_id: str) -> bool:
        return self._targets.pop(target_id, None) is not None

    def clear(self) -> list[str]:
        removed = list(self._targets)
        self._targets.clear()
        return removed

    def update(self, results: dict[str, TargetResult], lost_threshold: float, lost_patience: int) -> None:
        """Apply one frame's results: a target is LOST once its score has stayed under the
        threshold for `lost_patience` consecutive frames, and TRACKING again when it comes back."""
        for target_id, result in results.items():
            target = self._targets.get(target_id)
            if target is None:  # cancelled while the frame was in flight
                continue
            target.box, target.score, target.frames_tracked = result.box, result.score, result.frames_tracked
            if result.score >= lost_threshold:
                target.frames_below_threshold = 0
                target.state = TargetState.TRACKING
            else:
                target.frames_below_threshold += 1
                lost = target.frames_below_threshold >= lost_patience
                target.state = TargetState.LOST if lost else (
                    TargetState.TRACKING if target.state == TargetState.IDLE else target.state)
