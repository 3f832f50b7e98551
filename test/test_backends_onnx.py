"""ONNX export and the onnxruntime backend against eager PyTorch fp32 (the reference)."""
from __future__ import annotations

import shutil

import onnx
import pytest
import torch

from backend_fixtures import lite_model, random_crops
from stark_model import create_tracker, load_model
from stark_model.backends import ArtifactCache, create_backend
from stark_model.backends.onnx_models import cached_onnx
from stark_model.export_cli import main as export_main
from stark_model.gpu_check import lowest_tracker_iou
from stark_model.network import Tokens
from stark_training.synthetic import make_sequence

# Measured on the development machine (2-core Xeon, ONNX Runtime 1.32, torch 2.13): boxes differ
# by ~1e-7 and tokens by ~3e-7; the bound leaves three orders of magnitude of room.
BOX_TOLERANCE = 1e-4
TRACKER_MIN_IOU = 0.99


@pytest.fixture(scope='module')
def model():
    return lite_model()


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('onnx-cache')


@pytest.fixture(scope='module')
def backends(model, cache_dir):
    cfg, device = model.variant.tracker, torch.device('cpu')
    return (create_backend('pytorch', model.network, cfg, device),
            create_backend('onnxruntime', model.network, cfg, device, cache_dir=cache_dir))


def test_onnx_graphs_have_float_masks_and_a_dynamic_target_axis(model, backends, cache_dir):
    # The graphs the `backends` fixture exported (export_onnx), read back from the cache.
    graphs = cached_onnx(model.network, model.variant.tracker, ArtifactCache(cache_dir))
    assert set(graphs) == {'encode_template', 'encode_search', 'decode'}
    for name, data in graphs.items():
        graph = onnx.load_from_string(data).graph
        for value in list(graph.input) + list(graph.output):
            tensor = value.type.tensor_type
            assert tensor.elem_type == onnx.TensorProto.FLOAT, f'{name}.{value.name} is not float32'
            assert 'targets' in [d.dim_param for d in tensor.shape.dim], f'{name}.{value.name} has a fixed batch'
    assert not model.network.training, 'export leaves the network in eval mode'


@pytest.mark.parametrize('batch', [1, 3])
def test_onnxruntime_matches_pytorch_fp32(backends, model, batch):
    reference, ort_backend = backends
    cfg = model.variant.tracker
    template = random_crops(batch, cfg.template_size, padded_rows=20, seed=2)
    search = random_crops(batch, cfg.search_size, padded_rows=60, seed=3)
    parts = []
    for images, masks in (template, template, search):
        ours, theirs = ort_backend.encode(images, masks), reference.encode(images, masks)
        assert torch.equal(ours.mask, theirs.mask)
        assert (ours.features - theirs.features).abs().max() < BOX_TOLERANCE
        assert (ours.pos - theirs.pos).abs().max() < BOX_TOLERANCE
        parts.append(theirs)
    tokens = Tokens.concat(parts)
    expected, got = reference.decode(tokens), ort_backend.decode(tokens)
    box_error = float((got.boxes - expected.boxes).abs().max())
    confidence_error = float((got.confidence - expected.confidence).abs().max())
    print(f'onnxruntime vs pytorch fp32, {batch} targets: boxes {box_error:.2e}, confidence {confidence_error:.2e}')
    assert got.boxes.shape == (batch, 4) and got.confidence.shape == (batch,)
    assert box_error < BOX_TOLERANCE and confidence_error < BOX_TOLERANCE


@pytest.mark.slow
def test_onnx_tracker_follows_the_same_boxes_as_pytorch(model, backends, cache_dir):
    sequence = make_sequence(num_frames=12, width=320, height=240, num_targets=2, seed=4, target_size=40)
    trackers = [create_tracker(model, backend=name, cache_dir=cache_dir) for name in ('pytorch', 'onnxruntime')]
    worst = lowest_tracker_iou(*trackers, sequence)
    print(f'onnxruntime tracker vs pytorch: lowest IoU {worst:.6f}')
    assert worst >= TRACKER_MIN_IOU


def test_onnx_cache_reused_then_corrupt_file_rebuilt_with_a_warning(model, backends, cache_dir, tmp_path,
                                                                   monkeypatch):
    import stark_model.backends.onnx_models as onnx_models
    for cached in cache_dir.iterdir():  # the graphs the `backends` fixture exported
        shutil.copy(cached, tmp_path)
    exports = []
    real_export = onnx_models.export_onnx
    monkeypatch.setattr(onnx_models, 'export_onnx', lambda *a: exports.append(1) or real_export(*a))
    cfg, device = model.variant.tracker, torch.device('cpu')
    create_backend('onnxruntime', model.network, cfg, device, cache_dir=tmp_path)
    assert not exports, 'a backend for the same weights loads the cached graphs'
    decode_file = next(tmp_path.glob('*-decode-*.bin'))
    decode_file.write_bytes(b'not an onnx graph')
    with pytest.warns(RuntimeWarning, match='cannot be loaded'):
        backend = create_backend('onnxruntime', model.network, cfg, device, cache_dir=tmp_path)
    assert len(exports) == 1
    assert decode_file.read_bytes().startswith(b'\x08'), 'the rebuilt file is an ONNX model again'
    images, masks = random_crops(1, cfg.search_size)
    assert backend.encode(images, masks).features.shape[1] == 1


def test_onnxruntime_refuses_reduced_precision(model, tmp_path):
    with pytest.raises(ValueError, match='fp32 only'):
        create_backend('onnxruntime', model.network, model.variant.tracker, torch.device('cpu'), 'bf16',
                       cache_dir=tmp_path)


@pytest.mark.slow
def test_stark_export_writes_three_onnx_files(tmp_path, capsys):
    assert export_main(['--variant', 'lite', '--untrained', '--output', str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.glob('*.onnx'))
    assert names == ['decode.onnx', 'encode_search.onnx', 'encode_template.onnx']
    onnx.checker.check_model(str(tmp_path / 'decode.onnx'))


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_for_the_efficientnet_variant(tmp_path):
    torch.manual_seed(0)
    model = load_model(variant='lite_effnet', allow_untrained=True)
    cfg, device = model.variant.tracker, torch.device('cpu')
    reference = create_backend('pytorch', model.network.eval(), cfg, device)
    ort_backend = create_backend('onnxruntime', model.network, cfg, device, cache_dir=tmp_path)
    template = random_crops(2, cfg.template_size, seed=2)
    search = random_crops(2, cfg.search_size, padded_rows=40, seed=3)
    slots = 2 if cfg.dynamic_template else 1
    expected, got = (b.decode(Tokens.concat([b.encode(*template)] * slots + [b.encode(*search)]))
                     for b in (reference, ort_backend))
    assert (got.boxes - expected.boxes).abs().max() < BOX_TOLERANCE
    assert (got.confidence - expected.confidence).abs().max() < BOX_TOLERANCE
