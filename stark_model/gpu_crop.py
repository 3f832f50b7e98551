"""All targets' square crops cut and resized in one batched torch call (any device; used on CUDA).

The same crops as preprocessing.crop_square (whose window and padding arithmetic it calls):
the square's pixels outside the image are zero, and it is resized with OpenCV's bilinear rule
(sample at (d + 0.5) * side / size - 0.5, edges clamped, rounded as OpenCV rounds it), so that
images agree with OpenCV's within one grey level (OpenCV rounds through 11-bit fixed-point weights)
and padding masks agree exactly (a pixel is padding when any tap with a non-zero weight falls in
the padding).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .preprocessing import crop_padding, crop_window


def upload_frame(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """The (H, W, 3) uint8 frame on `device`: one copy, from pinned memory and asynchronous on CUDA."""
    frame = torch.from_numpy(image)
    if device.type == 'cuda':
        return frame.pin_memory().to(device, non_blocking=True)
    return frame


def _fused_multiply_add(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """a * b + c rounded once (float64), as a compiled fma would; torch has no fma, so the product's
    rounding error is recovered exactly (Dekker's split) and added back."""
    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = 134217729.0 * x  # 2**27 + 1
        high = t - (t - x)
        return high, x - high

    product = a * b
    (a_high, a_low), (b_high, b_low) = split(a), split(b)
    product_error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    total = product + c
    virtual = total - product
    sum_error = (product - (total - virtual)) + (c - virtual)
    return total + (sum_error + product_error)


def _taps(start: torch.Tensor, side: torch.Tensor, valid: torch.Tensor, size: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per target and output index along one axis: the two source pixels (image coordinates),
    their weights and whether each lies inside the image part of the square. Shapes (B, size, 2).
    start, side: (B, 1) float64; valid: (B, 2) float64 [first, end) image pixels of the square."""
    # OpenCV's sample position, d * scale + (scale / 2 - 1/2) with scale = 1 / (size / side), rounded
    # as its float64 resize rounds it (one fma; measured against cv2.resize for 1,348 size pairs): a
    # position just below a pixel also weighs the pixel before it, which decides padding masks.
    scale = 1.0 / (size / side)
    position = _fused_multiply_add(torch.arange(size, dtype=torch.float64, device=side.device) + 0.5, scale, -0.5)
    floor = position.floor()
    fraction = position - floor
    first = floor.long()
    last = side.long() - 1
    index = torch.stack((first.clamp(0).minimum(last), (first + 1).clamp(0).minimum(last)), dim=-1)
    weight = torch.stack((1 - fraction, fraction), dim=-1).float()
    pixel = index + start.long()[:, :, None]
    bounds = valid.long()
    inside = (pixel >= bounds[:, 0, None, None]) & (pixel < bounds[:, 1, None, None])
    return pixel, weight, inside


def crop_squares(frame: torch.Tensor, boxes: Sequence[Sequence[float]], factor: float, output_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Crops of side ceil(sqrt(w*h)*factor) around each xywh box of the (H, W, 3) uint8 `frame`.

    Returns images (B, S, S, 3) float32 with integer values 0..255, masks (B, S, S) bool
    (True = padding) and each crop's resize factor S / side, as crop_square does per box.
    """
    height, width = frame.shape[:2]
    windows = [crop_window(box, factor) for box in boxes]
    for box, (_, _, side) in zip(boxes, windows):
        if side < 1:
            raise ValueError(f'box {tuple(box)} is too small to crop around')
    geometry = []  # per target: left, top, side, then the square's image part [x0, x1) and [y0, y1)
    for left, top, side in windows:
        pad_left, pad_top, pad_right, pad_bottom = crop_padding((left, top, side), width, height)
        geometry.append((left, top, side, left + pad_left, left + side - pad_right, top + pad_top,
                         top + side - pad_bottom))
    device = frame.device
    # One small upload for all targets (exact in float64: pixel coordinates are integers).
    table = torch.tensor(geometry, dtype=torch.float64).to(device, non_blocking=True)
    side = table[:, 2:3]
    cols, col_weight, col_inside = _taps(table[:, 0:1], side, table[:, 3:5], output_size)
    rows, row_weight, row_inside = _taps(table[:, 1:2], side, table[:, 5:7], output_size)
    cols_safe, rows_safe = cols.clamp(0, width - 1), rows.clamp(0, height - 1)

    images = torch.zeros(len(windows), output_size, output_size, 3, dtype=torch.float32, device=device)
    masks = torch.zeros(len(windows), output_size, output_size, dtype=torch.bool, device=device)
    for a in range(2):
        for b in range(2):
            inside = row_inside[:, :, a, None] & col_inside[:, None, :, b]  # (B, S, S)
            weight = row_weight[:, :, a, None] * col_weight[:, None, :, b]
            pixels = frame[rows_safe[:, :, a, None], cols_safe[:, None, :, b]].float()  # (B, S, S, 3)
            images += (weight * inside)[..., None] * pixels
            masks |= ~inside & (weight != 0)
    return images.round_().clamp_(0, 255), masks, [output_size / window[2] for window in windows]
