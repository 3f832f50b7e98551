"""ResNet backbones cut after layer3 (output stride 16) with frozen batch norm (EfficientNet-Lite0:
efficientnet.py).

Module names follow torchvision's ResNet (conv1, bn1, layer1.0.conv1, ..., downsample.0/1), so
torchvision ImageNet weights and official STARK checkpoints load without renaming; the network
wraps this body as `backbone.0.body` like the original.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import PositionEncodingSine

STRIDE = 16
# name: (block type, blocks in layer1..layer3)
RESNET_LAYOUTS = {
    'resnet18': ('basic', (2, 2, 2)),
    'resnet50': ('bottleneck', (3, 4, 6)),
    'resnet101': ('bottleneck', (3, 4, 23)),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, none trained)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer('weight', torch.ones(channels))
        self.register_buffer('bias', torch.zeros(channels))
        self.register_buffer('running_mean', torch.zeros(channels))
        self.register_buffer('running_var', torch.ones(channels))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # torchvision's BatchNorm2d state carries a step counter that frozen statistics do not use.
        state_dict.pop(prefix + 'num_batches_tracked', None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         FrozenBatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision), 1x1 expand, residual (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetBody(nn.Module):
    """Stem and layer1..layer3 of a ResNet: stride 16."""

    def __init__(self, name: str) -> None:
        super().__init__()
        kind, blocks = RESNET_LAYOUTS[name]
        block = BasicBlock if kind == 'basic' else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (planes, count, stride) in enumerate(zip((64, 128, 256), blocks, (1, 2, 2)), start=1):
            layers = []
            for block_index in range(count):
                layers.append(block(channels, planes, stride if block_index == 0 else 1))
                channels = planes * block.expansion
            setattr(self, f'layer{index}', nn.Sequential(*layers))
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def feature_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Padding masks (B, S, S), True = padding, brought to the feature size by nearest-neighbour
    downsampling, as the original."""
    return F.interpolate(masks[None].float(), size=tuple(size)).to(torch.bool)[0]


class Backbone(nn.Module):
    """The ResNet body plus the padding mask brought down to the feature resolution."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name == 'efficientnet_lite0':
            from .efficientnet import EfficientNetLite0  # imports this module's FrozenBatchNorm2d
            self.body = EfficientNetLite0()
        else:
            self.body = ResNetBody(name)
        self.num_channels = self.body.out_channels

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        return features, feature_masks(masks, features.shape[-2:])


class BackboneWithPosition(nn.Sequential):
    """backbone.0 = ResNet body, backbone.1 = sine position encoding (no parameters)."""

    def __init__(self, name: str, hidden_dim: int) -> None:
        super().__init__(Backbone(name), PositionEncodingSine(hidden_dim // 2))
        self.num_channels = self[0].num_channels

    def forward(self, images: torch.Tensor, masks: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, small_masks = self[0](images, masks)
        return features, small_masks, self[1](small_masks).to(features.dtype)

    def freeze_stem_and_layer1(self) -> None:
        """Train only layer2 and layer3, as STARK does (frozen batch norm has no parameters);
        EfficientNet: train only the blocks after stride 4."""
        body = self[0].body
        early = body.early_modules() if hasattr(body, 'early_modules') else (body.conv1, body.layer1)
        for module in early:
            module.requires_grad_(False)
