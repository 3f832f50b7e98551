"""The network's backbone stage: a body from the registry in backbones/ plus the padding mask at
feature resolution and the sine position encoding. The network holds it as `backbone.0.body` like
the original, so official checkpoints load without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_body
from .config import STRIDE
from .position_encoding import PositionEncodingSine

__all__ = ['STRIDE', 'Backbone', 'BackboneWithPosition', 'feature_masks']


def feature_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Padding masks (B, S, S), True = padding, brought to the feature size by nearest-neighbour
    downsampling, as the original."""
    return F.interpolate(masks[None].float(), size=tuple(size)).to(torch.bool)[0]


class Backbone(nn.Module):
    """The body plus the padding mask brought down to the feature resolution."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.body = build_body(name)
        self.num_channels = self.body.out_channels

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        return features, feature_masks(masks, features.shape[-2:])


class BackboneWithPosition(nn.Sequential):
    """backbone.0 = body, backbone.1 = sine position encoding (no parameters)."""

    def __init__(self, name: str, hidden_dim: int) -> None:
        super().__init__(Backbone(name), PositionEncodingSine(hidden_dim // 2))
        self.num_channels = self[0].num_channels

    def forward(self, images: torch.Tensor, masks: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, small_masks = self[0](images, masks)
        return features, small_masks, self[1](small_masks).to(features.dtype)

    def freeze_stem_and_layer1(self) -> None:
        """Keep the body's early_modules() frozen: for the ResNets conv1 and layer1, so that only
        layer2 and layer3 train, as STARK does (frozen batch norm has no parameters)."""
        for module in self[0].body.early_modules():
            module.requires_grad_(False)
