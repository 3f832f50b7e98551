"""VOS reader on tiny DAVIS / YouTube-VOS layout fixtures (0/255 and palette masks, absent
objects, errors) and on the real ../shared/data/davis2016."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from dataset_fixtures import shared_data, write_frames, write_lines, write_palette_png

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.vos import VOS

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)] + [(i, i, i) for i in range(4, 256)]


def test_vos_reader_davis2016_binary_masks(tmp_path):
    """Single-object 0/255 masks; the object is absent from the middle frame."""
    frames = ['00000', '00002', '00004']
    write_frames(tmp_path / 'JPEGImages' / '480p' / 'cat', [f'{f}.jpg' for f in frames], 40, 30)
    for k, f in enumerate(frames):
        mask = np.zeros((30, 40), np.uint8)
        if k != 1:
            mask[5 + k:15, 10:30 + k] = 255
        path = tmp_path / 'Annotations' / '480p' / 'cat' / f'{f}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), mask)
    write_lines(tmp_path / 'ImageSets' / '2016' / 'val.txt', ['cat'])
    seq = open_dataset('davis', tmp_path, year='2016', imageset='val')[0]
    assert seq.name == 'cat' and len(seq) == 3
    np.testing.assert_array_equal(seq.boxes[0], [10, 5, 20, 10])
    np.testing.assert_array_equal(seq.boxes[2], [10, 7, 22, 8])
    assert np.isnan(seq.boxes[1]).all()
    np.testing.assert_array_equal(seq.visible, [True, False, True])
    assert seq.image(1).shape == (30, 40, 3)


def test_vos_reader_palette_masks_one_sequence_per_object(tmp_path):
    """YouTube-VOS layout (no resolution level): objects 1 and 3; object 3 leaves in frame 2;
    void pixels (255) are ignored."""
    for k in range(3):
        ids = np.zeros((20, 30), np.uint8)
        ids[2:6, 3:9] = 1
        if k != 2:
            ids[10:18, 20 + k:25] = 3
        ids[0, 0] = 255
        write_palette_png(tmp_path / 'Annotations' / 'vid1' / f'{5 * k:05d}.png', ids, PALETTE)
    write_frames(tmp_path / 'JPEGImages' / 'vid1', [f'{5 * k:05d}.jpg' for k in range(3)], 30, 20)
    dataset = VOS(tmp_path, resolution=None)
    assert dataset.sequence_names() == ['vid1_1', 'vid1_3']
    first, third = dataset[0], dataset[1]
    np.testing.assert_array_equal(first.boxes, [[3, 2, 6, 4]] * 3)
    np.testing.assert_array_equal(third.boxes[1], [21, 10, 4, 8])
    np.testing.assert_array_equal(third.visible, [True, True, False])
    assert third.attributes == {'video': 'vid1', 'object_id': 3}


def test_vos_reader_youtube_meta_json_lists_objects_lazily(tmp_path):
    ids = np.zeros((8, 8), np.uint8)
    ids[1:3, 1:4] = 2
    write_palette_png(tmp_path / 'Annotations' / 'v' / '00000.png', ids, PALETTE)
    write_frames(tmp_path / 'JPEGImages' / 'v', ['00000.jpg'], 8, 8)
    (tmp_path / 'meta.json').write_text(json.dumps({'videos': {'v': {'objects': {'2': {}, '5': {}}}}}))
    dataset = VOS(tmp_path, resolution=None)
    assert dataset.sequence_names() == ['v_2', 'v_5']
    np.testing.assert_array_equal(dataset[0].boxes, [[1, 1, 3, 2]])
    assert dataset[1].visible.tolist() == [False]


def test_vos_reader_errors_name_the_file(tmp_path):
    write_frames(tmp_path / 'JPEGImages' / '480p' / 'v', ['00000.jpg'], 8, 8)
    mask = tmp_path / 'Annotations' / '480p' / 'v' / '00001.png'
    mask.parent.mkdir(parents=True)
    cv2.imwrite(str(mask), np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r'00001\.png: no frame 00001\.jpg'):
        VOS(tmp_path)
    mask.rename(mask.with_name('00000.png'))
    mask.with_name('00000.png').write_bytes(b'garbage')
    with pytest.raises(DatasetError, match=r'00000\.png: missing or not a readable PNG'):
        VOS(tmp_path)
    with pytest.raises(DatasetError, match=r'ImageSets/2017/train\.txt: missing'):
        VOS(tmp_path, year='2017', imageset='train')


def test_vos_reader_finds_the_resolution_folder_that_exists(tmp_path):
    """DAVIS copies ship 480p, Full-Resolution, or (../shared) 288p: 'auto' takes the one there."""
    write_frames(tmp_path / 'JPEGImages' / '288p' / 'cat', ['00000.jpg'], 40, 30)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 255
    (tmp_path / 'Annotations' / '288p' / 'cat').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'Annotations' / '288p' / 'cat' / '00000.png'), mask)
    dataset = open_dataset('davis', tmp_path)
    assert dataset.resolution == '288p' and dataset.sequence_names() == ['cat']
    np.testing.assert_array_equal(dataset[0].boxes[0], [10, 5, 20, 10])
    write_frames(tmp_path / 'JPEGImages' / 'Full-Resolution' / 'cat', ['00000.jpg'], 40, 30)
    (tmp_path / 'Annotations' / 'Full-Resolution').mkdir()
    with pytest.raises(DatasetError, match=r'several resolutions \(288p, Full-Resolution\)'):
        VOS(tmp_path)
    assert VOS(tmp_path, resolution='288p').resolution == '288p'
    write_frames(tmp_path / 'JPEGImages' / '480p' / 'cat', ['00000.jpg'], 40, 30)
    (tmp_path / 'Annotations' / '480p').mkdir()
    assert VOS(tmp_path).resolution == '480p'  # DAVIS's usual one where there are several


def test_vos_reader_on_shared_davis2016():
    root = shared_data('davis2016')
    dataset = VOS(root, year='2016', imageset='val')  # finds 288p
    assert dataset.resolution == '288p' and len(dataset) == 20 and 'blackswan' in dataset.sequence_names()
    total = 0
    for seq in dataset:
        total += len(seq)
        assert seq.visible.any()
        boxes = seq.boxes[seq.visible]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 512).all()
        assert (boxes[:, 1] + boxes[:, 3] <= 288).all()
    assert total == 690
    assert dataset[0].image(0).shape == (288, 512, 3)
