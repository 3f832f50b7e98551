"""The STARK test-time tracker for any number of targets on one camera stream.

Two calls make up the interface that the ROS node, the evaluator and the replay tool share:
`initialize(image, box, target_id)` starts (or restarts) a target and `track(image)` follows every
live target into the next frame. All targets of a frame go through the network as one batch, run
by a backend (stark_model.backends: eager PyTorch, CUDA graphs, ONNX Runtime, TensorRT); the
algorithm below stays here, the same for every backend.

Per target the algorithm is the original's: crop the search region around the previous box,
predict the box in the crop, map it back into the image and clip it (10 px margin, or the image's
size where that is smaller, so boxes stay inside); STARK-ST also replaces its dynamic template
every `update_interval` tracked frames when the score exceeds the threshold, cropping it from the
current frame at the new box.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from .backends import BackendError, create_backend
from .backends.base import PRECISIONS
from .backbone import STRIDE
from .box_ops import Box, clip_box, map_box_back, validate_box, xyxy_to_cxcywh
from .config import TrackerConfig
from .gpu_crop import crop_squares, upload_frame
from .heads import windowed_corners
from .network import StarkNetwork, Tokens
from .preprocessing import Normalizer, crop_square
from .transformer import fused_attention

CLIP_MARGIN = 10


class TrackerError(ValueError):
    """An input the tracker cannot use (image, box, target id, target count); says which and why."""


@dataclass
class TargetResult:
    """A target's state after a frame: xywh box in image pixels, confidence in [0, 1], frames
    tracked since (re-)initialisation, and whether its dynamic template was replaced."""

    target_id: str
    box: Box
    score: float
    frames_tracked: int
    template_updated: bool = False


@dataclass
class StepTiming:
    """Wall time of the last track() call by stage, in milliseconds: cropping (CPU), the network
    (preprocessing, batched forward, copying results back) and box mapping plus template updates."""

    crop_ms: float = 0.0
    network_ms: float = 0.0
    update_ms: float = 0.0


@dataclass
class _Target:
    box: Box
    templates: list[Tokens]
    frames_tracked: int = 0
    score: float = 1.0


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without it is an error that says so."""
    if str(device) == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise TrackerError(f'device {device!r} is not a valid torch device: {error}') from None
    if resolved.type == 'cuda' and not torch.cuda.is_available():
        raise TrackerError(f'device {device!r} asked for, but CUDA is not available '
                           f'(torch {torch.__version__}); use device "cpu" or "auto"')
    if resolved.type not in ('cpu', 'cuda'):
        raise TrackerError(f'device {device!r}: only cpu and cuda are supported')
    return resolved


def check_image(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array, else TrackerError saying what is wrong with it."""
    if not isinstance(image, np.ndarray):
        raise TrackerError(f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise TrackerError(f'image must be uint8 RGB, got dtype {image.dtype}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise TrackerError(f'image must have shape (H, W, 3), got {image.shape}')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise TrackerError(f'image is empty: shape {image.shape}')
    return image


def damp_size_change(previous: Box, predicted: Box, rate: float) -> Box:
    """The predicted box with its width and height moved only `rate` of the way from the previous
    ones (its centre kept): the scale penalty of Siamese trackers, which stops a size error from
    compounding frame after frame."""
    cx, cy = predicted[0] + predicted[2] / 2, predicted[1] + predicted[3] / 2
    w = previous[2] + rate * (predicted[2] - previous[2])
    h = previous[3] + rate * (predicted[3] - previous[3])
    return [cx - w / 2, cy - h / 2, w, h]


class StarkTracker:
    """Tracks targets with a STARK network; one batched forward per frame for all targets."""

    def __init__(self, network: StarkNetwork, config: TrackerConfig, device: str | torch.device = 'cpu',
                 precision: str = 'fp32', dataset: str = 'default', max_targets: int | None = None,
                 fast_kernels: bool = False, backend: str = 'auto', crops: str = 'auto',
                 cache_dir: str | None = None) -> None:
        """fast_kernels: channels-last crops and fused attention, faster on some hardware but
        rounded differently from the original; off, the fp32 CPU path computes the original's bits.
        backend: how the network runs (stark_model.backends: pytorch, pytorch-graph, onnxruntime,
        tensorrt; cache_dir holds their exported graphs and engines). crops: 'opencv' (per target
        on the CPU), 'torch' (all targets in one batched call on the device, the frame uploaded
        once) or 'auto' (torch on CUDA, else opencv)."""
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise TrackerError(f'precision {precision!r} is not one of {", ".join(PRECISIONS)}')
        if precision == 'fp16' and self.device.type != 'cuda':
            raise TrackerError('precision fp16 needs a CUDA device; use fp32 (or bf16) on the CPU')
        self.precision = precision
        self.network = network.to(self.device).eval()
        self.config = config
        self._model_search_factor = config.search_factor
        self.update_interval = config.update_interval(dataset)
        self.max_targets = max_targets
        self.fast_kernels = fast_kernels
        self._normalize = Normalizer(self.device, channels_last=fast_kernels)
        if crops not in ('auto', 'opencv', 'torch'):
            raise TrackerError(f'crops {crops!r} is not one of auto, opencv, torch')
        self.crops = ('torch' if self.device.type == 'cuda' else 'opencv') if crops == 'auto' else crops
        try:
            self.backend = create_backend(backend, self.network, config, self.device, precision,
                                          max_targets=max_targets, fast_kernels=fast_kernels,
                                          cache_dir=cache_dir)
        except BackendError as error:
            raise TrackerError(str(error)) from None
        self._targets: dict[str, _Target] = {}
        self.last_timing = StepTiming()

    def set_search_factor(self, factor: float | None) -> None:
        """The search region's side as a multiple of the target size, from the next frame on; None:
        the model's own. Smaller keeps nearby look-alikes out of view but loses faster motion."""
        if factor is not None and not (math.isfinite(factor) and factor > 0):
            raise TrackerError(f'search factor must be a positive number, got {factor!r}')
        self.config = dataclasses.replace(self.config, search_factor=factor or self._model_search_factor)

    @property
    def target_ids(self) -> list[str]:
        return list(self._targets)

    def box(self, target_id: str) -> Box:
        return self._targets[target_id].box

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """The tracker's precision and kernels for direct network calls (the benchmark's)."""
        with torch.inference_mode(), self.backend.autocast(), fused_attention(self.fast_kernels):
            yield

    def _upload(self, image: np.ndarray) -> torch.Tensor | None:
        """The frame on the device for torch crops (one copy per frame); None for OpenCV crops."""
        return upload_frame(image, self.device) if self.crops == 'torch' else None

    def _crop(self, image: np.ndarray, frame: torch.Tensor | None, boxes: list[Box], factor: float,
              size: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Normalised crops (B, 3, S, S) and padding masks (B, S, S) on the device, resize factors."""
        if frame is not None:
            images, masks, factors = crop_squares(frame, boxes, factor, size)
            return self._normalize.normalize(images), masks, factors
        crops = [crop_square(image, box, factor, size) for box in boxes]
        return *self._normalize(crops), [crop.resize_factor for crop in crops]

    def _encode(self, image: np.ndarray, frame: torch.Tensor | None, boxes: list[Box], factor: float,
                size: int) -> tuple[Tokens, list[float]]:
        images, masks, factors = self._crop(image, frame, boxes, factor, size)
        with torch.inference_mode():
            return self.backend.encode(images, masks), factors

    def initialize(self, image: np.ndarray, box: Sequence[float], target_id: str) -> None:
        """Start tracking `target_id` from an xywh box on `image` (replaces a target of that id)."""
        image = check_image(image)
        try:
            box = validate_box(box, image.shape[1], image.shape[0])
        except ValueError as error:
            raise TrackerError(str(error)) from None
        if target_id not in self._targets and self.max_targets is not None \
                and len(self._targets) >= self.max_targets:
            raise TrackerError(f'already tracking {len(self._targets)} targets, the maximum; '
                               'cancel one first')
        template, _ = self._encode(image, self._upload(image), [box], self.config.template_factor,
                                   self.config.template_size)
        templates = [template, template] if self.config.dynamic_template else [template]
        self._targets[target_id] = _Target(box=box, templates=templates)

    def warm_up(self) -> None:
        """Run one initialise-and-track on a blank frame, so that one-time costs (kernel selection,
        allocator growth, lazy imports inside torch) are paid now, not on the first real frame."""
        self.backend.prepare(self.config)
        blank = np.zeros((64, 64, 3), np.uint8)
        warm_id = 'warm-up'
        saved, self._targets = self._targets, {}
        try:
            self.initialize(blank, (16.0, 16.0, 32.0, 32.0), warm_id)
            self.track(blank)
        finally:
            self._targets = saved

    def remove(self, target_id: str) -> bool:
        """Stop tracking a target; False if there was none with that id."""
        return self._targets.pop(target_id, None) is not None

    def clear(self) -> None:
        self._targets.clear()

    def track(self, image: np.ndarray) -> dict[str, TargetResult]:
        """Follow every target into `image`; returns their new states by id."""
        image = check_image(image)
        if not self._targets:
            return {}
        ids = list(self._targets)
        targets = [self._targets[i] for i in ids]
        cfg = self.config
        started = time.perf_counter()
        frame = self._upload(image)
        images, masks, factors = self._crop(image, frame, [t.box for t in targets], cfg.search_factor,
                                            cfg.search_size)
        cropped = time.perf_counter()
        with torch.inference_mode():
            search = self.backend.encode(images, masks)
            slots = [Tokens.stack([t.templates[slot] for t in targets]) for slot in range(len(targets[0].templates))]
            # One small copy back per frame (boxes and scores together); it waits for the device.
            results = self.backend.decode(Tokens.concat(slots + [search])).packed().cpu()
        boxes, scores = results[:, :4], results[:, 4].tolist()
        if cfg.corner_window:
            boxes = self._windowed_boxes(results[:, 5:], targets, factors)
        inferred = time.perf_counter()

        height, width = image.shape[:2]
        due: list[int] = []
        for index, (target, resize_factor) in enumerate(zip(targets, factors)):
            # Same float32 arithmetic as the original: box * search size / resize factor.
            pred = (boxes[index] * cfg.search_size / resize_factor).tolist()
            mapped = map_box_back(pred, target.box, cfg.search_size, resize_factor)
            if not all(math.isfinite(v) for v in mapped):
                # No usable prediction (a search crop without one image pixel, on images a pixel
                # wide, makes the network's attention 0/0): stay, and report no confidence.
                mapped = target.box
            elif cfg.size_update_rate < 1.0:
                mapped = damp_size_change(target.box, mapped, cfg.size_update_rate)
            target.box = clip_box(mapped, height, width, margin=CLIP_MARGIN)
            target.frames_tracked += 1
            target.score = scores[index] if math.isfinite(scores[index]) else 0.0
            if (cfg.dynamic_template and target.frames_tracked % self.update_interval == 0
                    and target.score > cfg.update_threshold):
                due.append(index)
        if due:
            self._update_templates(image, frame, [targets[i] for i in due])
        self.last_timing = StepTiming((cropped - started) * 1000, (inferred - cropped) * 1000,
                                      (time.perf_counter() - inferred) * 1000)
        return {tid: TargetResult(tid, t.box, t.score, t.frames_tracked, template_updated=i in due)
                for i, (tid, t) in enumerate(zip(ids, targets))}

    def _windowed_boxes(self, corner_logits: torch.Tensor, targets: list[_Target], factors: list[float]
                        ) -> torch.Tensor:
        """Normalised cxcywh boxes from the corner maps under the motion prior (config.corner_window),
        centred on each target's previous corners: its box sits centred in the search crop."""
        size = self.config.search_size
        previous = torch.tensor([[size / 2 - t.box[2] * f / 2, size / 2 - t.box[3] * f / 2,
                                  size / 2 + t.box[2] * f / 2, size / 2 + t.box[3] * f / 2]
                                 for t, f in zip(targets, factors)], dtype=torch.float32)
        logits = corner_logits.view(len(targets), 2, -1)
        return xyxy_to_cxcywh(windowed_corners(logits, previous, STRIDE, self.config.corner_window))

    def _update_templates(self, image: np.ndarray, frame: torch.Tensor | None, targets: list[_Target]) -> None:
        """Replace the dynamic template of each target by a crop of this frame at its new box."""
        tokens, _ = self._encode(image, frame, [t.box for t in targets], self.config.template_factor,
                                 self.config.template_size)
        for index, target in enumerate(targets):
            target.templates[1] = tokens.select(index)
