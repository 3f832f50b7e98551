"""The `pytorch` backend: the network run eagerly, as it is (the reference for every other backend)."""
from __future__ import annotations

import torch

from ..network import StarkNetwork, Tokens
from ..transformer import fused_attention
from .base import Backend, BackendError, Prediction, predict


class PyTorchBackend(Backend):
    """Eager PyTorch; fp16 needs CUDA. fast_kernels: fused attention (faster, rounded differently)."""

    name = 'pytorch'

    def __init__(self, network: StarkNetwork, device: torch.device, precision: str = 'fp32',
                 fast_kernels: bool = False) -> None:
        super().__init__(network, device, precision)
        if precision == 'fp16' and device.type != 'cuda':
            raise BackendError('precision fp16 needs a CUDA device; use fp32 (or bf16) on the CPU')
        self.fast_kernels = fast_kernels
        self.network = network.to(device).eval()

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        with torch.inference_mode(), self.autocast():
            return self.network.encode(images, masks)

    def decode(self, tokens: Tokens) -> Prediction:
        with torch.inference_mode(), self.autocast(), fused_attention(self.fast_kernels):
            return predict(self.network, tokens)
