"""TrackingNet reader on a tiny TrackingNet-layout fixture: chunks, test chunk, errors."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import write_frames, write_lines

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.trackingnet import TrackingNet


def make_trackingnet(root, chunk='TRAIN_0', name='a1b2c3_0', frames=4, first_only=False):
    """One sequence; its box in frame 2 is empty (target not visible)."""
    write_frames(root / chunk / 'frames' / name, [f'{t}.jpg' for t in range(frames)])
    boxes = [f'{t}.5,{t},12.0,9.0' if t != 2 else '0,0,0,0' for t in range(frames)]
    write_lines(root / chunk / 'anno' / f'{name}.txt', boxes[:1] if first_only else boxes)


def test_trackingnet_reader_reads_chunks_and_visibility(tmp_path):
    make_trackingnet(tmp_path, 'TRAIN_0', 'seq_a')
    make_trackingnet(tmp_path, 'TRAIN_1', 'seq_b', frames=3)
    everything = open_dataset('trackingnet', tmp_path)
    assert everything.sequence_names() == ['seq_a', 'seq_b']
    seq = TrackingNet(tmp_path, chunks=(1,))[0]
    assert seq.name == 'seq_b' and seq.attributes['chunk'] == 'TRAIN_1'
    np.testing.assert_array_equal(seq.boxes[1], [1.5, 1, 12, 9])
    np.testing.assert_array_equal(seq.visible, [True, True, False])
    assert seq.frames[2].name == '2.jpg' and seq.image(2).shape == (48, 64, 3)


def test_trackingnet_reader_test_chunk_has_only_the_first_box(tmp_path):
    make_trackingnet(tmp_path, 'TEST', 'test_seq', frames=5, first_only=True)
    seq = TrackingNet(tmp_path, split='test')[0]
    assert len(seq) == 5 and np.isnan(seq.boxes[1:]).all()
    np.testing.assert_array_equal(seq.attributes['annotated'], [True, False, False, False, False])


def test_trackingnet_reader_errors_name_file_and_line(tmp_path):
    make_trackingnet(tmp_path)
    anno = tmp_path / 'TRAIN_0' / 'anno' / 'a1b2c3_0.txt'
    write_lines(anno, ['1,1,12,9', '1;1;12;9', '1,1,12,9', '1,1,12,9'])
    with pytest.raises(DatasetError, match=r'a1b2c3_0\.txt:2: '):
        TrackingNet(tmp_path)[0]
    write_lines(anno, ['1,1,12,9'] * 6)
    with pytest.raises(DatasetError, match=r'a1b2c3_0\.txt: 6 boxes, but .*5\.jpg is missing'):
        TrackingNet(tmp_path)[0]
    with pytest.raises(DatasetError, match='TRAIN_3'):
        TrackingNet(tmp_path, chunks=(3,))
