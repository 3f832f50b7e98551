"""EfficientNet-Lite0: the ImageNet weights load into our modules and classify a real photo; the
stride-16 body wired as a STARK backbone."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stark_model import load_model
from stark_model.checkpoint import CheckpointError, infer_variant
from stark_model.backbones.efficientnet_lite import EfficientNetLite0, imagenet_weights_path, load_imagenet_weights
from stark_model.preprocessing import IMAGENET_MEAN, IMAGENET_STD

BABOON = Path('/usr/share/doc/opencv-doc/examples/data/baboon.jpg')
IMAGENET_BABOON = 372


def _require(path_check: bool, reason: str) -> None:
    if not path_check:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{reason}, and CI=true requires it (make setup installs it)')
        pytest.skip(reason)


@pytest.fixture(scope='module')
def weights_path() -> Path:
    try:
        path = imagenet_weights_path()
    except FileNotFoundError as error:
        _require(False, str(error))
    return path


def test_imagenet_classifier_puts_the_baboon_photo_in_its_class(weights_path):
    _require(BABOON.is_file(), f'{BABOON} is absent (Debian package opencv-doc)')
    classifier = EfficientNetLite0(classifier=True)
    load_imagenet_weights(classifier, weights_path)
    image = cv2.cvtColor(cv2.imread(str(BABOON)), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    normalised = (image - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    with torch.no_grad():
        probabilities = classifier.eval()(torch.from_numpy(normalised).permute(2, 0, 1)[None]).softmax(-1)[0]
    top5 = probabilities.topk(5).indices.tolist()
    assert IMAGENET_BABOON in top5, f'top-5 classes {top5}'
    assert probabilities[IMAGENET_BABOON] > 0.5  # measured 0.80


def test_stride16_body_loads_every_weight_it_has_and_gives_112_channels(weights_path):
    body = EfficientNetLite0()
    load_imagenet_weights(body, weights_path)
    features = body(torch.zeros(1, 3, 256, 256))
    assert features.shape == (1, 112, 16, 16)
    assert len(body._blocks) == 11 and not hasattr(body, '_fc')
    assert not any(p.requires_grad is False for p in body.parameters())  # frozen BN holds buffers only
    assert all(name.startswith(('_conv_stem', '_blocks')) for name, _ in body.named_parameters())


def test_weights_of_another_network_are_refused_with_the_keys_named(tmp_path):
    bad = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(CheckpointError, match='conv1.weight'):
        load_imagenet_weights(EfficientNetLite0(), bad)


def test_lite_effnet_variant_builds_freezes_early_layers_and_is_inferred_from_its_weights():
    model = load_model(variant='lite_effnet', allow_untrained=True)
    network = model.network
    network.backbone.freeze_stem_and_layer1()
    body = network.backbone[0].body
    assert not body._conv_stem.weight.requires_grad and not body._blocks[2]._project_conv.weight.requires_grad
    assert body._blocks[3]._project_conv.weight.requires_grad
    assert infer_variant(network.state_dict()) == 'lite_effnet'
    templates = [(torch.zeros(1, 3, 128, 128), torch.zeros(1, 128, 128, dtype=torch.bool))] * 2
    with torch.no_grad():
        output = network.eval()(templates=templates,
                                search=(torch.zeros(1, 3, 256, 256), torch.zeros(1, 256, 256, dtype=torch.bool)))
    assert output.boxes.shape == (1, 1, 4) and output.logits.shape == (1, 1, 1)
