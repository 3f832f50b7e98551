"""Square crops around a box and their normalisation, with the original tracker's exact arithmetic.

The crop side is ceil(sqrt(w*h) * factor); its corner is rounded with Python's round (half to
even); parts outside the image are zero; whenever the right or bottom edge needs padding the last
image column or row is dropped and padded instead (the original's `+ 1`); image and padding mask
are resized with OpenCV's bilinear filter and the mask counts any non-zero value as padding.
Squares far larger than the image (exact_crop_limit) are sampled on their visible part instead,
so a crop's cost is bounded by the image and output sizes whatever the box.
"""
from __future__ import annotations

import functools
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


# Squares up to this many pixels are padded and resized the original's way (cv2.copyMakeBorder,
# cv2.resize of the image and of a float64 mask: 11 bytes per pixel, 11.5 MB here), the fastest
# for them. Larger ones take _gathered_crop, the same arithmetic on only the source rows and
# columns the resize reads, whose cost depends on the output size alone.
DIRECT_CROP_PIXELS = 1024 * 1024


def crop_square(image: np.ndarray, box: Sequence[float], factor: float, output_size: int) -> Crop:
    """Crop a square of side ceil(sqrt(w*h)*factor) centred on the xywh `box`, resized to output_size.

    Byte for byte the original's crop (cv2.copyMakeBorder + cv2.resize, mask included) for every
    square, at a cost bounded by the output size: squares above DIRECT_CROP_PIXELS are never built.
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
        return Crop(np.zeros((output_size, output_size) + image.shape[2:], np.uint8),
                    np.ones((output_size, output_size), bool), output_size / side)
    visible = image[inside_y[0]:inside_y[1], inside_x[0]:inside_x[1]]
    rows, columns = (pad_top, side - pad_bottom), (pad_left, side - pad_right)
    if side * side <= DIRECT_CROP_PIXELS:
        return _resized_crop(visible, rows, columns, side, output_size)
    return _gathered_crop(visible, rows, columns, side, output_size)


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


# OpenCV's bilinear resize of uint8 weighs taps with 11-bit fixed-point integers.
_WEIGHT_ONE = 2048


@dataclass
class LinearTaps:
    """cv2.resize INTER_LINEAR along one axis: per output pixel the two source pixels it reads
    (`first`, `second`) and the fractional position between them (the second's weight)."""

    first: np.ndarray
    second: np.ndarray
    fraction: np.ndarray

    def fixed_point_weights(self) -> np.ndarray:
        """(output, 2) int32 weights of the uint8 resize (saturate_cast<short> rounds half to even)."""
        weights = np.stack((np.float32(1) - self.fraction, self.fraction), axis=1) * np.float32(_WEIGHT_ONE)
        return np.rint(weights).astype(np.int32)


@functools.lru_cache(maxsize=16)  # a crop asks for the same positions four times (rows, columns; uint8, mask)
def sample_positions(source: int, output: int) -> np.ndarray:
    """OpenCV's bilinear sample position of each output pixel in source pixels (centre to centre):
    (d + 0.5) * (source / output) - 0.5 with one rounding, as a fused multiply-add computes it
    (measured against cv2.resize of float64 images, where a position a hair off a whole pixel
    decides whether the pixel before it gets a weight)."""
    scale = source / output
    centres = np.arange(output) + 0.5
    product = centres * scale
    # The product's rounding error, exactly (Dekker's split; no fma in numpy), so that fsum can
    # round centre * scale - 0.5 once.
    centres_high, centres_low = _split(centres)
    scale_high, scale_low = _split(np.float64(scale))
    error = (((centres_high * scale_high - product) + centres_high * scale_low + centres_low * scale_high)
             + centres_low * scale_low)
    positions = np.array([math.fsum((p, e, -0.5)) for p, e in zip(product.tolist(), error.tolist())])
    positions.flags.writeable = False  # shared through the cache
    return positions


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x as high + low, each with at most 26 significant bits, so their products are exact."""
    t = 134217729.0 * x  # 2**27 + 1
    high = t - (t - x)
    return high, x - high


def linear_taps(source: int, output: int, columns: bool, uint8: bool) -> LinearTaps:
    """OpenCV's INTER_LINEAR taps along one axis (measured against cv2.resize in the tests).

    uint8 images round the sample position to float32 before its floor and fraction are taken,
    float64 images (the mask) keep the double. Columns and rows differ at the edges: a column
    position outside the image moves onto the edge pixel with weight 1, while a row keeps its
    unclamped weights on the clamped rows (fixed-point weights may then sum to 2047 or 2049).
    """
    position = sample_positions(source, output)
    if uint8:
        position = position.astype(np.float32)
    floor = np.floor(position)
    fraction = position - floor
    first = floor.astype(np.int64)
    if columns:
        fraction[(first < 0) | (first >= source - 1)] = 0
    return LinearTaps(np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), fraction)


def _gathered_crop(visible: np.ndarray, rows: tuple[int, int], columns: tuple[int, int], side: int,
                   output_size: int) -> Crop:
    """The original's crop without building its square: the resize reads at most two source rows
    and columns per output pixel, so only those are gathered (from the image or the zero padding)
    and combined with OpenCV's fixed-point arithmetic; the mask follows from the taps alone.
    Memory, whatever the side: the (at most 2 * output_size) image rows read, and a few int32
    arrays of that many rows of output_size pixels."""
    channels = visible.shape[2] if visible.ndim == 3 else 1
    row_taps = linear_taps(side, output_size, columns=False, uint8=True)
    column_taps = linear_taps(side, output_size, columns=True, uint8=True)
    source_rows, row_index = np.unique(np.concatenate((row_taps.first, row_taps.second)), return_inverse=True)
    # Horizontal pass on the rows the vertical one reads: sum of pixel * weight, then >> 4.
    column_weights = np.repeat(column_taps.fixed_point_weights(), channels, axis=0)  # per channel
    horizontal = np.multiply(_gather(visible, source_rows, column_taps.first, rows, columns),
                             column_weights[:, 0], dtype=np.int32)
    horizontal += np.multiply(_gather(visible, source_rows, column_taps.second, rows, columns),
                              column_weights[:, 1], dtype=np.int32)
    horizontal >>= 4
    # Vertical pass: each row weight times the horizontal value >> 16, then (sum + 2) >> 2.
    image = np.full((output_size, output_size * channels), 2, np.int32)
    term = np.empty_like(image)
    for index, weights in zip((row_index[:output_size], row_index[output_size:]), row_taps.fixed_point_weights().T):
        np.take(horizontal, index, axis=0, out=term)
        term *= weights[:, None]
        term >>= 16
        image += term
    image >>= 2
    # The float64 mask resize is separable with positive weights: an output pixel is padding when
    # its row or its column reads padding.
    mask = (padded_lines(linear_taps(side, output_size, columns=False, uint8=False), rows)[:, None]
            | padded_lines(linear_taps(side, output_size, columns=True, uint8=False), columns)[None, :])
    return Crop(image.astype(np.uint8).reshape((output_size, output_size) + visible.shape[2:]), mask,
                output_size / side)


def _gather(visible: np.ndarray, source_rows: np.ndarray, source_columns: np.ndarray,
            rows: tuple[int, int], columns: tuple[int, int]) -> np.ndarray:
    """The padded square's pixels at source_rows x source_columns, as (rows, columns * channels):
    the visible part (at rows[0], columns[0] of the square) where they fall in it, zero (the
    original's border value) elsewhere."""
    row_offsets = np.clip(source_rows - rows[0], 0, visible.shape[0] - 1)
    column_offsets = np.clip(source_columns - columns[0], 0, visible.shape[1] - 1)
    # Whole rows first (contiguous copies, at most 2 * output_size of them), then the columns of
    # their interleaved channels.
    lines = visible[row_offsets]  # (np.take would first copy a non-contiguous frame whole)
    channels = lines[0, 0].size
    lines = lines.reshape(len(source_rows), -1)
    elements = (column_offsets[:, None] * channels + np.arange(channels)).ravel()
    patch = np.take(lines, elements, axis=1)
    patch[(source_rows < rows[0]) | (source_rows >= rows[1])] = 0
    outside = np.flatnonzero((source_columns < columns[0]) | (source_columns >= columns[1]))
    if outside.size:
        patch[:, (outside[:, None] * channels + np.arange(channels)).ravel()] = 0
    return patch


def padded_lines(taps: LinearTaps, visible: tuple[int, int]) -> np.ndarray:
    """Per output line of the float64 taps (linear_taps(..., uint8=False)), whether a tap with a
    non-zero weight reads padding (outside [visible[0], visible[1])): the original's float64 mask
    resize is non-zero there, and only there (its values are sums of non-negative products, none
    small enough to underflow)."""
    def outside(line: np.ndarray) -> np.ndarray:
        return (line < visible[0]) | (line >= visible[1])

    return outside(taps.first) | ((taps.fraction != 0) & outside(taps.second))


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
        if self.channels_last:
            return ((images.permute(0, 3, 1, 2).float() / 255.0) - self.mean) / self.std
        # A fresh contiguous float copy, then the same arithmetic in place: the same bits as the
        # out-of-place form, 4x faster for a 256 px crop (no temporaries, one strided copy).
        images = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        return images.div_(255.0).sub_(self.mean).div_(self.std)
