"""Inference backends: how the tracker runs the network, chosen by name (`model.backend`).

    auto           the variant's tracker.cpu_backend on a CPU in fp32 where it can run, else pytorch
    pytorch        eager PyTorch (the reference the others are checked against)
    pytorch-graph  static shapes per target-count bucket, CUDA graphs on CUDA, optional torch.compile
    onnxruntime    our ONNX export in ONNX Runtime (CPU; CUDA provider where installed), fp32
    tensorrt       TensorRT engines from our ONNX export, fp32/fp16, cached on disk (CUDA only)
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..config import TrackerConfig
from ..network import StarkNetwork
from .base import Backend, BackendError, Prediction
from .cache import ArtifactCache

BACKENDS = ('pytorch', 'pytorch-graph', 'onnxruntime', 'tensorrt')
BACKEND_CHOICES = ('auto',) + BACKENDS  # what a user may ask for


def resolve_backend(name: str, config: TrackerConfig, device: torch.device, precision: str = 'fp32') -> str:
    """The backend that `name` means here: 'auto' is the variant's cpu_backend on a CPU in fp32 when
    that can run (ONNX Runtime for the default model, measured faster there), else eager PyTorch."""
    if name != 'auto':
        return name
    if device.type == 'cpu' and precision == 'fp32' and unavailable_reason(config.cpu_backend, device) is None:
        return config.cpu_backend
    return 'pytorch'


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend `name` cannot run on `device` here (missing library or CUDA), else None."""
    if name not in BACKENDS:
        return f'unknown backend {name!r}; one of {", ".join(BACKENDS)}'
    if name == 'onnxruntime' and importlib.util.find_spec('onnxruntime') is None:
        return 'the onnxruntime package is not installed'
    if name == 'tensorrt':
        if device.type != 'cuda':
            return 'TensorRT needs a CUDA device'
        if importlib.util.find_spec('tensorrt') is None:
            return 'the tensorrt package is not installed'
    return None


def create_backend(name: str, network: StarkNetwork, config: TrackerConfig, device: torch.device,
                   precision: str = 'fp32', max_targets: int | None = None, fast_kernels: bool = False,
                   cache_dir: str | Path | None = None, compile: bool = False) -> Backend:
    """The backend `name` (or 'auto', resolve_backend) running `network` on `device`; BackendError
    says why it cannot."""
    name = resolve_backend(name, config, device, precision)
    reason = unavailable_reason(name, device)
    if reason is not None:
        raise BackendError(f'backend {name}: {reason}')
    limit = max_targets or 64
    cache = ArtifactCache(cache_dir)
    if name == 'pytorch':
        from .torch_eager import PyTorchBackend
        return PyTorchBackend(network, device, precision, fast_kernels=fast_kernels)
    if name == 'pytorch-graph':
        from .torch_graph import PyTorchGraphBackend
        return PyTorchGraphBackend(network, device, precision, max_targets=limit, compile=compile,
                                   fast_kernels=fast_kernels)
    if name == 'onnxruntime':
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(network, config, device, precision, cache=cache)
    from .tensorrt_backend import TensorRTBackend
    return TensorRTBackend(network, config, device, precision, max_targets=limit, cache=cache)


__all__ = ['ArtifactCache', 'BACKEND_CHOICES', 'BACKENDS', 'Backend', 'BackendError', 'Prediction', 'create_backend',
           'resolve_backend', 'unavailable_reason']
