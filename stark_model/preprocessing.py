"""Square crops around a box and their normalisation, with the original tracker's exact arithmetic.

The crop side is ceil(sqrt(w*h) * factor); its corner is rounded with Python's round (half to
even); parts outside the image are zero; whenever the right or bottom edge needs padding the last
image column or row is dropped and padded instead (the original's `+ 1`); image and padding mask
are resized with OpenCV's bilinear filter and the mask counts any non-zero value as padding.
Squares far larger than the image (exact_crop_limit) are sampled on their visible part instead,
so a crop's cost is bounded by the image and output sizes whatever the box.
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


def crop_window(box: Sequence[float], factor: float) -> tuple[int, int, int]:
    """(left, top, side) in image pixels of the square that crop_square cuts around the xywh box."""
    x, y, w, h = box
    side = math.ceil(math.sqrt(w * h) * factor)
    return round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5), side


def box_to_crop(box: Sequence[float], window: tuple[int, int, int], output_size: int
                ) -> tuple[float, float, float, float]:
    """An xywh image box in the pixels of the crop cut at `window` (crop_window) and resized to
    output_size (continuous coordinates: image x maps to (x - left) * output_size / side)."""
    left, top, side = window
    scale = output_size / side
    return ((box[0] - left) * scale, (box[1] - top) * scale, box[2] * scale, box[3] * scale)


def crop_padding(window: tuple[int, int, int], image_width: int, image_height: int
                 ) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) padding of the crop cut at `window` (crop_window): pixels of the
    square outside the image; a right or bottom edge that needs padding also drops the last image
    column or row (the original's `+ 1`)."""
    left, top, side = window
    return (max(0, -left), max(0, -top), max(left + side - image_width + 1, 0),
            max(top + side - image_height + 1, 0))


# A padded square of up to 2048^2 pixels, or up to 4 times the image's area (at most 4096^2), is
# built and resized exactly as the original does, at 11 bytes per pixel (image and float mask):
# 46 MB, up to 185 MB for frames of 4 Mpx and more. Beyond, only the visible part is sampled
# (_sampled_crop), so memory never grows with the box: a 3000 px box at factor 5 would need a
# 15000 px square (2.5 GB) the original's way.
EXACT_CROP_PIXELS = 2048 * 2048
EXACT_CROP_IMAGE_MULTIPLE = 4
EXACT_CROP_MAX_PIXELS = 4096 * 4096


def crop_square(image: np.ndarray, box: Sequence[float], factor: float, output_size: int) -> Crop:
    """Crop a square of side ceil(sqrt(w*h)*factor) centred on the xywh `box`, resized to output_size.

    Time and memory are bounded by the image and output sizes whatever the box: squares far larger
    than the image are sampled on their visible part only (equal to the full resize up to the
    rounding of the interpolation; the mask too, up to the original's float rounding noise).
    """
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f'box {tuple(box)} has a non-finite value')
    x1, y1, side = crop_window(box, factor)
    if side < 1:
        raise ValueError(f'box {tuple(box)} is too small to crop around')
    height, width = image.shape[:2]
    pad_left, pad_top, pad_right, pad_bottom = crop_padding((x1, y1, side), width, height)
    # The visible part, in image pixels and in pixels of the padded square.
    inside_x = (x1 + pad_left, x1 + side - pad_right)
    inside_y = (y1 + pad_top, y1 + side - pad_bottom)
    if inside_x[0] >= inside_x[1] or inside_y[0] >= inside_y[1]:
        # The square misses the image (the original would fail here): all padding.
        return Crop(np.zeros((output_size, output_size, 3), np.uint8),
                    np.ones((output_size, output_size), bool), output_size / side)
    visible = image[inside_y[0]:inside_y[1], inside_x[0]:inside_x[1]]
    rows, columns = (pad_top, side - pad_bottom), (pad_left, side - pad_right)
    if side * side <= exact_crop_limit(width, height):
        return _resized_crop(visible, rows, columns, side, output_size)
    return _sampled_crop(visible, rows, columns, side, output_size)


def exact_crop_limit(image_width: int, image_height: int) -> int:
    """The most pixels a padded square may have for crop_square to cut it the original's way."""
    return max(EXACT_CROP_PIXELS, min(EXACT_CROP_IMAGE_MULTIPLE * image_width * image_height,
                                      EXACT_CROP_MAX_PIXELS))


def _resized_crop(visible: np.ndarray, rows: tuple[int, int], columns: tuple[int, int], side: int,
                  output_size: int) -> Crop:
    """The original's way: pad the visible part with zeros to the full square, resize it and a float
    mask (1 = padding) bilinearly, and count any non-zero mask value as padding (rounding included)."""
    pad_top, pad_bottom, pad_left, pad_right = rows[0], side - rows[1], columns[0], side - columns[1]
    patch = visible
    if pad_left or pad_top or pad_right or pad_bottom:
        patch = cv2.copyMakeBorder(visible, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT)
    mask = np.ones((side, side), np.float64)
    mask[rows[0]:rows[1], columns[0]:columns[1]] = 0
    resized = cv2.resize(patch, (output_size, output_size))
    resized_mask = cv2.resize(mask, (output_size, output_size)).astype(bool)
    return Crop(resized, resized_mask, output_size / side)


def _sample_positions(side: int, output_size: int, visible: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resize's sample position of each output line in the padded square, clamped to it
    (OpenCV's rule: centre to centre), and whether a tap with non-zero weight falls in padding."""
    positions = np.clip((np.arange(output_size) + 0.5) * (side / output_size) - 0.5, 0, side - 1)
    first = np.floor(positions)
    has_second = positions > first

    def outside(line: np.ndarray) -> np.ndarray:
        return (line < visible[0]) | (line >= visible[1])

    return positions, outside(first) | (has_second & outside(first + 1))


def _sampled_crop(visible: np.ndarray, rows: tuple[int, int], columns: tuple[int, int], side: int,
                  output_size: int) -> Crop:
    """A crop of a square far larger than the image, without building the square: each output
    pixel samples the visible part bilinearly at the position the full resize would (zero outside)."""
    row_positions, padded_rows = _sample_positions(side, output_size, rows)
    column_positions, padded_columns = _sample_positions(side, output_size, columns)
    image = np.zeros((output_size, output_size) + visible.shape[2:], visible.dtype)
    # Only output lines with a tap on the visible part get any image content.
    row_span = np.flatnonzero((row_positions > rows[0] - 1) & (row_positions < rows[1]))
    column_span = np.flatnonzero((column_positions > columns[0] - 1) & (column_positions < columns[1]))
    if row_span.size and column_span.size:
        # Positions relative to the visible part: small numbers, so float32 maps are exact enough
        # (remap interpolates at 1/32 pixel; the full resize at 1/2048).
        map_y = (row_positions[row_span] - rows[0]).astype(np.float32)
        map_x = (column_positions[column_span] - columns[0]).astype(np.float32)
        grid_x, grid_y = np.meshgrid(map_x, map_y)
        image[row_span[0]:row_span[-1] + 1, column_span[0]:column_span[-1] + 1] = cv2.remap(
            visible, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = padded_rows[:, None] | padded_columns[None, :]
    return Crop(image, mask, output_size / side)


class Normalizer:
    """Turns stacked uint8 crops into the network's normalised float input on a device.

    The images come out as contiguous NCHW by default: the original tracker's convolutions run in
    that layout, and a channels-last input (what permuting HWC crops gives) selects other kernels
    that round differently. channels_last=True keeps the permuted layout (faster on some CPUs).
    """

    def __init__(self, device: torch.device | str, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def __call__(self, crops: Sequence[Crop]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) float32 images and (B, S, S) bool masks on the device."""
        images = torch.from_numpy(np.stack([c.image for c in crops])).to(self.device, non_blocking=True)
        masks = torch.from_numpy(np.stack([c.mask for c in crops])).to(self.device, non_blocking=True)
        return self.normalize(images), masks

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) crops with 0..255 values (uint8 or float) on the device -> (B, 3, S, S)."""
        images = images.permute(0, 3, 1, 2).float()
        normalised = ((images / 255.0) - self.mean) / self.std
        return normalised if self.channels_last else normalised.contiguous()
