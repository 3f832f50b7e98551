"""The backbones a STARK network can stand on, one file each, behind one registry.

Every body maps ImageNet-normalised RGB crops (B, 3, S, S) to stride-16 features (B, C, S/16, S/16)
and says its channel count as `out_channels`; `early_modules()` names the modules that stay
frozen when it is fine-tuned.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .efficientnet_lite import EfficientNetLite0
from .nanotrack import NanoTrackBackbone
from .resnet import ResNetBody

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    'resnet18': lambda: ResNetBody('resnet18'),
    'resnet50': lambda: ResNetBody('resnet50'),
    'resnet101': lambda: ResNetBody('resnet101'),
    'efficientnet_lite0': EfficientNetLite0,
    'nanotrack_v2': NanoTrackBackbone,
}


def build_body(name: str) -> nn.Module:
    """A fresh backbone body by registry name (KeyError names the choices)."""
    if name not in BACKBONES:
        raise KeyError(f'unknown backbone {name!r}; one of {", ".join(BACKBONES)}')
    return BACKBONES[name]()
