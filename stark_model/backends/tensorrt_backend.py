"""The `tensorrt` backend: engines built from our ONNX graphs with TensorRT's Python API (CUDA only).

One engine per graph (encode_template, encode_search, decode), fp32 or fp16, with an optimisation
profile for 1..max_targets targets. Engines are cached on disk keyed by the ONNX graph's hash, the
GPU, its compute capability, the TensorRT version, the precision and max_targets; any change builds
a new engine, and a cache file that does not deserialise is rebuilt with a warning.
Written against TensorRT's documented Python API (8.6 and 10: tensor-name I/O, execute_async_v3);
NOT run on this project's machines, which have no TensorRT.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch

from ..config import TrackerConfig
from ..export import TOKEN_NAMES
from ..network import StarkNetwork, Tokens
from .base import Backend, BackendError, Prediction
from .cache import ArtifactCache
from .onnx_models import cached_onnx, model_label


def import_tensorrt():
    """The tensorrt module, else BackendError saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise BackendError(f'backend tensorrt needs the tensorrt package ({error}) and a CUDA GPU') from None
    return tensorrt


def engine_key(onnx_data: bytes, gpu_name: str, capability: str, tensorrt_version: str, precision: str,
               max_targets: int) -> dict[str, str]:
    """What a serialised engine depends on; any change means a rebuild."""
    return {'onnx_sha256': hashlib.sha256(onnx_data).hexdigest(), 'gpu': gpu_name, 'capability': capability,
            'tensorrt': tensorrt_version, 'precision': precision, 'max_targets': str(max_targets)}


def cached_engine(cache: ArtifactCache, name: str, onnx_data: bytes, key: dict[str, str],
                  build: Callable[[bytes], bytes], deserialize: Callable[[bytes], object]) -> object:
    """The engine for `onnx_data` from the cache, built by build(onnx bytes) when absent or corrupt.
    deserialize must raise on bytes that are not a valid engine (TensorRT returns None: we raise)."""
    def load(data: bytes) -> object:
        engine = deserialize(data)
        if engine is None:
            raise ValueError('not a TensorRT engine for this GPU and version')
        return engine
    return cache.load_or_build(name, key, lambda: build(onnx_data), load)


def build_engine(onnx_data: bytes, precision: str, input_shapes: dict[str, tuple[tuple[int, ...], ...]]
                 ) -> bytes:
    """Serialised engine from ONNX; input_shapes: name -> (min, opt, max) shapes of the profile."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch: the only mode from TensorRT 10 on (where the flag is deprecated), a flag before.
    major = int(trt.__version__.split('.')[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_data):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f'TensorRT cannot parse the exported ONNX graph: {errors}')
    config = builder.create_builder_config()
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in input_shapes.items():
        profile.set_shape(name, smallest, optimal, largest)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError('TensorRT failed to build an engine (see its log above)')
    return bytes(serialized)


class _Engine:
    """One engine with its execution context; runs on torch tensors on the current CUDA stream."""

    def __init__(self, engine) -> None:
        trt = import_tensorrt()
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            tensor = inputs[name] = inputs[name].float().contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device='cuda')
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise BackendError('TensorRT execution failed')
        return outputs


class TensorRTBackend(Backend):
    """fp32 or fp16 TensorRT engines for 1..max_targets targets."""

    name = 'tensorrt'

    def __init__(self, network: StarkNetwork, config: TrackerConfig, device: torch.device,
                 precision: str = 'fp32', max_targets: int = 64, cache: ArtifactCache | None = None) -> None:
        super().__init__(network, device, precision)
        self.max_targets = max_targets
        if device.type != 'cuda':
            raise BackendError('backend tensorrt needs a CUDA device')
        if precision not in ('fp32', 'fp16'):
            raise BackendError(f'backend tensorrt builds fp32 or fp16 engines, not {precision}')
        trt = import_tensorrt()
        cache = cache or ArtifactCache()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        major, minor = torch.cuda.get_device_capability(device)
        graphs = cached_onnx(network, config, cache)
        shapes = self._profile_shapes(network, config, max_targets)
        self.engines = {}
        for name, onnx_data in graphs.items():
            key = engine_key(onnx_data, torch.cuda.get_device_name(device), f'{major}.{minor}', trt.__version__,
                             precision, max_targets)
            engine = cached_engine(cache, f'{model_label(network)}-{name}-trt', onnx_data, key,
                                   lambda data, n=name: build_engine(data, precision, shapes[n]),
                                   runtime.deserialize_cuda_engine)
            self.engines[name] = _Engine(engine)
        self.encoders = {config.template_size: self.engines['encode_template'],
                         config.search_size: self.engines['encode_search']}

    @staticmethod
    def _profile_shapes(network: StarkNetwork, config: TrackerConfig, max_targets: int):
        from ..export import sequence_length
        opt = min(max_targets, 16)

        def profile(*shape_after_batch: int, batch_dim: int = 0):
            def at(batch: int) -> tuple[int, ...]:
                shape = list(shape_after_batch)
                shape.insert(batch_dim, batch)
                return tuple(shape)
            return at(1), at(opt), at(max_targets)

        shapes = {}
        for name, size in (('encode_template', config.template_size), ('encode_search', config.search_size)):
            shapes[name] = {'images': profile(3, size, size), 'masks': profile(size, size)}
        length, dim = sequence_length(network, config), network.config.hidden_dim
        shapes['decode'] = {'features': profile(length, dim, batch_dim=1), 'mask': profile(length),
                            'pos': profile(length, dim, batch_dim=1)}
        return shapes

    def _check_count(self, count: int) -> None:
        if count > self.max_targets:
            raise BackendError(f'{count} targets exceed the TensorRT engines\' profile (1..{self.max_targets}); '
                               'create the tracker with a larger max_targets')

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        self._check_count(images.shape[0])
        out = self.encoders[images.shape[-1]](images=images, masks=masks.float())
        return Tokens(out['features'], out['mask'] > 0.5, out['pos'])

    def decode(self, tokens: Tokens) -> Prediction:
        self._check_count(tokens.mask.shape[0])
        out = self.engines['decode'](**dict(zip(TOKEN_NAMES, (tokens.features, tokens.mask.float(), tokens.pos))))
        return Prediction(out['boxes'], out['confidence'], out['corners'])
