"""Square crops around a box and their normalisation, with the original tracker's exact arithmetic.

The crop side is ceil(sqrt(w*h) * factor); its corner is rounded with Python's round (half to
even); parts outside the image are zero; whenever the right or bottom edge needs padding the last
image column or row is dropped and padded instead (the original's `+ 1`); image and padding mask
are resized with OpenCV's bilinear filter and the mask counts any non-zero value as padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Crop:
    """A resized square crop: image (S, S, 3) uint8, padding mask (S, S) bool (True = outside the
    image), and resize_factor = S / crop side in image pixels."""

    image: np.ndarray
    mask: np.ndarray
    resize_factor: float


def crop_square(image: np.ndarray, box: Sequence[float], factor: float, output_size: int) -> Crop:
    """Crop a square of side ceil(sqrt(w*h)*factor) centred on the xywh `box`, resized to output_size."""
    x, y, w, h = box
    side = math.ceil(math.sqrt(w * h) * factor)
    if side < 1:
        raise ValueError(f'box {tuple(box)} is too small to crop around')
    height, width = image.shape[:2]
    x1 = round(x + 0.5 * w - side * 0.5)
    y1 = round(y + 0.5 * h - side * 0.5)
    x2, y2 = x1 + side, y1 + side
    pad_left, pad_top = max(0, -x1), max(0, -y1)
    pad_right, pad_bottom = max(x2 - width + 1, 0), max(y2 - height + 1, 0)

    inside_x = (x1 + pad_left, x2 - pad_right)
    inside_y = (y1 + pad_top, y2 - pad_bottom)
    if inside_x[0] >= inside_x[1] or inside_y[0] >= inside_y[1]:
        # The square misses the image (the original would fail here): all padding.
        return Crop(np.zeros((output_size, output_size, 3), np.uint8),
                    np.ones((output_size, output_size), bool), output_size / side)
    patch = image[inside_y[0]:inside_y[1], inside_x[0]:inside_x[1]]
    if pad_left or pad_top or pad_right or pad_bottom:
        patch = cv2.copyMakeBorder(patch, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT)
    mask = np.ones(patch.shape[:2], np.float64)
    mask[pad_top:patch.shape[0] - pad_bottom, pad_left:patch.shape[1] - pad_right] = 0
    resized = cv2.resize(patch, (output_size, output_size))
    resized_mask = cv2.resize(mask, (output_size, output_size)).astype(bool)
    return Crop(resized, resized_mask, output_size / side)


class Normalizer:
    """Turns stacked uint8 crops into the network's normalised float input on a device."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def __call__(self, crops: Sequence[Crop]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) float32 images and (B, S, S) bool masks on the device."""
        images = torch.from_numpy(np.stack([c.image for c in crops])).to(self.device, non_blocking=True)
        masks = torch.from_numpy(np.stack([c.mask for c in crops])).to(self.device, non_blocking=True)
        images = images.permute(0, 3, 1, 2).float()
        return ((images / 255.0) - self.mean) / self.std, masks
