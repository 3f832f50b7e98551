"""LaSOT reader on a tiny LaSOT-layout fixture: split lists, occlusion/out-of-view labels, errors."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import write_frames, write_lines

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.lasot import LaSOT, lasot_test_split


def make_lasot(root, name='airplane-2', frames=4):
    """One LaSOT sequence: frame 2 fully occluded, frame 3 out of view."""
    folder = root / name.rsplit('-', 1)[0] / name
    write_frames(folder / 'img', [f'{t:08d}.jpg' for t in range(1, frames + 1)])
    write_lines(folder / 'groundtruth.txt', [f'{10 + t},{5 + t},20,15' for t in range(frames)])
    flags = ['0'] * frames
    occluded, out = list(flags), list(flags)
    occluded[1] = '1'
    out[2] = '1'
    write_lines(folder / 'full_occlusion.txt', [','.join(occluded)])
    write_lines(folder / 'out_of_view.txt', [','.join(out)])
    return folder


def test_lasot_reader_test_split_is_the_official_280():
    names = lasot_test_split()
    assert len(names) == len(set(names)) == 280
    classes = {n.rsplit('-', 1)[0] for n in names}
    assert len(classes) == 70 and 'airplane-1' in names and 'volleyball-19' in names


def test_lasot_reader_reads_boxes_and_visibility(tmp_path):
    make_lasot(tmp_path, 'airplane-2')
    make_lasot(tmp_path, 'airplane-1')  # a test-split sequence: excluded from 'train'
    train = open_dataset('lasot', tmp_path, split='train')
    assert train.sequence_names() == ['airplane-2']
    seq = train[0]
    assert seq.dataset == 'lasot' and len(seq) == 4
    np.testing.assert_array_equal(seq.boxes[1], [11, 6, 20, 15])
    np.testing.assert_array_equal(seq.visible, [True, False, False, True])
    np.testing.assert_array_equal(seq.attributes['full_occlusion'], [False, True, False, False])
    np.testing.assert_array_equal(seq.attributes['out_of_view'], [False, False, True, False])
    assert seq.frames[0].name == '00000001.jpg' and seq.image(0).shape == (48, 64, 3)
    assert LaSOT(tmp_path, split='all').sequence_names() == ['airplane-1', 'airplane-2']


def test_lasot_reader_test_split_names_missing_sequence(tmp_path):
    make_lasot(tmp_path, 'airplane-1')
    with pytest.raises(DatasetError, match='airplane-9'):
        LaSOT(tmp_path, split='test')


def test_lasot_reader_malformed_groundtruth_names_file_and_line(tmp_path):
    folder = make_lasot(tmp_path)
    write_lines(folder / 'groundtruth.txt', ['1,2,3,4', '1,2,x,4', '1,2,3,4', '1,2,3,4'])
    with pytest.raises(DatasetError, match=r'groundtruth\.txt:2: .*not a number'):
        LaSOT(tmp_path)[0]


def test_lasot_reader_label_count_mismatch_names_file(tmp_path):
    folder = make_lasot(tmp_path)
    write_lines(folder / 'out_of_view.txt', ['0,0,1'])
    with pytest.raises(DatasetError, match=r'out_of_view\.txt: 3 labels, but the sequence has 4'):
        LaSOT(tmp_path)[0]


def test_lasot_reader_missing_label_file_and_unreadable_frame(tmp_path):
    folder = make_lasot(tmp_path)
    (folder / 'full_occlusion.txt').unlink()
    with pytest.raises(DatasetError, match=r'full_occlusion\.txt: missing'):
        LaSOT(tmp_path)[0]
    make_lasot(tmp_path)
    (folder / 'img' / '00000003.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(DatasetError, match=r'00000003\.jpg: is not a readable image'):
        LaSOT(tmp_path)[0].image(2)
