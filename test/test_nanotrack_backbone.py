"""NanoTrack v2's backbone as our module: the weights of its released ONNX file, the same features
as ONNX Runtime on that file (search and template sizes), and the input convention (the tracker's
normalised RGB in, NanoTrack's BGR 0-255 inside)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_fixtures import SHARED, require_shared

from stark_model import load_model
from stark_model.backbones import BACKBONES, build_body
from stark_model.backbones.nanotrack import NanoTrackBackbone, load_onnx_weights
from stark_model.config import BACKBONES as CONFIG_BACKBONES
from stark_model.preprocessing import IMAGENET_MEAN, IMAGENET_STD

NANO_DIR = SHARED / 'baselines' / 'nanotrack_v2'
BACKBONE_ONNX = NANO_DIR / 'nanotrack_backbone_sim.onnx'
OTB_FRAME = SHARED / 'data' / 'otb_val' / 'David' / 'img' / '0001.jpg'


def _require(path: Path) -> Path:
    return require_shared(path, Path.is_file)


@pytest.fixture(scope='module')
def backbone() -> NanoTrackBackbone:
    body = NanoTrackBackbone().eval()
    load_onnx_weights(body, _require(BACKBONE_ONNX))
    return body


def _ort_session(size: int):
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    model = onnx.load(str(BACKBONE_ONNX))
    # The file fixes 255 px; free the spatial sizes so that the 128 px template runs as well.
    for value, dims in ((model.graph.input[0], (2, 3)), (model.graph.output[0], (2, 3))):
        for dim in dims:
            value.type.tensor_type.shape.dim[dim].dim_param = f'side{dim}'
    return ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])


def _bgr_crop(size: int) -> np.ndarray:
    cv2 = pytest.importorskip('cv2')
    image = cv2.imread(str(_require(OTB_FRAME)))
    return cv2.resize(image, (size, size)).astype(np.float32).transpose(2, 0, 1)[None].copy()


def test_registry_and_config_name_the_same_backbones():
    assert tuple(BACKBONES) == CONFIG_BACKBONES
    assert isinstance(build_body('nanotrack_v2'), NanoTrackBackbone)
    with pytest.raises(KeyError, match='nanotrack_v2'):
        build_body('mobilenet')


def test_weights_fill_every_layer_with_188k_parameters(backbone):
    assert sum(p.numel() for p in backbone.parameters()) == 188_208  # + 30 reshape constants = the file's 188,238
    assert all(p.abs().sum() > 0 for p in backbone.parameters())


@pytest.mark.parametrize('size, cells', [(255, 16), (128, 8)])
def test_features_equal_onnx_runtime_on_the_released_file(backbone, size, cells):
    image = _bgr_crop(size)
    expected = _ort_session(size).run(None, {'input': image})[0]
    with torch.no_grad():
        actual = backbone.forward_bgr255(torch.from_numpy(image)).numpy()
    assert actual.shape == expected.shape == (1, 48, cells, cells)
    # Both are float32 over inputs of 0-255: each lies within 5e-5 of a float64 evaluation (measured
    # 2.7e-5 and 4.1e-5 at 255 px), so 1e-5 holds relative to the features' scale, not absolutely.
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= 1e-5 * max(scale, 1.0)


def test_normalised_rgb_input_is_converted_to_nanotracks_bgr_0_255(backbone):
    bgr = _bgr_crop(128)
    rgb = bgr[:, ::-1] / 255.0
    normalised = (rgb - np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        via_tracker = backbone(torch.from_numpy(normalised.astype(np.float32)))
        direct = backbone.forward_bgr255(torch.from_numpy(bgr))
    assert torch.allclose(via_tracker, direct, atol=1e-3, rtol=1e-4)


def test_a_wrong_or_damaged_file_is_refused_by_name(tmp_path):
    pytest.importorskip('onnx')
    damaged = tmp_path / 'damaged.onnx'
    damaged.write_bytes(b'not an onnx file')
    with pytest.raises(ValueError, match='damaged.onnx'):
        load_onnx_weights(NanoTrackBackbone(), damaged)
    head = NANO_DIR / 'nanotrack_head_sim.onnx'
    with pytest.raises(ValueError, match='Conv/Gemm nodes'):
        load_onnx_weights(NanoTrackBackbone(), _require(head))


def test_lite_nano_variant_runs_and_is_inferred_from_its_weights():
    from stark_model.checkpoint import infer_variant

    model = load_model(variant='lite_nano', allow_untrained=True)
    assert model.network.backbone.num_channels == 48
    assert infer_variant(model.network.state_dict()) == 'lite_nano'
    with torch.no_grad():
        tokens = model.network.encode(torch.zeros(1, 3, 256, 256), torch.zeros(1, 256, 256, dtype=torch.bool))
    assert tokens.features.shape == (256, 1, model.variant.model.hidden_dim)


def test_training_starts_the_backbone_from_the_onnx_file_and_says_so_when_it_is_missing(tmp_path):
    from types import SimpleNamespace

    from stark_model.config import ConfigError
    from stark_training.trainer import initialise_backbone

    network = load_model(variant='lite_nano', allow_untrained=True).network
    missing = SimpleNamespace(source='run.yaml', model=SimpleNamespace(pretrained_backbone=None, from_scratch=False))
    with pytest.raises(ConfigError, match='nanotrack_backbone_sim.onnx'):
        initialise_backbone(network, missing)
    named = SimpleNamespace(source='run.yaml', model=SimpleNamespace(pretrained_backbone=str(_require(BACKBONE_ONNX)),
                                                                      from_scratch=False))
    initialise_backbone(network, named)
    reference = NanoTrackBackbone()
    load_onnx_weights(reference, BACKBONE_ONNX)
    body = network.backbone[0].body.state_dict()
    assert all(torch.equal(value, body[key]) for key, value in reference.state_dict().items())
