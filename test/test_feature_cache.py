"""Training from cached backbone features (data.feature_cache): chunks built once and reused, a
frozen backbone, exact resume, refused foreign files; the default model's shipped configs."""
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from stark_model import read_checkpoint
from stark_model.checkpoint import CheckpointError
from stark_model.config import ConfigError
from stark_model.network import build_network
from stark_training import feature_cache
from stark_training.config import load_training_config
from stark_training.datasets import open_dataset
from stark_training.default_model_eval import EVAL_PHOTOS, HELD_OUT_DAVIS
from stark_training.photo_sequences import PhotoSequences
from stark_training.trainer import Trainer, build_pair_dataset

from hostile_files import bomb_goes_off, write_torchscript_bomb
from training_fixtures import REPO_ROOT, training_config, write_config

STAGE1 = REPO_ROOT / 'config' / 'training' / 'default_model_st1.yaml'
STAGE2 = REPO_ROOT / 'config' / 'training' / 'default_model_st2.yaml'


def _photos(folder: Path, count: int = 3) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f'photo{index}.png'), cv2.resize(coarse, (320, 240), interpolation=cv2.INTER_CUBIC))
        names.append(f'photo{index}.png')
    return names


def _cached_config(folder: Path, epochs: int = 3, chunks: int = 2, **train) -> Path:
    """The tiny trainer config on synthetic videos, trained from cached features."""
    folder.mkdir(parents=True, exist_ok=True)
    data = training_config(folder, dropout=0.0, samples=8, epoch=epochs, lr_drop_epoch=2, batch_size=4, **train)
    data['data']['feature_cache'] = {'chunks': chunks}
    return write_config(folder, data)


def _train(config: Path, output: Path, resume: bool = False):
    return Trainer(load_training_config(config), output, device='cpu', resume=resume, tensorboard=False).run()


def _dataset_entries(config: Path) -> dict[str, dict]:
    return {entry['name']: entry for entry in yaml.safe_load(config.read_text())['data']['train']['datasets']}


def test_shipped_configs_chain_together_and_keep_the_evaluation_material_out():
    first, second = (load_training_config(path) for path in (STAGE1, STAGE2))
    assert (first.train.stage, second.train.stage) == (1, 2)
    assert {config.variant().variant for config in (first, second)} == {'lite_nano'}
    assert all(config.data.feature_cache.chunks > 0 for config in (first, second))
    assert Path(first.model.pretrained_backbone).name == 'nanotrack_backbone_sim.onnx'
    assert Path(second.model.stage1_checkpoint).parts[-3:] == \
        ('st1', 'checkpoints', f'STARKST_ep{first.train.epoch:04d}.pth.tar')
    for config in (STAGE1, STAGE2):
        entries = _dataset_entries(config)
        assert not set(HELD_OUT_DAVIS) & set(entries['davis']['options']['videos'])
        assert len(entries['davis']['options']['videos']) + len(HELD_OUT_DAVIS) == 20
        assert not set(EVAL_PHOTOS) & set(entries['photos']['options']['photos'])
        assert entries['photos']['options']['distractors'] > 0
        # Validation footage (otb_val) and benchmark sequences are never training material.
        assert not any('otb' in str(entry['root']).lower() for entry in entries.values())
    assert second.data.processing['hard_negative_prob'] > 0


@pytest.mark.parametrize('section, values, message', [
    ('data', {'feature_cache': {'chunks': 2, 'runtime': 'tensorflow'}}, 'data.feature_cache.runtime'),
    ('data', {'feature_cache': {'chunks': -1}}, 'data.feature_cache.chunks'),
    ('data', {'feature_cache': {'chunk': 2}}, 'unknown key data.feature_cache.chunk'),
    ('train', {'trainable': ['backbone.0.body']}, 'train.trainable names the backbone'),
    ('train', {'stage2_box_weight': -1.0}, 'train.stage2_box_weight'),
])
def test_feature_cache_settings_are_checked_by_name(tmp_path, section, values, message):
    data = yaml.safe_load(_cached_config(tmp_path).read_text())
    for key, value in values.items():
        data[section][key] = value if key != 'feature_cache' else {**data[section].get(key, {}), **value}
    with pytest.raises(ConfigError, match=message):
        load_training_config(write_config(tmp_path, data, 'bad.yaml'))


def test_photos_reader_makes_deterministic_videos_with_boxes_inside_the_frames(tmp_path):
    names = _photos(tmp_path)
    first = open_dataset('photos', tmp_path, photos=names, sequences=2, frames=10, seed=3)
    again = PhotoSequences([tmp_path / name for name in names], 2, 10, seed=3)
    sequence = first[1]
    assert np.array_equal(sequence.boxes, again[1].boxes) and np.array_equal(sequence.image(4), again[1].image(4))
    height, width = sequence.image(0).shape[:2]
    boxes = sequence.boxes
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= width).all()
    assert (boxes[:, 1] + boxes[:, 3] <= height).all() and sequence.visible.all()
    assert len(set(sequence.attributes['photos'])) == 2  # target and background from different photos


def test_distractors_move_beneath_a_target_that_stays_as_it_was(tmp_path):
    names = _photos(tmp_path, 4)
    plain = open_dataset('photos', tmp_path, photos=names, sequences=2, frames=10, seed=3)[1]
    busy = open_dataset('photos', tmp_path, photos=names, sequences=2, frames=10, seed=3, distractors=3)[1]
    assert np.array_equal(plain.boxes, busy.boxes)
    for index in (0, 9):
        x, y, w, h = (int(v) for v in plain.boxes[index])
        assert np.array_equal(plain.image(index)[y:y + h, x:x + w], busy.image(index)[y:y + h, x:x + w])
        assert (plain.image(index) != busy.image(index)).any(axis=-1).mean() > 0.02  # the distractors


def test_stage1_can_start_from_a_checkpoint(tmp_path):
    torch.manual_seed(5)
    config = load_training_config(_cached_config(tmp_path / 'init', epochs=1, chunks=1))
    start = build_network(config.variant().model, config.variant().tracker.search_size)
    from stark_model import save_checkpoint
    path = save_checkpoint(tmp_path / 'start.pth.tar', start, config.variant())
    data = yaml.safe_load((tmp_path / 'init' / 'train.yaml').read_text())
    data['model'] = {'variant': data['model']['variant'], 'init_checkpoint': str(path)}
    result = _train(write_config(tmp_path / 'init', data, 'fine_tune.yaml'), tmp_path / 'run')
    trained = read_checkpoint(result.epoch_checkpoint).state_dict
    reference = start.state_dict()
    assert all(torch.equal(trained[key], reference[key]) for key in reference if key.startswith('backbone.'))
    data['model']['from_scratch'] = True
    with pytest.raises(ConfigError, match='model.init_checkpoint holds the backbone weights'):
        load_training_config(write_config(tmp_path / 'init', data, 'both.yaml'))


def test_onnxruntime_and_pytorch_compute_the_same_backbone_features(tmp_path):
    config = load_training_config(_cached_config(tmp_path))
    torch.manual_seed(0)
    network = build_network(config.variant().model, config.variant().tracker.search_size)
    images, masks = torch.randn(3, 3, 128, 128), torch.zeros(3, 128, 128, dtype=torch.bool)
    masks[:, :, 100:] = True
    eager, eager_masks = feature_cache.BackboneRunner(network, 'pytorch')(images, masks)
    ort, ort_masks = feature_cache.BackboneRunner(network, 'onnxruntime')(images, masks)
    assert eager.shape == (3, network.backbone.num_channels, 8, 8)
    assert torch.allclose(eager, ort, atol=1e-4, rtol=1e-4)
    assert torch.equal(eager_masks, ort_masks) and eager_masks[:, :, -1].all() and not eager_masks[:, :, 0].any()


def test_cached_pairs_hold_the_backbone_features_of_the_sampled_pairs(tmp_path):
    config = load_training_config(_cached_config(tmp_path))
    torch.manual_seed(0)
    network = build_network(config.variant().model, config.variant().tracker.search_size).eval()
    pairs = build_pair_dataset(config)
    cached = feature_cache.CachedPairs(pairs, feature_cache.BackboneRunner(network, 'pytorch'), tmp_path / 'cache',
                                       chunks=2, key='k', progress=lambda _: None)
    cached.set_epoch(3)  # epoch 3 serves the pairs of epoch 1
    pairs.set_epoch(1)
    item, stored = pairs[5], cached[5]
    with torch.no_grad():
        search, _ = network.backbone[0](item['search_images'][None], item['search_masks'][None])
        template, _ = network.backbone[0](item['template_images'][1:2], item['template_masks'][1:2])
    assert torch.allclose(stored['search_features'].float(), search[0], atol=2e-2, rtol=1e-2)  # stored as fp16
    assert torch.allclose(stored['template_features'][1].float(), template[0], atol=2e-2, rtol=1e-2)
    assert torch.equal(stored['search_box'], item['search_box']) and stored['label'] == item['label']
    assert sorted(p.name for p in (tmp_path / 'cache').iterdir()) == ['train-k-0001.pt']


@pytest.mark.slow
def test_cached_training_reuses_chunks_keeps_the_backbone_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    unbroken = _train(_cached_config(tmp_path / 'a', epochs=3), tmp_path / 'a' / 'run')
    chunks = sorted((tmp_path / 'a' / 'run' / 'feature_cache').iterdir())
    assert [p.name[-7:] for p in chunks] == ['0000.pt', '0001.pt']  # epoch 2 reused chunk 0
    # The same run stopped after epoch 2 and resumed for the third gives the same weights.
    _train(_cached_config(tmp_path / 'b', epochs=2), tmp_path / 'b' / 'run')
    resumed = _train(_cached_config(tmp_path / 'b', epochs=3), tmp_path / 'b' / 'run', resume=True)
    a = read_checkpoint(unbroken.epoch_checkpoint).state_dict
    b = read_checkpoint(resumed.epoch_checkpoint).state_dict
    assert all(torch.equal(a[key], b[key]) for key in a)
    config = load_training_config(tmp_path / 'a' / 'train.yaml')
    torch.manual_seed(config.train.seed)  # the trainer's initial weights
    start = build_network(config.variant().model, config.variant().tracker.search_size).state_dict()
    assert all(torch.equal(a[key], start[key]) for key in a if key.startswith('backbone.'))
    assert not torch.equal(a['transformer.encoder.layers.0.linear1.weight'],
                           start['transformer.encoder.layers.0.linear1.weight'])


@pytest.mark.slow
def test_stage2_trains_only_the_named_modules_with_the_box_loss_on_positives(tmp_path):
    torch.set_num_threads(1)
    stage1 = _train(_cached_config(tmp_path / 'st1', epochs=1, chunks=1), tmp_path / 'st1' / 'run')
    config = yaml.safe_load(_cached_config(tmp_path / 'st2', epochs=1, chunks=1, stage=2,
                                           trainable=['cls_head', 'transformer.decoder'],
                                           stage2_box_weight=1.0).read_text())
    config['model'].update(stage1_checkpoint=str(stage1.epoch_checkpoint), from_scratch=False)
    result = _train(write_config(tmp_path / 'st2', config), tmp_path / 'st2' / 'run')
    assert {'bce', 'box_loss', 'iou'} <= set(result.history[-1])
    before = read_checkpoint(stage1.epoch_checkpoint).state_dict
    after = read_checkpoint(result.epoch_checkpoint).state_dict
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith(('cls_head.', 'transformer.decoder.')) for key in changed)


def test_a_hostile_or_foreign_chunk_is_refused_and_never_runs(tmp_path):
    config = load_training_config(_cached_config(tmp_path))
    network = build_network(config.variant().model, config.variant().tracker.search_size)
    cached = feature_cache.CachedPairs(build_pair_dataset(config), feature_cache.BackboneRunner(network, 'pytorch'),
                                       tmp_path / 'cache', chunks=1, key='k', progress=lambda _: None)
    (tmp_path / 'cache').mkdir()
    marker = tmp_path / 'exploded'
    write_torchscript_bomb(cached.chunk_path(0), marker)
    with pytest.raises(CheckpointError):
        cached.set_epoch(0)
    assert not marker.exists()
    assert bomb_goes_off(cached.chunk_path(0), marker)  # the file is a real bomb
    torch.save({'search_features': torch.zeros(1)}, cached.chunk_path(0))
    with pytest.raises(CheckpointError, match='not a feature chunk'):
        cached.set_epoch(0)


def test_a_changed_config_gets_new_chunks(tmp_path):
    config = load_training_config(_cached_config(tmp_path))
    network = build_network(config.variant().model, config.variant().tracker.search_size)
    content = dataclasses.asdict(config.data)
    key = feature_cache.cache_key(content, network.backbone)
    assert key == feature_cache.cache_key(content, network.backbone)
    assert key != feature_cache.cache_key({**content, 'seed': 1}, network.backbone)
    with torch.no_grad():
        next(network.backbone.parameters()).add_(1.0)
    assert key != feature_cache.cache_key(content, network.backbone)


def test_training_curves_read_the_runs_scalars_and_draw_them(tmp_path):
    pytest.importorskip('tensorboard', reason='needs the train extra (make setup)')
    from torch.utils.tensorboard import SummaryWriter

    from stark_training.training_curves import plot_training_curves, read_scalars, running_mean

    writer = SummaryWriter(str(tmp_path / 'st1' / 'tensorboard'))
    for step in range(1, 11):
        writer.add_scalar('train/loss', 3.0 / step, step)
        writer.add_scalar('train/iou', step / 10, step)
        writer.add_scalar('train/lr', 1e-4, step)
    writer.close()
    scalars = read_scalars(tmp_path / 'st1')
    assert set(scalars) == {'loss', 'iou'}
    assert scalars['iou'][0].tolist() == list(range(1, 11)) and scalars['iou'][1][-1] == pytest.approx(1.0)
    assert running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    png = plot_training_curves([tmp_path / 'st1'], tmp_path / 'curves.png')
    assert cv2.imread(str(png)).shape[:2] == (380, 520)
    with pytest.raises(FileNotFoundError, match='no TensorBoard scalars'):
        read_scalars(tmp_path / 'missing')
