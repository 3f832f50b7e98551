"""Prediction heads: the corner box head and the STARK-ST score head."""
from __future__ import annotations

import functools
import math

import torch
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # Plain BatchNorm2d (the original does not freeze the head's norms); keys .0 conv, .1 norm.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


@functools.lru_cache(maxsize=8)
def cell_corners(cells: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y in crop pixels of every cell's top-left corner of a cells x cells map, row-major: where
    the corner head's soft-argmax places each cell (no half-cell offset, as the original)."""
    coords = torch.arange(cells, dtype=torch.float32) * stride
    return coords.repeat(cells), coords.repeat_interleave(cells)


class CornerHead(nn.Module):
    """Two conv branches score every cell as the top-left / bottom-right corner; a soft-argmax over
    each score map gives the expected corner, normalised by the search size."""

    def __init__(self, in_channels: int, channels: int, feature_size: int, stride: int) -> None:
        super().__init__()
        self.feature_size = feature_size
        self.image_size = feature_size * stride
        widths = (in_channels, channels, channels // 2, channels // 4, channels // 8)
        for corner in ('tl', 'br'):
            for index in range(4):
                setattr(self, f'conv{index + 1}_{corner}', _conv_bn_relu(widths[index], widths[index + 1]))
            setattr(self, f'conv5_{corner}', nn.Conv2d(widths[4], 1, 1))
        # Cell coordinates in search-crop pixels: the cell's corner, no half-cell offset (as the original).
        coord_x, coord_y = cell_corners(feature_size, stride)
        self.register_buffer('coord_x', coord_x.clone(), persistent=False)  # clones: the cache stays intact
        self.register_buffer('coord_y', coord_y.clone(), persistent=False)

    def _branch(self, x: torch.Tensor, corner: str) -> torch.Tensor:
        for index in range(1, 6):
            x = getattr(self, f'conv{index}_{corner}')(x)
        return x

    def _soft_argmax(self, score_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prob = torch.softmax(score_map.flatten(1), dim=1)
        return (prob * self.coord_x).sum(dim=1), (prob * self.coord_y).sum(dim=1), prob

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features: (B, C, H, W). Returns xyxy boxes (B, 4) in [0, 1] units of the search crop and
        the two score maps (B, 1, H, W) before the softmax."""
        score_tl = self._branch(features, 'tl')
        score_br = self._branch(features, 'br')
        x_tl, y_tl, _ = self._soft_argmax(score_tl)
        x_br, y_br, _ = self._soft_argmax(score_br)
        return torch.stack((x_tl, y_tl, x_br, y_br), dim=1) / self.image_size, score_tl, score_br


def corner_certainty(score_tl: torch.Tensor, score_br: torch.Tensor) -> torch.Tensor:
    """Confidence proxy for networks without a score head: 1 - normalised entropy of the corner
    distributions (1 = both corners on one cell, 0 = uniform over the map), averaged. Shape (B,)."""
    cells = score_tl[0].numel()

    def certainty(score_map: torch.Tensor) -> torch.Tensor:
        log_prob = torch.log_softmax(score_map.flatten(1).float(), dim=1)
        entropy = -(log_prob.exp() * log_prob).sum(dim=1)
        return 1 - entropy / math.log(cells)

    return 0.5 * (certainty(score_tl) + certainty(score_br))


class ScoreHead(nn.Module):
    """MLP on the decoder output giving one logit: is the target present in the search region?"""

    def __init__(self, dim: int, num_layers: int = 3) -> None:
        super().__init__()
        widths = [dim] * num_layers + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else torch.relu(layer(x))
        return x


# The window never goes below this (log floor), so that a corner far from the prior still counts.
WINDOW_FLOOR = 1e-4


def windowed_corners(logits: torch.Tensor, previous: torch.Tensor, stride: int, weight: float) -> torch.Tensor:
    """Corners from the corner maps under a motion prior (ours, test time): each map's softmax is
    multiplied by a cosine window centred where that corner was in the previous frame, raised to
    `weight` (0: the plain soft-argmax of CornerHead). The window is cos^2(pi d / 2S) per axis for
    a distance d in a crop of side S: 1 at the previous corner, 0.5 at S/2, floored at WINDOW_FLOOR.

    logits (B, 2, HW) top-left and bottom-right logits; previous (B, 4) xyxy of the previous box in
    crop pixels. Returns xyxy (B, 4) in units of the crop side, as CornerHead."""
    cells = int(round(math.sqrt(logits.shape[-1])))
    size = cells * stride
    coord_x, coord_y = (c.to(logits.device) for c in cell_corners(cells, stride))
    corners = previous.view(-1, 2, 2, 1)  # (B, corner, xy, 1): both corners in one pass
    log_window = _log_cosine(coord_x - corners[:, :, 0], size) + _log_cosine(coord_y - corners[:, :, 1], size)
    prob = torch.softmax(logits.float() + weight * log_window, dim=-1)  # (B, 2, HW)
    xy = torch.stack(((prob * coord_x).sum(dim=-1), (prob * coord_y).sum(dim=-1)), dim=-1)  # (B, 2, 2)
    return xy.flatten(1) / size


def _log_cosine(distance: torch.Tensor, size: int) -> torch.Tensor:
    window = torch.cos(math.pi * distance.clamp(-size, size) / (2 * size)) ** 2
    return window.clamp_min(WINDOW_FLOOR).log()
