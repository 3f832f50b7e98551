"""TrackingPairDataset and its processing: shapes, masks, box geometry through jitter and flip,
frame-sampling rules, stage-2 labels and determinism in (seed, epoch, index)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import shared_data
from hypothesis import event, given, settings, strategies as st

from stark_model.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from stark_training.datasets import SequenceDataset, open_dataset
from stark_training.datasets.synthetic import InMemorySequence, SyntheticDataset
from stark_training.processing import ProcessingSettings, feature_mask, joint_augment, process_group
from stark_training.sampling import TrackingPairDataset, causal_ids, nearby_box, trident_ids

SMALL = dict(template_size=64, search_size=128)
PADDING_VALUE = [(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]


@pytest.fixture(scope='module')
def synthetic():
    return SyntheticDataset(num_sequences=3, num_frames=24, width=160, height=120, seed=3, target_size=30)


def pairs(datasets, stage=1, templates=1, seed=0, **overrides):
    return TrackingPairDataset(datasets, [1.0] * len(datasets), 50, ProcessingSettings(**{**SMALL, **overrides}),
                               stage=stage, num_templates=templates, seed=seed)


@pytest.mark.parametrize('stage,templates', [(1, 1), (1, 2), (2, 2)])
def test_sampling_items_have_the_interface_shapes_and_dtypes(synthetic, stage, templates):
    item = pairs([synthetic], stage, templates)[7]
    assert item['template_images'].shape == (templates, 3, 64, 64)
    assert item['template_masks'].shape == (templates, 64, 64)
    assert item['search_images'].shape == (3, 128, 128) and item['search_masks'].shape == (128, 128)
    assert item['search_box'].shape == (4,) and item['label'].shape == ()
    assert item['template_images'].dtype == item['search_images'].dtype == torch.float32
    assert item['template_masks'].dtype == item['search_masks'].dtype == torch.bool
    assert item['search_box'].dtype == item['label'].dtype == torch.float32
    batch = torch.utils.data.default_collate([item, pairs([synthetic], stage, templates)[8]])
    assert batch['search_images'].shape == (2, 3, 128, 128)


@settings(max_examples=15, deadline=None)
@given(index=st.integers(0, 10_000), epoch=st.integers(0, 1000), seed=st.integers(0, 2**31))
def test_sampling_is_a_pure_function_of_seed_epoch_index(synthetic, index, epoch, seed):
    first, second = pairs([synthetic], seed=seed), pairs([synthetic], seed=seed)
    first.set_epoch(epoch)
    second[index + 1]  # other items drawn in between change nothing
    second.set_epoch(epoch)
    a, b = first[index], second[index]
    assert all(torch.equal(a[k], b[k]) for k in a)
    first.set_epoch(epoch + 1)
    assert not torch.equal(first[index]['search_images'], a['search_images'])


@settings(max_examples=12, deadline=None)
@given(index=st.integers(0, 10_000), stage=st.sampled_from([1, 2]), templates=st.sampled_from([1, 2]))
def test_sampling_masks_are_never_all_padding(synthetic, index, stage, templates):
    item = pairs([synthetic], stage, templates)[index]
    for masks in (item['template_masks'], item['search_masks'][None]):
        for mask in masks:
            assert not mask.all() and not feature_mask(mask.numpy(), 16).all()
    assert item['label'] == 1.0 or stage == 2
    assert torch.isfinite(item['search_box']).all()


@settings(max_examples=40, deadline=None)
@given(x=st.integers(4, 150), y=st.integers(4, 100), w=st.integers(6, 60), h=st.integers(6, 60),
       centre_jitter=st.floats(0, 4.5), scale_jitter=st.floats(0, 0.5), brightness=st.floats(0, 0.2),
       flip=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 1000))
def test_processing_box_matches_the_target_pixels_through_jitter_and_flip(
        x, y, w, h, centre_jitter, scale_jitter, brightness, flip, seed):
    """A white target on black: the crop's bright pixels span the box the processing reports."""
    width, height = 220, 170
    w, h = min(w, width - 2 - x), min(h, height - 2 - y)
    image = np.zeros((height, width, 3), np.uint8)
    image[y:y + h, x:x + w] = 255
    cfg = ProcessingSettings(search_size=96, search_center_jitter=centre_jitter, search_scale_jitter=scale_jitter,
                             brightness_jitter=brightness, crop_flip_prob=flip)
    group = process_group([image], [np.array([x, y, w, h], float)], 'search', cfg, np.random.default_rng(seed))
    if group is None:  # rejected: the jittered crop is (nearly) all padding
        return
    grey = group.images[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    rows, cols = np.nonzero(grey > 0.35)
    bx, by, bw, bh = group.boxes[0]
    visible = (max(bx, 0), max(by, 0), min(bx + bw, 96), min(by + bh, 96))
    if visible[2] - visible[0] < 2 or visible[3] - visible[1] < 2:
        return  # target (nearly) outside the crop: nothing to compare
    tolerance = 1.5  # bilinear resampling blurs an edge by up to about one output pixel
    assert rows.size, 'the target should be in the crop'
    assert abs(cols.min() - visible[0]) <= tolerance and abs(cols.max() + 1 - visible[2]) <= tolerance
    assert abs(rows.min() - visible[1]) <= tolerance and abs(rows.max() + 1 - visible[3]) <= tolerance
    event('compared')


@settings(max_examples=30, deadline=None)
@given(x=st.integers(-30, 150), y=st.integers(-30, 100), w=st.integers(4, 60), h=st.integers(4, 60),
       flip=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 1000))
def test_processing_mask_marks_exactly_the_padded_pixels(x, y, w, h, flip, seed):
    """On a uniform image, unmasked pixels are pure image and anything darker is masked."""
    image = np.full((120, 160, 3), 200, np.uint8)
    cfg = ProcessingSettings(search_size=96, brightness_jitter=0.0, crop_flip_prob=flip)
    group = process_group([image], [np.array([x, y, w, h], float)], 'search', cfg, np.random.default_rng(seed))
    if group is None:
        return
    value = np.rint((group.images[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255)
    mask = group.masks[0]
    assert (value[~mask] == 200).all()
    assert mask[value < 199.5].all()
    event('padded' if mask.any() else 'inside')


@settings(max_examples=20, deadline=None)
@given(x=st.integers(0, 100), y=st.integers(0, 60), w=st.integers(1, 50), h=st.integers(1, 50))
def test_processing_joint_flip_and_grayscale_keep_boxes_on_the_target(x, y, w, h):
    image = np.zeros((120, 160, 3), np.uint8)
    image[y:y + h, x:x + w] = (250, 100, 30)
    cfg = ProcessingSettings(joint_flip_prob=1.0, grayscale_prob=1.0)
    (out,), (box,) = joint_augment([image], [np.array([x, y, w, h], float)], cfg, np.random.default_rng(0))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    rows, cols = np.nonzero(out[..., 0])
    extent = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()]
    np.testing.assert_array_equal(box, extent)


class WhiteBoxVideo(SequenceDataset):
    """A white rectangle moving over black, 24 frames."""

    name = 'white-box'

    def __init__(self):
        super().__init__()
        self._names = ['white']

    def _load(self, index):
        images, boxes = [], []
        for t in range(24):
            image = np.zeros((150, 200, 3), np.uint8)
            x, y, w, h = 20 + 4 * t, 30 + 2 * t, 40 + t, 30
            image[y:y + h, x:x + w] = 255
            images.append(image)
            boxes.append((x, y, w, h))
        return InMemorySequence('white', images, np.asarray(boxes, float))


@settings(max_examples=15, deadline=None)
@given(index=st.integers(0, 10_000), templates=st.sampled_from([1, 2]))
def test_sampling_search_box_covers_the_target_in_the_search_crop(index, templates):
    """End to end, with every random augmentation on: the bright pixels span search_box."""
    item = TrackingPairDataset([WhiteBoxVideo()], [1], 100, ProcessingSettings(**SMALL), num_templates=templates,
                               seed=2)[index]
    grey = item['search_images'][0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    rows, cols = np.nonzero(grey > 0.35)
    x1, y1, x2, y2 = (item['search_box'].numpy() * 128).clip(0, 128)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    assert abs(cols.min() - x1) <= 1.5 and abs(cols.max() + 1 - x2) <= 1.5
    assert abs(rows.min() - y1) <= 1.5 and abs(rows.max() + 1 - y2) <= 1.5
    event('compared')


def test_processing_rejects_crops_that_are_all_padding():
    image = np.full((60, 80, 3), 90, np.uint8)
    cfg = ProcessingSettings(search_center_jitter=0, search_scale_jitter=0)
    far_away = np.array([500.0, 500.0, 10.0, 10.0])
    assert process_group([image], [far_away], 'search', cfg, np.random.default_rng(0)) is None
    corner = np.array([-40.0, -40.0, 41.0, 41.0])  # crop mostly padding, but not at feature level
    group = process_group([image], [corner], 'search', cfg, np.random.default_rng(0))
    assert group is None or not feature_mask(group.masks[0], 16).all()


@settings(max_examples=30, deadline=None)
@given(mask=st.lists(st.booleans(), min_size=64, max_size=64), size=st.sampled_from([32, 48, 64]))
def test_processing_feature_mask_is_torch_nearest_interpolation(mask, size):
    rng = np.random.default_rng(sum(mask))
    full = rng.random((size, size)) < (sum(mask) / 64)
    expected = F.interpolate(torch.from_numpy(full)[None, None].float(), size=size // 16).bool()[0, 0]
    assert np.array_equal(feature_mask(full, 16), expected.numpy())


@settings(max_examples=60, deadline=None)
@given(visible=st.lists(st.booleans(), min_size=2, max_size=60), gap=st.integers(1, 30), seed=st.integers(0, 99))
def test_sampling_causal_search_follows_the_template_within_the_gap(visible, gap, seed):
    visible = np.asarray(visible)
    ids = causal_ids(visible, 1, gap, np.random.default_rng(seed))
    if ids is None:
        return
    (template,), search = ids
    assert visible[template] and visible[search]
    # The window widens by 5 per failed try, as the original; first try is [t+1, t+gap).
    assert template < search < template + gap + 5 * 100


@settings(max_examples=60, deadline=None)
@given(visible=st.lists(st.booleans(), min_size=1, max_size=60), gap=st.integers(1, 30),
       pro=st.booleans(), seed=st.integers(0, 99))
def test_sampling_trident_dynamic_template_lies_on_the_first_templates_side(visible, gap, pro, seed):
    visible = np.asarray(visible)
    ids = trident_ids(visible, gap, np.random.default_rng(seed), allow_invisible=pro)
    if ids is None:
        assert not visible.any() or not pro
        return
    (first, dynamic), search = ids
    assert visible[first] and visible[search] and (pro or visible[dynamic])
    if first >= search:
        assert search <= dynamic < search + gap
    else:
        assert search - gap <= dynamic < search


class RecordingDataset(SequenceDataset):
    """One 24-frame video, target invisible in frames 5 and 7; remembers which frames were read."""

    name = 'recording'

    def __init__(self):
        super().__init__()
        self.read: list[int] = []
        self._names = ['video']
        boxes = np.tile([40.0, 30.0, 30.0, 24.0], (24, 1))
        boxes[[5, 7]] = np.nan
        images = [np.full((100, 120, 3), 10 * t, np.uint8) for t in range(24)]
        self.sequence = InMemorySequence('video', images, boxes)
        self.sequence.image = self._image

    def _image(self, index):
        self.read.append(index)
        return self.sequence.images[index]

    def _load(self, index):
        return self.sequence


def test_sampling_stage2_negatives_use_invisible_frames_with_label_zero():
    dataset = RecordingDataset()
    negatives = TrackingPairDataset([dataset], [1], 20, ProcessingSettings(pos_prob=0.0, **SMALL), stage=2, seed=1)
    for index in range(6):
        dataset.read.clear()
        item = negatives[index]
        assert item['label'] == 0.0 and dataset.read[-1] in (5, 7) and torch.isfinite(item['search_box']).all()
    positives = TrackingPairDataset([dataset], [1], 20, ProcessingSettings(pos_prob=1.0, **SMALL), stage=2, seed=1)
    for index in range(4):
        dataset.read.clear()
        assert positives[index]['label'] == 1.0 and dataset.read[-1] not in (5, 7)


def test_sampling_stage2_mixes_labels_and_negatives_from_other_sequences(synthetic):
    mixed = pairs([synthetic], stage=2, templates=2)  # every synthetic frame is visible
    labels = [float(mixed[i]['label']) for i in range(16)]
    assert 0.0 in labels and 1.0 in labels


def test_sampling_ratios_choose_datasets(synthetic):
    unused = RecordingDataset()
    data = TrackingPairDataset([synthetic, unused], [1, 0], 10, ProcessingSettings(**SMALL), seed=0)
    for index in range(5):
        data[index]
    assert unused.read == []
    with pytest.raises(ValueError, match='2 datasets but 1 ratios'):
        TrackingPairDataset([synthetic, unused], [1], 10)


def test_processing_settings_defaults_and_yaml_validation():
    defaults = ProcessingSettings()
    assert (defaults.template_factor, defaults.template_size, defaults.search_factor, defaults.search_size) == \
        (2.0, 128, 5.0, 320)
    assert (defaults.search_center_jitter, defaults.search_scale_jitter, defaults.grayscale_prob,
            defaults.brightness_jitter, defaults.max_gap, defaults.pos_prob) == (4.5, 0.5, 0.05, 0.2, 200, 0.5)
    assert ProcessingSettings.from_mapping({'search_size': 256}).search_size == 256
    with pytest.raises(ValueError, match="data: unknown key 'search_sise'"):
        ProcessingSettings.from_mapping({'search_sise': 256}, where='data')
    with pytest.raises(ValueError, match='pos_prob: 1.5 is not a probability'):
        ProcessingSettings.from_mapping({'pos_prob': 1.5})
    with pytest.raises(ValueError, match="template_size: '128' is not int"):
        ProcessingSettings.from_mapping({'template_size': '128'})


def test_sampling_on_shared_coco128_and_davis2016():
    coco = open_dataset('coco', shared_data('coco128'), split='val2017')
    davis = open_dataset('davis', shared_data('davis2016'), resolution='288p', year='2016', imageset='val',
                         videos=['blackswan', 'camel'])
    data = TrackingPairDataset([coco, davis], [1, 1], 8, ProcessingSettings(), stage=2, num_templates=2, seed=5)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    assert batch['template_images'].shape == (4, 2, 3, 128, 128)
    assert batch['search_images'].shape == (4, 3, 320, 320)
    assert torch.isfinite(batch['search_images']).all() and torch.isfinite(batch['search_box']).all()


@pytest.mark.slow
def test_sampling_dataloader_workers_give_the_in_process_items(synthetic):
    data = pairs([synthetic], seed=11)
    data.set_epoch(3)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    expected = torch.utils.data.default_collate([data[i] for i in range(4)])
    assert all(torch.equal(batch[k], expected[k]) for k in expected)


class RedSquareImages(SequenceDataset):
    """Still images (is_video False): a red target on grey, placed differently in each."""

    name = 'red-squares'
    is_video = False

    def __init__(self, count: int = 4):
        super().__init__()
        self._names = [f'image-{i}' for i in range(count)]

    def _load(self, index):
        image = np.full((300, 400, 3), 120, np.uint8)
        box = np.array([40.0 + 60 * index, 50.0 + 30 * index, 30.0, 24.0])
        x, y, w, h = box.astype(int)
        image[y:y + h, x:x + w] = (255, 0, 0)
        return InMemorySequence(self._names[index], [image], box[None])


def _red_pixels(item) -> int:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (item['search_images'] * std + mean) * 255
    return int(((rgb[0] > 200) & (rgb[1] < 60) & (rgb[2] < 60)).sum())


def test_hard_negatives_centre_the_search_crop_off_the_target_in_its_own_frame():
    plain = dict(SMALL, grayscale_prob=0.0, brightness_jitter=0.0, search_factor=4.0)
    hard = TrackingPairDataset([RedSquareImages()], [1], 12, ProcessingSettings(
        pos_prob=0.0, hard_negative_prob=1.0, **plain), stage=2, seed=5)
    positives = TrackingPairDataset([RedSquareImages()], [1], 12, ProcessingSettings(pos_prob=1.0, **plain),
                                    stage=2, seed=5)
    for index in range(12):
        item = hard[index]
        assert item['label'] == 0.0
        assert _red_pixels(item) == 0  # the target is out of the crop: something else is at its centre
        assert _red_pixels(positives[index]) > 50


@given(x=st.floats(0, 380), y=st.floats(0, 280), w=st.floats(1, 200), h=st.floats(1, 200),
       factor=st.floats(1.5, 6.0), seed=st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_nearby_box_leaves_the_target_out_of_its_crop_and_keeps_its_centre_in_the_image(x, y, w, h, factor, seed):
    moved = nearby_box(np.array([x, y, w, h]), 400, 300, factor, np.random.default_rng(seed))
    if moved is None:
        event('no place found')
        return
    crop = factor * np.sqrt(w * h)
    cx, cy = moved[0] + w / 2, moved[1] + h / 2
    assert 0 <= cx < 400 and 0 <= cy < 300 and moved[2] == w and moved[3] == h
    outside_x = x >= cx + crop / 2 or x + w <= cx - crop / 2
    outside_y = y >= cy + crop / 2 or y + h <= cy - crop / 2
    assert outside_x or outside_y
