"""ONNX export of the network's two calls, `encode` and `decode`, with a dynamic target axis.

    stark-export --variant lite --untrained --output models/     # or --checkpoint FILE

Three graphs per model: encode_template and encode_search (one per crop size) and decode (the
transformer and heads over [templates..., search] tokens). The target count (batch) is dynamic.
No input or output is boolean: padding masks travel as float32, 1.0 = padding (the original's
bool masks stop TensorRT from parsing the graph, STARK issue #87); the graph compares them with
0.5 inside. Attention is exported in its exact (unfused) form.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbone import STRIDE
from .checkpoint import hash_weights
from .config import TrackerConfig
from .network import StarkNetwork, Tokens
from .transformer import fused_attention

OPSET = 17
# Bumped whenever the exported graphs change, so that cached ONNX files and engines are rebuilt.
EXPORT_FORMAT = 2  # 2: decode also gives the corner maps' logits
ENCODE_INPUTS = ('images', 'masks')
TOKEN_NAMES = ('features', 'mask', 'pos')
DECODE_OUTPUTS = ('boxes', 'confidence', 'corners')


class EncodeGraph(nn.Module):
    """network.encode with a float mask in and out: (B,3,S,S), (B,S,S) -> (HW,B,C), (B,HW), (HW,B,C)."""

    def __init__(self, network: StarkNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor, masks: torch.Tensor):
        tokens = self.network.encode(images, masks > 0.5)
        return tokens.features, tokens.mask.to(torch.float32), tokens.pos


class DecodeGraph(nn.Module):
    """network.decode reduced to boxes (B, 4) cxcywh and corner logits (B, 2, HW) (both mean over
    queries) and confidence (B,)."""

    def __init__(self, network: StarkNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor):
        output = self.network.decode(Tokens(features, mask > 0.5, pos))
        return output.boxes.float().mean(dim=1), output.confidence().float(), output.corner_logits()


@dataclass
class OnnxModels:
    """Serialised ONNX graphs by name: encode_template, encode_search, decode."""

    graphs: dict[str, bytes]

    def write(self, directory: str | Path) -> list[Path]:
        """Write <name>.onnx files into `directory` (created if needed); returns their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, data in self.graphs.items():
            path = directory / f'{name}.onnx'
            path.write_bytes(data)
            paths.append(path)
        return paths


def sequence_length(network: StarkNetwork, config: TrackerConfig) -> int:
    """Tokens per target that decode reads: the template crops' cells, then the search crop's."""
    slots = 2 if config.dynamic_template else 1
    return slots * (config.template_size // STRIDE) ** 2 + (config.search_size // STRIDE) ** 2


def model_fingerprint(network: StarkNetwork, config: TrackerConfig) -> str:
    """sha256 over the weights, the network and tracker configs, torch and the export format:
    what the exported graphs depend on (cache key of ONNX files and TensorRT engines)."""
    digest = hashlib.sha256()
    digest.update(f'{network.config}|{config}|{torch.__version__}|{EXPORT_FORMAT}'.encode())
    hash_weights(digest, network)
    return digest.hexdigest()


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: tuple[str, ...],
            outputs: tuple[str, ...], dynamic: dict[str, dict[int, str]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), fused_attention(False):
        # The TorchScript-based exporter (deprecated upstream, but it needs no onnxscript and
        # handles nn.MultiheadAttention); its tracer warnings are about Python ints we mean as such.
        warnings.simplefilter('ignore')
        torch.onnx.export(module.eval(), args, buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic,
                          do_constant_folding=True)
    return buffer.getvalue()


def export_backbone(network: StarkNetwork, size: int) -> bytes:
    """The backbone body alone (images (B, 3, S, S) -> features (B, C, S/16, S/16)) as ONNX bytes:
    what training from cached backbone features runs on its crops."""
    device = next(network.parameters()).device
    return _export(network.backbone[0].body, (torch.zeros(2, 3, size, size, device=device),), ('images',),
                   ('features',), {'images': {0: 'batch'}, 'features': {0: 'batch'}})


def export_onnx(network: StarkNetwork, config: TrackerConfig) -> OnnxModels:
    """The three ONNX graphs of `network` (fp32, on the network's device, left in eval mode)."""
    network = network.eval()
    device = next(network.parameters()).device
    batch = 2  # a traced batch of 2 keeps the target axis symbolic (1 would be folded in places)
    graphs = {}
    for name, size in (('encode_template', config.template_size), ('encode_search', config.search_size)):
        args = (torch.zeros(batch, 3, size, size, device=device), torch.zeros(batch, size, size, device=device))
        dynamic = {'images': {0: 'targets'}, 'masks': {0: 'targets'}, 'features': {1: 'targets'},
                   'mask': {0: 'targets'}, 'pos': {1: 'targets'}}
        graphs[name] = _export(EncodeGraph(network), args, ENCODE_INPUTS, TOKEN_NAMES, dynamic)
    length, dim = sequence_length(network, config), network.config.hidden_dim
    args = (torch.zeros(length, batch, dim, device=device), torch.zeros(batch, length, device=device),
            torch.zeros(length, batch, dim, device=device))
    dynamic = {'features': {1: 'targets'}, 'mask': {0: 'targets'}, 'pos': {1: 'targets'},
               'boxes': {0: 'targets'}, 'confidence': {0: 'targets'},
               'corners': {0: 'targets'}}
    graphs['decode'] = _export(DecodeGraph(network), args, TOKEN_NAMES, DECODE_OUTPUTS, dynamic)
    network.eval()  # the exporter restores the wrapper's mode; keep the network's eval for certain
    return OnnxModels(graphs)
