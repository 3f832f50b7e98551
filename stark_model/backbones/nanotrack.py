"""NanoTrack v2's backbone (HonglinChu/SiamTrackers, Apache-2.0): a MobileNetV3-style network
trained for tracking, 188 k parameters, stride 16, 48 channels out.

The layout below was read off the released `nanotrack_backbone_sim.onnx` (batch norm already
folded into the convolutions); `load_onnx_weights` fills the module from that file's initializers.
NanoTrack feeds its backbone BGR crops with values 0-255; the tracker here hands every backbone
ImageNet-normalised RGB, so `forward` first undoes that normalisation (fixed buffers, no weights).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD

OUT_CHANNELS = 48
HARD_SIGMOID_SLOPE = 0.1666666716337204  # the file's HardSigmoid alpha (float32 1/6)


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block: expansion width (None: no 1x1 expansion), output width, depthwise
    kernel and stride, activation ('relu' / 'hswish'), squeeze-excite width (None: none), and whether
    the activation comes before the squeeze-excite (block 1) or after it (blocks 4-8)."""

    expand: int | None
    out: int
    kernel: int
    stride: int
    activation: str
    se: int | None = None
    act_before_se: bool = False


# features.1 .. features.8 of the ONNX graph, in order; features.0 is the 3x3 stride-2 stem (16 ch).
BLOCKS = (
    BlockSpec(None, 16, 3, 2, 'relu', se=8, act_before_se=True),
    BlockSpec(72, 24, 3, 2, 'relu'),
    BlockSpec(88, 24, 3, 1, 'relu'),
    BlockSpec(96, 40, 5, 2, 'hswish', se=24),
    BlockSpec(240, 40, 5, 1, 'hswish', se=64),
    BlockSpec(240, 40, 5, 1, 'hswish', se=64),
    BlockSpec(120, 48, 5, 1, 'hswish', se=32),
    BlockSpec(144, 48, 5, 1, 'hswish', se=40),
)


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == 'relu' else nn.Hardswish()


class SqueezeExcite(nn.Module):
    """Channel gate: global average, two linear layers, hard sigmoid (x/6 + 0.5, clipped)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.expand(F.relu(self.reduce(x.mean(dim=(2, 3)))))
        gate = (logits * HARD_SIGMOID_SLOPE + 0.5).clamp(0.0, 1.0)  # ONNX HardSigmoid, as exported
        return x * gate[:, :, None, None]


class InvertedResidual(nn.Module):
    """1x1 expansion, depthwise conv, optional squeeze-excite, 1x1 projection; residual where the
    shape is kept."""

    def __init__(self, in_channels: int, spec: BlockSpec) -> None:
        super().__init__()
        width = spec.expand or in_channels
        self.expand = None if spec.expand is None else nn.Sequential(
            nn.Conv2d(in_channels, width, 1), _activation(spec.activation))
        self.depthwise = nn.Conv2d(width, width, spec.kernel, spec.stride, spec.kernel // 2, groups=width)
        self.se = None if spec.se is None else SqueezeExcite(width, spec.se)
        self.activation = _activation(spec.activation)
        self.act_before_se = spec.act_before_se or self.se is None
        self.project = nn.Conv2d(width, spec.out, 1)
        self.residual = spec.stride == 1 and in_channels == spec.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if self.act_before_se:
            out = self.activation(out)
        if self.se is not None:
            out = self.se(out)
        if not self.act_before_se:
            out = self.activation(out)
        out = self.project(out)
        return x + out if self.residual else out


class NanoTrackBackbone(nn.Module):
    """Stride-16 body taking ImageNet-normalised RGB (as every backbone here) and running NanoTrack's
    network on the BGR 0-255 image it was trained on."""

    out_channels = OUT_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        # normalised RGB -> 0-255 RGB: x * std * 255 + mean * 255 (the channel flip is in forward)
        self.register_buffer('input_scale', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer('input_shift', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish())
        blocks, channels = [], 16
        for spec in BLOCKS:
            blocks.append(InvertedResidual(channels, spec))
            channels = spec.out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(self.to_bgr255(x)))

    def to_bgr255(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB -> NanoTrack's input: BGR, 0-255."""
        rgb = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        return rgb.flip(1)

    def forward_bgr255(self, x: torch.Tensor) -> torch.Tensor:
        """The network on NanoTrack's own input convention (parity tests against its ONNX file)."""
        return self.blocks(self.stem(x))

    def early_modules(self) -> list[nn.Module]:
        """Stem and the stride-4 blocks: kept frozen when the backbone is fine-tuned."""
        return [self.stem, *self.blocks[:2]]

    def weight_layers(self) -> list[nn.Module]:
        """Convolutions and linear layers in the order the ONNX graph runs them."""
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def load_onnx_weights(body: NanoTrackBackbone, path: str | os.PathLike) -> None:
    """Fill `body` from the initializers of NanoTrack v2's `nanotrack_backbone_sim.onnx` (its Conv
    and Gemm nodes in graph order; every shape must match). Needs the `onnx` package."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # onnx raises several types for damaged files
        raise ValueError(f'{path}: not a readable ONNX file ({error})') from None
    initializers = {init.name: init for init in graph.initializer}
    nodes = [node for node in graph.node if node.op_type in ('Conv', 'Gemm')]
    layers = body.weight_layers()
    if len(nodes) != len(layers):
        raise ValueError(f'{path}: {len(nodes)} Conv/Gemm nodes, NanoTrack v2\'s backbone has {len(layers)}')
    with torch.no_grad():
        for node, layer in zip(nodes, layers):
            for name, target in zip(node.input[1:3], (layer.weight, layer.bias)):
                if name not in initializers:
                    raise ValueError(f'{path}: node {node.name} reads {name}, which is not a stored weight')
                value = torch.from_numpy(numpy_helper.to_array(initializers[name]).copy())
                if value.shape != target.shape:
                    raise ValueError(f'{path}: {node.name} weight of shape {tuple(value.shape)}, '
                                     f'expected {tuple(target.shape)}')
                target.copy_(value)
