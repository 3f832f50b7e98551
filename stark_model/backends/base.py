"""The interface every inference backend implements: encode crops to tokens, decode tokens to boxes.

The tracker keeps the algorithm (crops, template bookkeeping, box mapping); a backend only runs the
network, batched over targets. Inputs and outputs are torch tensors on `backend.device`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

import torch

from ..config import TrackerConfig
from ..network import StarkNetwork, Tokens

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class BackendError(ValueError):
    """A backend cannot run as asked (missing library or device, unsupported precision); says why."""


@dataclass
class Prediction:
    """Per target: box (B, 4) float32 normalised cxcywh in the search crop (mean over queries),
    confidence (B,) float32 in [0, 1], and the corner maps' logits (B, 2, HW) float32 (top-left,
    bottom-right; mean over queries), which a test-time motion prior re-weights (tracker)."""

    boxes: torch.Tensor
    confidence: torch.Tensor
    corner_logits: torch.Tensor

    def packed(self) -> torch.Tensor:
        """(B, 5 + 2 HW) float32: box, confidence, corner logits, so that one copy brings a frame's
        results back."""
        return torch.cat((self.boxes.float(), self.confidence.float()[:, None],
                          self.corner_logits.float().flatten(1)), dim=1)


def predict(network: StarkNetwork, tokens: Tokens) -> Prediction:
    """The network's decode reduced to what the tracker reads (boxes averaged over queries)."""
    output = network.decode(tokens)
    return Prediction(output.boxes.float().mean(dim=1), output.confidence().float(), output.corner_logits())


class Backend(ABC):
    """Runs one STARK network for a tracker; `name` is the model.backend value that selects it."""

    name: str = ''

    def __init__(self, network: StarkNetwork, device: torch.device, precision: str) -> None:
        if precision not in PRECISIONS:
            raise BackendError(f'precision {precision!r} is not one of {", ".join(PRECISIONS)}')
        self.network = network
        self.device = device
        self.precision = precision

    @abstractmethod
    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        """images (B, 3, S, S) normalised float32, masks (B, S, S) bool (True = padding) -> tokens."""

    @abstractmethod
    def decode(self, tokens: Tokens) -> Prediction:
        """[template tokens..., search tokens] of B targets -> their boxes and confidences."""

    def describe(self) -> str:
        return f'{self.name} on {self.device} ({self.precision})'

    def prepare(self, config: TrackerConfig) -> None:
        """Pay one-time costs (graph capture, compilation) now rather than on a live frame."""

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision for torch-run parts (fp16/bf16); nothing for fp32."""
        dtype = PRECISIONS[self.precision]
        # No cast cache: it would hold tensors across CUDA-graph captures (and saves nothing per call).
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                            cache_enabled=False):
            yield
