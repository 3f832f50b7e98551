"""COCO reader on a tiny COCO-layout fixture (crowd and small boxes skipped, errors) and on the
real ../shared/data/coco128."""
from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_fixtures import shared_data, write_jpeg

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.coco import COCO


def make_coco(root, annotations, split='train2017'):
    """Two images and the given annotations, in the COCO layout."""
    for image_id in (1, 2):
        write_jpeg(root / 'images' / split / f'{image_id:012d}.jpg', 160, 120)
    data = {'images': [{'id': i, 'file_name': f'{i:012d}.jpg', 'width': 160, 'height': 120} for i in (1, 2)],
            'annotations': annotations, 'categories': [{'id': 18, 'name': 'dog'}]}
    path = root / 'annotations' / f'instances_{split}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def ann(ann_id, image_id, bbox, crowd=0):
    return {'id': ann_id, 'image_id': image_id, 'bbox': bbox, 'category_id': 18, 'iscrowd': crowd}


def test_coco_reader_one_sequence_per_object_skipping_crowd_and_small(tmp_path):
    make_coco(tmp_path, [ann(10, 1, [5, 6, 60, 70]), ann(11, 1, [0, 0, 90, 90], crowd=1),
                         ann(12, 2, [1, 2, 50, 80]), ann(13, 2, [3, 4, 51.5, 52])])
    dataset = open_dataset('coco', tmp_path)
    assert not dataset.is_video
    assert dataset.sequence_names() == ['1_10', '2_13']  # crowd 11 and the 50-px-wide 12 skipped
    seq = dataset[1]
    assert len(seq) == 1 and seq.visible.tolist() == [True]
    np.testing.assert_array_equal(seq.boxes, [[3, 4, 51.5, 52]])
    assert seq.attributes['category'] == 'dog' and seq.image(0).shape == (120, 160, 3)
    assert COCO(tmp_path, min_size=0).sequence_names() == ['1_10', '2_12', '2_13']


def test_coco_reader_malformed_json_names_file_and_line(tmp_path):
    path = make_coco(tmp_path, [ann(10, 1, [5, 6, 60, 70])])
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ' oops'
    path.write_text('\n'.join(lines))
    with pytest.raises(DatasetError, match=r'instances_train2017\.json:4: invalid JSON'):
        COCO(tmp_path)


def test_coco_reader_bad_annotations_are_named(tmp_path):
    make_coco(tmp_path, [ann(10, 1, [5, 6, 60, 70]), ann(11, 7, [5, 6, 60, 70])])
    with pytest.raises(DatasetError, match=r'annotations\[1\] refers to image_id 7'):
        COCO(tmp_path)
    make_coco(tmp_path, [ann(10, 1, [5, 6, 'wide', 70])])
    with pytest.raises(DatasetError, match=r'annotations\[0\] \(id 10\): bbox .* non-number'):
        COCO(tmp_path)
    with pytest.raises(DatasetError, match=r'instances_val2017\.json: missing|val2017.*missing'):
        COCO(tmp_path, split='val2017')


def test_coco_reader_on_shared_coco128():
    root = shared_data('coco128')
    train, val = COCO(root, 'train2017'), COCO(root, 'val2017')
    assert len(train) > 100 and len(val) > 100
    for dataset in (train, val):
        for index in (0, len(dataset) - 1):
            seq = dataset[index]
            image = seq.image(0)
            x, y, w, h = seq.boxes[0]
            assert w > 50 and h > 50 and x >= 0 and y >= 0
            assert x + w <= image.shape[1] + 1 and y + h <= image.shape[0] + 1
    everything = COCO(root, 'train2017', min_size=0)
    assert len(everything) > len(train)
