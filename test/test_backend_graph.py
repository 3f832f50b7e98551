"""The pytorch-graph backend: bucketing and padding (run on the CPU), CUDA graphs where CUDA exists;
the backend registry's choices and errors; the TensorRT backend where TensorRT and CUDA exist."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from backend_fixtures import lite_model, random_crops
from stark_model import TrackerError, create_tracker
from stark_model.backends import BACKENDS, BackendError, create_backend, resolve_backend, unavailable_reason
from stark_model.config import load_variant
from stark_model.backends.torch_graph import bucket_for, pad_targets, target_buckets
from stark_model.network import Tokens

HAS_CUDA = torch.cuda.is_available()
HAS_TENSORRT = importlib.util.find_spec('tensorrt') is not None


@pytest.fixture(scope='module')
def model():
    return lite_model()


def test_buckets_are_powers_of_two_up_to_max_targets():
    assert target_buckets(1) == [1]
    assert target_buckets(16) == [1, 2, 4, 8, 16]
    assert target_buckets(20) == [1, 2, 4, 8, 16, 20]
    assert [bucket_for(n, target_buckets(20)) for n in (1, 2, 3, 5, 9, 17, 20)] == [1, 2, 4, 8, 16, 20, 20]
    with pytest.raises(BackendError, match='exceed'):
        bucket_for(21, target_buckets(20))
    with pytest.raises(BackendError, match='at least 1'):
        target_buckets(0)


def test_padding_repeats_the_last_target():
    tensor = torch.arange(6.0).view(2, 3)
    assert pad_targets(tensor, 4, dim=0).tolist() == [[0, 1, 2], [3, 4, 5], [3, 4, 5], [3, 4, 5]]
    assert pad_targets(tensor, 5, dim=1)[:, 3:].tolist() == [[2, 2], [5, 5]]
    assert pad_targets(tensor, 2, dim=0) is tensor


def _tokens(backend, cfg, batch):
    template = backend.encode(*random_crops(batch, cfg.template_size, padded_rows=16, seed=2))
    search = backend.encode(*random_crops(batch, cfg.search_size, padded_rows=40, seed=3))
    return Tokens.concat([template, template, search])


@pytest.mark.parametrize('batch', [1, 3, 5])
def test_bucketed_backend_gives_the_eager_results_for_any_target_count(model, batch):
    cfg, cpu = model.variant.tracker, torch.device('cpu')
    eager = create_backend('pytorch', model.network, cfg, cpu)
    graph = create_backend('pytorch-graph', model.network, cfg, cpu, max_targets=8)
    reference, bucketed = eager.decode(_tokens(eager, cfg, batch)), graph.decode(_tokens(graph, cfg, batch))
    assert bucketed.boxes.shape == (batch, 4)
    # Padded rows change the batch the kernels see, which may change their rounding (not the function).
    assert (bucketed.boxes - reference.boxes).abs().max() < 1e-5
    assert (bucketed.confidence - reference.confidence).abs().max() < 1e-5


@pytest.mark.slow
def test_compiled_bucketed_backend_matches_eager(model):
    # torch.compile with the 'eager' compiler checks the graph capture (dynamo) of decode on the CPU
    # without paying for code generation; inductor is what a GPU user picks.
    from stark_model.backends.torch_graph import PyTorchGraphBackend
    cfg, cpu = model.variant.tracker, torch.device('cpu')
    graph = PyTorchGraphBackend(model.network, cpu, max_targets=4, compile=True, compile_backend='eager')
    eager = create_backend('pytorch', model.network, cfg, cpu)
    tokens = _tokens(eager, cfg, 3)  # padded to the bucket of 4
    got, expected = graph.decode(tokens), eager.decode(tokens)
    assert got.boxes.shape == (3, 4)
    assert (got.boxes - expected.boxes).abs().max() < 1e-5
    assert 'torch.compile' in graph.describe()


def test_tracker_names_unknown_or_unavailable_backends(model):
    with pytest.raises(TrackerError, match="unknown backend 'tflite'"):
        create_tracker(model, backend='tflite')
    if not HAS_CUDA:
        with pytest.raises(TrackerError, match='tensorrt: TensorRT needs a CUDA device'):
            create_tracker(model, backend='tensorrt')
    with pytest.raises(TrackerError, match="crops 'gpu'"):
        create_tracker(model, crops='gpu')


def test_every_backend_reports_whether_it_can_run_here():
    for name in BACKENDS:
        reason = unavailable_reason(name, torch.device('cpu'))
        assert reason is None or isinstance(reason, str)
    assert unavailable_reason('pytorch', torch.device('cpu')) is None


def test_tracker_runs_through_the_pytorch_graph_backend(model):
    tracker = create_tracker(model, backend='pytorch-graph', max_targets=1)
    frame = torch.randint(0, 256, (240, 320, 3), dtype=torch.uint8).numpy()
    tracker.initialize(frame, (100, 80, 40, 40), 'a')
    tracker.max_targets = 3  # raised at run time, as the node allows: the backend adds buckets
    tracker.initialize(frame, (200, 100, 30, 50), 'b')
    tracker.initialize(frame, (20, 30, 60, 40), 'c')
    results = tracker.track(frame)
    assert set(results) == {'a', 'b', 'c'} and all(0 <= r.score <= 1 for r in results.values())
    assert tracker.backend.buckets == [1, 2, 3]


@pytest.mark.skipif(not HAS_CUDA, reason='CUDA graphs need CUDA (torch.cuda.is_available() is False)')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_cuda_graph_backend_matches_eager(model, precision):
    cfg, cuda = model.variant.tracker, torch.device('cuda')
    eager = create_backend('pytorch', model.network, cfg, cuda, precision)
    graph = create_backend('pytorch-graph', model.network, cfg, cuda, precision, max_targets=8)
    tolerance = 1e-4 if precision == 'fp32' else 5e-3
    for batch in (1, 3, 8):
        tokens = _tokens(eager, cfg, batch)
        tokens = Tokens(tokens.features.cuda(), tokens.mask.cuda(), tokens.pos.cuda())
        got, expected = graph.decode(tokens), eager.decode(tokens)
        assert (got.boxes - expected.boxes).abs().max() < tolerance
        images, masks = random_crops(batch, cfg.search_size, padded_rows=40)
        encoded = graph.encode(images.cuda(), masks.cuda())
        assert (encoded.features - eager.encode(images.cuda(), masks.cuda()).features).abs().max() < tolerance * 10


@pytest.mark.skipif(not (HAS_CUDA and HAS_TENSORRT),
                    reason='TensorRT needs CUDA and the tensorrt package' +
                    ('' if HAS_CUDA else ' (no CUDA here)') + ('' if HAS_TENSORRT else ' (tensorrt not installed)'))
def test_tensorrt_fp32_matches_pytorch(model, tmp_path):
    cfg, cuda = model.variant.tracker, torch.device('cuda')
    eager = create_backend('pytorch', model.network, cfg, cuda)
    engine = create_backend('tensorrt', model.network, cfg, cuda, max_targets=4, cache_dir=tmp_path)
    tokens = _tokens(eager, cfg, 3)
    tokens = Tokens(tokens.features.cuda(), tokens.mask.cuda(), tokens.pos.cuda())
    assert (engine.decode(tokens).boxes - eager.decode(tokens).boxes).abs().max() < 1e-3


def test_node_parameter_offers_every_backend_and_auto_by_default():
    from stark_ros.parameters import SPECS
    assert SPECS['model.backend'].choices == ('auto',) + BACKENDS
    assert SPECS['model.backend'].default == 'auto'


def test_auto_backend_is_the_variants_cpu_backend_on_a_cpu_in_fp32_only():
    nano = load_variant('lite_nano').tracker
    st50 = load_variant('st50').tracker
    cpu = torch.device('cpu')
    assert resolve_backend('auto', nano, cpu) == 'onnxruntime'
    assert resolve_backend('auto', nano, cpu, 'bf16') == 'pytorch'
    assert resolve_backend('auto', nano, torch.device('cuda')) == 'pytorch'
    assert resolve_backend('auto', st50, cpu) == 'pytorch'  # the original's bits on the default path
    assert resolve_backend('pytorch-graph', nano, cpu) == 'pytorch-graph'


def test_gpu_check_plans_cpu_backends_without_cuda():
    from stark_model.gpu_check import configurations, iou_bound
    cpu = configurations(torch.device('cpu'))
    assert {backend for backend, _, _ in cpu} == {'pytorch', 'pytorch-graph', 'onnxruntime'}
    assert all(precision == 'fp32' for _, precision, _ in cpu)
    assert {b for b, _, _ in configurations(torch.device('cuda'))} == set(BACKENDS)
    assert iou_bound('fp32', 'torch') < iou_bound('fp32', 'opencv')
