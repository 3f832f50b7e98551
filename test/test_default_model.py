"""The default model shipped in the package: intact, loaded when no checkpoint is named, and
tracking synthetic sequences (exact ground truth) made of photos it was not trained on."""
import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stark_model import CheckpointError, create_tracker, load_model
from stark_model import factory
from stark_model.box_ops import iou_xywh
from stark_training.default_model_eval import EVAL_PHOTO_SEED, EVAL_PHOTOS
from stark_training.photo_sequences import PhotoSequences

MAX_SIZE_MB = 25
PHOTOS = Path('/usr/share/doc/opencv-doc/examples/data')
# Mean IoU over the 4 x 39 tracked frames of the test below: measured 0.634 (per sequence 0.71,
# 0.64, 0.69, 0.50; an untrained network scores near 0).
MIN_MEAN_IOU = 0.55


def test_default_model_is_shipped_small_and_matches_its_checksum():
    path = factory.default_checkpoint()
    assert path.stat().st_size <= MAX_SIZE_MB * 1024 * 1024
    sums = (path.parent / 'SHA256SUMS').read_text().split()
    assert sums == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]


def test_load_model_without_a_checkpoint_gives_the_default_model():
    model = load_model()
    assert model.variant.variant == 'lite_nano' and model.checkpoint.kind == 'stark_ros'
    assert model.checkpoint.path == factory.default_checkpoint()


def test_a_damaged_default_model_is_refused(tmp_path, monkeypatch):
    shipped = factory.default_checkpoint()
    damaged = tmp_path / shipped.name
    damaged.write_bytes(shipped.read_bytes()[:-10] + b'0123456789')
    (tmp_path / 'SHA256SUMS').write_text((shipped.parent / 'SHA256SUMS').read_text())
    monkeypatch.setattr(factory, 'DEFAULT_MODEL_DIR', tmp_path)
    with pytest.raises(CheckpointError, match='does not match'):
        load_model()


@pytest.mark.slow
def test_default_model_tracks_synthetic_sequences_of_held_out_photos():
    if not PHOTOS.is_dir():
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{PHOTOS} is missing, and CI=true requires it (make setup installs opencv-doc)')
        pytest.skip(f'{PHOTOS} is absent (Debian package opencv-doc)')
    torch.set_num_threads(1)
    sequences = PhotoSequences([PHOTOS / name for name in EVAL_PHOTOS], 4, 40, seed=EVAL_PHOTO_SEED, size=(640, 480))
    tracker = create_tracker(load_model())
    ious = []
    for index in range(len(sequences)):
        sequence = sequences[index]
        tracker.clear()
        tracker.initialize(sequence.image(0), sequence.boxes[0], 'target')
        ious += [iou_xywh(tracker.track(sequence.image(k))['target'].box, sequence.boxes[k])
                 for k in range(1, len(sequence))]
    assert np.mean(ious) >= MIN_MEAN_IOU, f'mean IoU {np.mean(ious):.3f}'


def test_ship_model_writes_the_weights_with_the_current_variant_and_a_matching_checksum(tmp_path):
    from stark_model import save_checkpoint
    from stark_model.config import load_variant
    from stark_training.ship_model import ship

    torch.manual_seed(0)
    trained = load_model(variant='lite_effnet', allow_untrained=True)
    old_variant = dataclasses.replace(trained.variant, tracker=dataclasses.replace(trained.variant.tracker,
                                                                                   update_threshold=0.9))
    source = save_checkpoint(tmp_path / 'STARKST_ep0003.pth.tar', trained.network, old_variant, epoch=3)
    shipped = ship(source, 'lite_effnet', tmp_path / 'package', 'model.pth.tar')
    assert (tmp_path / 'package' / 'SHA256SUMS').read_text().split() == \
        [hashlib.sha256(shipped.read_bytes()).hexdigest(), 'model.pth.tar']
    loaded = load_model(shipped)
    assert loaded.variant == load_variant('lite_effnet')  # the YAML's settings, not the old file's
    assert loaded.checkpoint.extra['shipped_from']['file'] == source.name and loaded.checkpoint.epoch == 3
    reference = trained.network.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in loaded.network.state_dict().items())
    other = save_checkpoint(tmp_path / 'lite.pth.tar', load_model(variant='lite', allow_untrained=True).network,
                            load_variant('lite'))
    with pytest.raises(CheckpointError):
        ship(other, 'lite_effnet', tmp_path / 'package', 'model.pth.tar')
