"""Turning sampled frames into network inputs the way the original STARK training does.

Per sample: joint augmentation of all frames (grayscale, horizontal flip), a jittered box per
frame (size *= exp(N(0,1) * scale_jitter), centre += (U - 0.5) * sqrt(jittered area) *
centre_jitter), a square crop around it with stark_model.preprocessing.crop_square (the one crop
implementation), then per group of crops (templates / search) a brightness jitter and a horizontal
flip, and ImageNet normalisation. A sample is rejected when a crop's padding mask, or its
1/stride nearest-neighbour downsample (the feature-map mask), is all padding.

Box mapping into the crop: the exact geometry of crop_square (the rounded crop corner, continuous
pixel coordinates), i.e. the inverse of how the tracker maps predictions back. The original
training instead places the jittered box centre at (size - 1) / 2, half an output pixel away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import cv2
import numpy as np

from stark_model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, box_to_crop, crop_square, crop_window

_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)


@dataclass(frozen=True)
class ProcessingSettings:
    """Sampling and processing settings; the defaults are the original STARK training values."""

    template_factor: float = 2.0
    template_size: int = 128
    search_factor: float = 5.0
    search_size: int = 320
    template_center_jitter: float = 0.0
    template_scale_jitter: float = 0.0
    search_center_jitter: float = 4.5
    search_scale_jitter: float = 0.5
    grayscale_prob: float = 0.05
    brightness_jitter: float = 0.2
    joint_flip_prob: float = 0.5
    crop_flip_prob: float = 0.5
    max_gap: int = 200
    pos_prob: float = 0.5
    # Ours: share of stage-2 negatives taken from the positive's own search frame, centred on a
    # nearby patch (background, another object, a look-alike) with the target out of the crop.
    hard_negative_prob: float = 0.0
    min_sequence_length: int = 20
    feature_stride: int = 16
    max_attempts: int = 100

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            expected = int if item.type in ('int', int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (expected is int and not float(value).is_integer()):
                raise ValueError(f'processing setting {item.name}: {value!r} is not {expected.__name__}')
            if not math.isfinite(value) or value < 0:
                raise ValueError(f'processing setting {item.name}: {value!r} must be finite and >= 0')
            object.__setattr__(self, item.name, expected(value))
        for name in ('grayscale_prob', 'joint_flip_prob', 'crop_flip_prob', 'pos_prob', 'hard_negative_prob'):
            if getattr(self, name) > 1:
                raise ValueError(f'processing setting {name}: {getattr(self, name)} is not a probability')
        for name in ('template_size', 'search_size', 'feature_stride', 'max_gap', 'max_attempts',
                     'template_factor', 'search_factor'):
            if getattr(self, name) <= 0:
                raise ValueError(f'processing setting {name}: must be > 0')

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, where: str = 'processing') -> 'ProcessingSettings':
        """Settings from a YAML mapping; an unknown key or a bad value raises ValueError naming it."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f'{where}: unknown key {unknown[0]!r} (known: {", ".join(sorted(known))})')
        try:
            return cls(**mapping)
        except ValueError as exc:
            raise ValueError(f'{where}: {exc}') from None


@dataclass
class CropGroup:
    """Processed crops of one group (templates or search): normalised images, masks, boxes."""

    images: np.ndarray   # (N, 3, S, S) float32
    masks: np.ndarray    # (N, S, S) bool, True = padding
    boxes: np.ndarray    # (N, 4) float64 xywh in crop pixels


def jitter_box(box: np.ndarray, center_jitter: float, scale_jitter: float,
               rng: np.random.Generator) -> np.ndarray:
    """The original jitter: size *= exp(N(0,1)*scale), centre += (U-0.5)*sqrt(new area)*centre."""
    size = box[2:4] * np.exp(rng.standard_normal(2) * scale_jitter)
    max_offset = math.sqrt(max(size[0] * size[1], 0.0)) * center_jitter
    centre = box[0:2] + 0.5 * box[2:4] + max_offset * (rng.random(2) - 0.5)
    return np.concatenate([centre - 0.5 * size, size])


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """RGB image as three equal grey channels."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def flip_box(box: np.ndarray, width: float) -> np.ndarray:
    """xywh box mirrored left-right in an image `width` wide (continuous coordinates)."""
    return np.array([width - box[0] - box[2], box[1], box[2], box[3]])


def feature_mask(mask: np.ndarray, stride: int) -> np.ndarray:
    """The mask at feature resolution as the network sees it (nearest, like F.interpolate)."""
    size = mask.shape[0] // stride
    index = np.minimum(np.floor(np.arange(size) * (mask.shape[0] / size)).astype(int), mask.shape[0] - 1)
    return mask[np.ix_(index, index)]


def joint_augment(images: list[np.ndarray], boxes: list[np.ndarray], settings: ProcessingSettings,
                  rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Grayscale and horizontal flip decided once for all frames of a sample (the original's joint
    transform), applied to every image and box."""
    grayscale = rng.random() < settings.grayscale_prob
    flip = rng.random() < settings.joint_flip_prob
    out_images, out_boxes = [], []
    for image, box in zip(images, boxes):
        if grayscale:
            image = to_grayscale(image)
        if flip:
            box = flip_box(box, image.shape[1])
            image = np.ascontiguousarray(image[:, ::-1])
        out_images.append(image)
        out_boxes.append(box)
    return out_images, out_boxes


def process_group(images: list[np.ndarray], boxes: list[np.ndarray], kind: str,
                  settings: ProcessingSettings, rng: np.random.Generator) -> CropGroup | None:
    """Jittered crops of one group ('template' or 'search') with brightness and flip; None when the
    sample must be rejected (degenerate crop, or a mask that is all padding)."""
    factor = getattr(settings, f'{kind}_factor')
    size = getattr(settings, f'{kind}_size')
    center_jitter = getattr(settings, f'{kind}_center_jitter')
    scale_jitter = getattr(settings, f'{kind}_scale_jitter')
    crops, masks, crop_boxes = [], [], []
    for image, box in zip(images, boxes):
        jittered = jitter_box(box, center_jitter, scale_jitter, rng)
        if not np.isfinite(jittered).all() or math.ceil(math.sqrt(jittered[2] * jittered[3]) * factor) < 1:
            return None
        crop = crop_square(image, jittered, factor, size)
        crops.append(crop.image)
        masks.append(crop.mask)
        crop_boxes.append(np.asarray(box_to_crop(box, crop_window(jittered, factor), size)))
    # One brightness factor and one flip decision per group, as the original's per-call transforms.
    brightness = rng.uniform(max(0.0, 1 - settings.brightness_jitter), 1 + settings.brightness_jitter)
    flip = rng.random() < settings.crop_flip_prob
    images_out = np.empty((len(crops), 3, size, size), np.float32)
    for i, (crop, mask) in enumerate(zip(crops, masks)):
        if mask.all() or feature_mask(mask, settings.feature_stride).all():
            return None
        if flip:
            crop, masks[i] = crop[:, ::-1], mask[:, ::-1]
            crop_boxes[i] = flip_box(crop_boxes[i], size)
        scaled = np.clip(crop.astype(np.float32) * np.float32(brightness / 255.0), 0.0, 1.0)
        images_out[i] = ((scaled - _MEAN) / _STD).transpose(2, 0, 1)
    return CropGroup(images_out, np.ascontiguousarray(np.stack(masks)), np.stack(crop_boxes))


def centre_box(height: int, width: int) -> np.ndarray:
    """The original's stand-in target for negatives: an eighth of the image, centred (int-truncated)."""
    w, h = width / 8, height / 8
    return np.array([int(width / 2 - w / 2), int(height / 2 - h / 2), int(w), int(h)], np.float64)
