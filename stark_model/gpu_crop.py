"""All targets' square crops cut and resized in one batched torch call (any device; used on CUDA).

The same crops as preprocessing.crop_square, byte for byte: the same window and padding
arithmetic, and OpenCV's bilinear resize as crop_square reproduces it (the taps and fixed-point
weights of preprocessing.linear_taps, computed per target on the CPU, small), evaluated in int32 on
the device. Only the two source rows and columns per output pixel are read, so the cost depends on
the output size, not on the square.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .preprocessing import crop_padding, crop_window, linear_taps, padded_lines


def upload_frame(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """The (H, W, 3) uint8 frame on `device`: one copy, from pinned memory and asynchronous on CUDA."""
    frame = torch.from_numpy(image)
    if device.type == 'cuda':
        return frame.pin_memory().to(device, non_blocking=True)
    return frame


def _axis_tables(start: int, side: int, visible: tuple[int, int], size: int, columns: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One target's resize along one axis: the two image pixels each output pixel reads (size, 2),
    whether each lies in the image part of the square, their fixed-point weights, and whether the
    output line's mask is padding. visible: [first, end) of the image part, in square pixels."""
    taps = linear_taps(side, size, columns, uint8=True)
    square = np.stack((taps.first, taps.second), axis=1)
    inside = (square >= visible[0]) & (square < visible[1])
    padded = padded_lines(linear_taps(side, size, columns, uint8=False), visible)
    return square + start, inside, taps.fixed_point_weights(), padded


def crop_squares(frame: torch.Tensor, boxes: Sequence[Sequence[float]], factor: float, output_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Crops of side ceil(sqrt(w*h)*factor) around each xywh box of the (H, W, 3) uint8 `frame`.

    Returns images (B, S, S, 3) float32 with integer values 0..255, masks (B, S, S) bool
    (True = padding) and each crop's resize factor S / side: crop_square's, byte for byte.
    """
    height, width = frame.shape[:2]
    windows = [crop_window(box, factor) for box in boxes]
    for box, (_, _, side) in zip(boxes, windows):
        if side < 1:
            raise ValueError(f'box {tuple(box)} is too small to crop around')
    rows, columns = [], []
    for left, top, side in windows:
        pad_left, pad_top, pad_right, pad_bottom = crop_padding((left, top, side), width, height)
        rows.append(_axis_tables(top, side, (pad_top, side - pad_bottom), output_size, columns=False))
        columns.append(_axis_tables(left, side, (pad_left, side - pad_right), output_size, columns=True))
    device = frame.device

    def upload(tables: list[tuple[np.ndarray, ...]], part: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([t[part] for t in tables])).to(device, non_blocking=True)

    row_pixels, row_inside, row_weights, row_padded = (upload(rows, part) for part in range(4))
    column_pixels, column_inside, column_weights, column_padded = (upload(columns, part) for part in range(4))
    row_pixels, column_pixels = row_pixels.clamp(0, height - 1), column_pixels.clamp(0, width - 1)

    # OpenCV's integer steps: per row tap, sum of pixel * column weight, >> 4; then each row weight
    # times that >> 16, summed, + 2, >> 2. Pixels outside the image are the zero padding.
    image = torch.full((len(windows), output_size, output_size, frame.shape[2]), 2, dtype=torch.int32, device=device)
    for a in range(2):
        horizontal = torch.zeros_like(image)
        for b in range(2):
            pixels = frame[row_pixels[:, :, a, None], column_pixels[:, None, :, b]].int()  # (B, S, S, 3)
            inside = row_inside[:, :, a, None] & column_inside[:, None, :, b]
            horizontal += pixels * (column_weights[:, None, :, b, None] * inside[..., None])
        image += (row_weights[:, :, a, None, None] * (horizontal >> 4)) >> 16
    masks = row_padded[:, :, None] | column_padded[:, None, :]
    return (image >> 2).float(), masks, [output_size / window[2] for window in windows]
