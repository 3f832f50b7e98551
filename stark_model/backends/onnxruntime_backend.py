"""The `onnxruntime` backend: our exported ONNX graphs in ONNX Runtime (CPU; CUDA provider where present)."""
from __future__ import annotations

import numpy as np
import torch

from ..config import TrackerConfig
from ..export import TOKEN_NAMES
from ..network import StarkNetwork, Tokens
from .base import Backend, BackendError, Prediction
from .cache import ArtifactCache
from .onnx_models import cached_onnx


def _ort():
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendError(f'backend onnxruntime needs the onnxruntime package ({error}); '
                           'pip install onnxruntime (or onnxruntime-gpu)') from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """fp32 only. Inputs cross to ONNX Runtime as numpy arrays (CUDA: one copy each way)."""

    name = 'onnxruntime'

    def __init__(self, network: StarkNetwork, config: TrackerConfig, device: torch.device,
                 precision: str = 'fp32', cache: ArtifactCache | None = None, threads: int | None = None) -> None:
        super().__init__(network, device, precision)
        if precision != 'fp32':
            raise BackendError(f'backend onnxruntime runs fp32 only, not {precision}; '
                               'use pytorch or tensorrt for reduced precision')
        ort = _ort()
        self.providers = ['CPUExecutionProvider']
        if device.type == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise BackendError('device cuda asked for, but this onnxruntime has no CUDAExecutionProvider '
                                   f'(has {", ".join(ort.get_available_providers())}); install onnxruntime-gpu')
            self.providers.insert(0, 'CUDAExecutionProvider')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(data: bytes):
            return ort.InferenceSession(data, options, providers=self.providers)

        self.sessions = cached_onnx(network, config, cache or ArtifactCache(), load=session)
        self.encoders = {config.template_size: self.sessions['encode_template'],
                         config.search_size: self.sessions['encode_search']}

    def _to_numpy(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to('cpu', torch.float32).contiguous().numpy()

    def _to_torch(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        size = images.shape[-1]
        if size not in self.encoders:
            raise BackendError(f'backend onnxruntime has encoders for crop sizes {sorted(self.encoders)}, '
                               f'not {size}')
        features, mask, pos = self.encoders[size].run(
            None, {'images': self._to_numpy(images), 'masks': self._to_numpy(masks)})
        return Tokens(self._to_torch(features), self._to_torch(mask) > 0.5, self._to_torch(pos))

    def decode(self, tokens: Tokens) -> Prediction:
        inputs = dict(zip(TOKEN_NAMES, (self._to_numpy(t) for t in (tokens.features, tokens.mask, tokens.pos))))
        boxes, confidence, corners = self.sessions['decode'].run(None, inputs)
        return Prediction(self._to_torch(boxes), self._to_torch(confidence), self._to_torch(corners))

    def describe(self) -> str:
        return f'onnxruntime {_ort().__version__} ({self.providers[0]}, fp32)'
