"""ROS messages the node publishes, built from its targets and figures (pure functions)."""
from __future__ import annotations

from typing import Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from stark_ros.msg import TargetStatus, TrackerStatus

from .node_stats import StatsSnapshot
from .target_states import TrackedTarget


def detection(header, target: TrackedTarget) -> Detection2D:
    """One tracked target: id = target id, class_id = label, score = tracker confidence,
    bbox centre and size in pixels of the image."""
    x, y, w, h = target.box
    message = Detection2D(header=header, id=target.target_id)
    message.bbox.center.position.x = x + w / 2
    message.bbox.center.position.y = y + h / 2
    message.bbox.size_x, message.bbox.size_y = float(w), float(h)
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = target.label
    hypothesis.hypothesis.score = float(target.score)
    message.results.append(hypothesis)
    return message


def box_of(message: Detection2D) -> tuple[float, float, float, float]:
    """The xywh pixel box of a detection (the inverse of `detection`)."""
    b = message.bbox
    return (b.center.position.x - b.size_x / 2, b.center.position.y - b.size_y / 2, b.size_x, b.size_y)


def detections(header, targets: Iterable[TrackedTarget]) -> Detection2DArray:
    """All live targets of a frame; the header is the image's, unchanged."""
    return Detection2DArray(header=header, detections=[detection(header, t) for t in targets])


def tracker_status(header, targets: Iterable[TrackedTarget], figures: StatsSnapshot,
                   model_state: str) -> TrackerStatus:
    return TrackerStatus(
        model_state=model_state,
        header=header,
        targets=[TargetStatus(target_id=t.target_id, label=t.label, state=int(t.state), score=float(t.score),
                              frames_tracked=t.frames_tracked, frames_below_threshold=t.frames_below_threshold)
                 for t in targets],
        input_fps=figures.input_fps, processed_fps=figures.processed_fps,
        frames_received=figures.frames_received,
        frames_processed=figures.frames_processed, frames_dropped=figures.frames_dropped,
        latency_ms=figures.latency_ms, latency_p95_ms=figures.latency_p95_ms)


def diagnostics(stamp, node_name: str, figures: StatsSnapshot, model: Mapping[str, str],
                error: str | None, warnings: list[str], targets: int) -> DiagnosticArray:
    """One DiagnosticStatus: ERROR without a usable model, WARN while any warning holds (frames
    rejected within the recent window, no frames arriving, a model change that failed), else OK.
    Frames dropped by the newest-frame-wins policy are reported in the values, not as a fault.
    The values carry the figures and the model in use."""
    if error:
        level, message = DiagnosticStatus.ERROR, '; '.join([error, *warnings])
    elif warnings:
        level, message = DiagnosticStatus.WARN, '; '.join(warnings)
    else:
        level, message = DiagnosticStatus.OK, 'tracking' if targets else 'waiting for a target'
    values = {
        'input_fps': f'{figures.input_fps:.2f}', 'processed_fps': f'{figures.processed_fps:.2f}',
        'frames_received': str(figures.frames_received), 'frames_processed': str(figures.frames_processed),
        'frames_dropped': str(figures.frames_dropped), 'frames_rejected': str(figures.frames_rejected),
        'frames_rejected_recently': str(figures.recently_rejected), 'last_rejection': figures.last_rejection,
        'drop_rate': f'{figures.drop_rate:.4f}', 'latency_p50_ms': f'{figures.latency_p50_ms:.2f}',
        'latency_p95_ms': f'{figures.latency_p95_ms:.2f}', 'latency_p99_ms': f'{figures.latency_p99_ms:.2f}',
        'targets': str(targets), **model,
        **{f'{stage}_ms_p50': f'{value:.3f}' for stage, value in figures.stage_p50_ms.items()},
    }
    status = DiagnosticStatus(level=level, name=f'{node_name}: tracker', message=message,
                              hardware_id=model.get('device', ''),
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
