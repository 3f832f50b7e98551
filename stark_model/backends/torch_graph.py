"""The `pytorch-graph` backend: static shapes per target-count bucket, captured in CUDA graphs.

A batch of B targets runs at the smallest bucket (1, 2, 4, ... max_targets) that holds it, padded
by repeating its last target; padded rows are computed and dropped (targets never interact). On
CUDA each (call, bucket) is captured once in a CUDA graph and replayed, which removes the kernel
launch overhead that dominates small batches; optionally torch.compile fuses the kernels first.
Without CUDA the same bucketing runs eagerly (or compiled): correct, but no faster than `pytorch`.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import TrackerConfig
from ..network import StarkNetwork, Tokens
from ..transformer import fused_attention
from .base import BackendError, Prediction, predict
from .torch_eager import PyTorchBackend

Runner = Callable[..., tuple[torch.Tensor, ...]]


def target_buckets(max_targets: int) -> list[int]:
    """Powers of two below max_targets, then max_targets itself: [1, 2, 4, ..., max_targets]."""
    if max_targets < 1:
        raise BackendError(f'max_targets must be at least 1, got {max_targets}')
    buckets, size = [], 1
    while size < max_targets:
        buckets.append(size)
        size *= 2
    return buckets + [max_targets]


def bucket_for(count: int, buckets: list[int]) -> int:
    """The smallest bucket holding `count` targets; BackendError beyond the largest."""
    for bucket in buckets:
        if count <= bucket:
            return bucket
    raise BackendError(f'{count} targets exceed this backend\'s max_targets ({buckets[-1]})')


def pad_targets(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Grow the target axis `dim` to `size` by repeating the last target (a valid input)."""
    count = tensor.shape[dim]
    if count == size:
        return tensor
    index = torch.arange(size, device=tensor.device).clamp(max=count - 1)
    return tensor.index_select(dim, index)


class CudaGraphRunner:
    """fn captured once at fixed input shapes; calls copy inputs in, replay, and return the outputs
    (static buffers, overwritten by the next call: copy what must be kept)."""

    def __init__(self, fn: Runner, example: tuple[torch.Tensor, ...], pool, warmup: int = 3) -> None:
        self.inputs = tuple(t.clone() for t in example)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # compiles, selects kernels and fills caches outside the capture
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the node captures in its loader thread while the old model may still run.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode='thread_local'):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for static, value in zip(self.inputs, inputs):
            static.copy_(value)
        self.graph.replay()
        return self.outputs


class PyTorchGraphBackend(PyTorchBackend):
    """Bucketed static shapes; CUDA graphs on CUDA; `compile` adds torch.compile (any device)."""

    name = 'pytorch-graph'

    def __init__(self, network: StarkNetwork, device: torch.device, precision: str = 'fp32',
                 max_targets: int = 64, compile: bool = False, compile_backend: str = 'inductor',
                 compile_mode: str | None = None, fast_kernels: bool = False) -> None:
        super().__init__(network, device, precision, fast_kernels=fast_kernels)
        self.buckets = target_buckets(max_targets)
        self.use_cuda_graphs = device.type == 'cuda'
        self.compiled = compile
        self._pool = torch.cuda.graph_pool_handle() if self.use_cuda_graphs else None
        self._runners: dict[tuple[str, int], Runner] = {}
        encode, decode = self._encode_fn, self._decode_fn
        if compile:
            # One graph per bucket shape: dynamic=False keeps shapes static, as CUDA graphs need.
            encode = torch.compile(encode, backend=compile_backend, mode=compile_mode, dynamic=False)
            decode = torch.compile(decode, backend=compile_backend, mode=compile_mode, dynamic=False)
        self._functions = {'encode': encode, 'decode': decode}

    def _encode_fn(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self.autocast():
            tokens = self.network.encode(images, masks)
        return tokens.features, tokens.mask, tokens.pos

    def _decode_fn(self, features: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor
                   ) -> tuple[torch.Tensor, ...]:
        with self.autocast(), fused_attention(self.fast_kernels):
            prediction = predict(self.network, Tokens(features, mask, pos))
        return prediction.boxes, prediction.confidence, prediction.corner_logits

    def _runner(self, kind: str, bucket: int, inputs: tuple[torch.Tensor, ...]) -> Runner:
        key = (kind if kind == 'decode' else f'{kind}{inputs[0].shape[-1]}', bucket)
        if key not in self._runners:
            fn = self._functions[kind]
            self._runners[key] = CudaGraphRunner(fn, inputs, self._pool) if self.use_cuda_graphs else fn
        return self._runners[key]

    def _run(self, kind: str, inputs: tuple[torch.Tensor, ...], dims: tuple[int, ...]
             ) -> tuple[tuple[torch.Tensor, ...], int]:
        count = inputs[0].shape[dims[0]]
        if count > self.buckets[-1]:
            # max_targets was raised after creation (the node allows it): more buckets, captured lazily.
            self.buckets = target_buckets(count)
        bucket = bucket_for(count, self.buckets)
        padded = tuple(pad_targets(t, bucket, d) for t, d in zip(inputs, dims))
        with torch.inference_mode():
            return self._runner(kind, bucket, padded)(*padded), count

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        (features, mask, pos), count = self._run('encode', (images, masks), (0, 0))
        # Slices of static buffers are copied: templates are kept across frames.
        return Tokens(features[:, :count].clone(), mask[:count].clone(), pos[:, :count].clone())

    def decode(self, tokens: Tokens) -> Prediction:
        outputs, count = self._run('decode', (tokens.features, tokens.mask, tokens.pos), (1, 0, 1))
        return Prediction(*(output[:count].clone() for output in outputs))

    def prepare(self, config: TrackerConfig) -> None:
        """Capture every bucket's graphs now (CUDA only: on the CPU nothing is captured, and running
        each bucket once would only cost time)."""
        if not self.use_cuda_graphs:
            return
        slots = 2 if config.dynamic_template else 1
        for bucket in self.buckets:
            def crops(size: int) -> tuple[torch.Tensor, torch.Tensor]:
                return (torch.zeros(bucket, 3, size, size, device=self.device),
                        torch.zeros(bucket, size, size, dtype=torch.bool, device=self.device))
            template = self.encode(*crops(config.template_size))
            self.decode(Tokens.concat([template] * slots + [self.encode(*crops(config.search_size))]))

    def describe(self) -> str:
        how = 'CUDA graphs' if self.use_cuda_graphs else 'no CUDA graphs (CPU)'
        return (f'pytorch-graph on {self.device} ({self.precision}, buckets up to {self.buckets[-1]}, '
                f'{how}{", torch.compile" if self.compiled else ""})')
