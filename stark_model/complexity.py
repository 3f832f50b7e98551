"""Parameter and FLOP counts of a STARK network at its test-time input sizes.

FLOPs are counted with torch.utils.flop_counter (2 x multiply-accumulates of convolutions and
matrix products; element-wise ops, softmax and norms are not counted), the method the reference
figures in the STARK facts use. The fused attention kernel is counted with PyTorch's own formula.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .config import VariantConfig
from .network import StarkNetwork, Tokens


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Fused attention kernels that FlopCounterMode has no formula for on every build.
_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


@dataclass
class Complexity:
    """Parameters and GFLOPs of one tracking step; 'per frame' = search backbone + transformer and
    heads (templates are encoded once and cached)."""

    parameters: int
    search_backbone_gflops: float
    transformer_heads_gflops: float
    template_backbone_gflops: float

    @property
    def per_frame_gflops(self) -> float:
        return self.search_backbone_gflops + self.transformer_heads_gflops


def count_parameters(network: torch.nn.Module) -> int:
    """Trainable-kind parameters (nn.Parameter); frozen batch-norm statistics are buffers."""
    return sum(p.numel() for p in network.parameters())


def _flops(fn) -> float:
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _blank_crop(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A blank single-target crop and its padding mask: the FLOP count does not depend on content."""
    return (torch.zeros(1, 3, size, size, device=device),
            torch.zeros(1, size, size, dtype=torch.bool, device=device))


def _single_target_step(network: StarkNetwork, variant: VariantConfig
                        ) -> tuple[Callable[[int], tuple[torch.Tensor, torch.Tensor]], Tokens, int]:
    """What a single-target step needs: blank crops on the network's device, the encoded template
    and the number of template slots. Puts the network in eval mode."""
    network.eval()
    crop = functools.partial(_blank_crop, device=next(network.parameters()).device)
    # no_grad, not inference_mode: the counter's module tracker needs ordinary tensors.
    with torch.no_grad():
        template = network.encode(*crop(variant.tracker.template_size))
    return crop, template, 2 if variant.tracker.dynamic_template else 1


def measure_complexity(network: StarkNetwork, variant: VariantConfig) -> Complexity:
    """Count parameters and the FLOPs of one tracking step with a single target, on the CPU."""
    cfg = variant.tracker
    crop, template, slots = _single_target_step(network, variant)
    with torch.no_grad():
        search = network.encode(*crop(cfg.search_size))
        return Complexity(
            parameters=count_parameters(network),
            search_backbone_gflops=_flops(lambda: network.encode(*crop(cfg.search_size))),
            transformer_heads_gflops=_flops(lambda: network.decode(Tokens.concat([template] * slots + [search]))),
            template_backbone_gflops=_flops(lambda: network.encode(*crop(cfg.template_size))),
        )


def flops_by_module(network: StarkNetwork, variant: VariantConfig) -> dict[str, float]:
    """GFLOPs of one single-target tracking step per top-level module (backbone, bottleneck,
    transformer, box_head, cls_head, ...): the search crop's encode plus decode."""
    cfg = variant.tracker
    crop, template, slots = _single_target_step(network, variant)
    with torch.no_grad():
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
            search = network.encode(*crop(cfg.search_size))
            network.decode(Tokens.concat([template] * slots + [search]))
    # The counter names each outermost module called by its class ('Transformer', 'CornerHead',
    # 'Backbone.body', ...); report them under the network's attribute names.
    names = {type(module).__name__: name for name, module in network.named_children()}
    names.update({type(module).__name__: 'backbone' for module in network.backbone.children()})
    result: dict[str, float] = {}
    for path, ops in counter.get_flop_counts().items():
        if path != 'Global' and '.' not in path:
            name = names.get(path, path)
            result[name] = result.get(name, 0.0) + sum(ops.values()) / 1e9
    return result
