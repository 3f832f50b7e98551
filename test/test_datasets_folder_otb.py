"""The generic frames + groundtruth.txt reader and the OTB reader on fixtures in their layouts."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import shared_data, write_frames, write_lines

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.folder import FrameFolder
from stark_training.datasets.otb import OTB


def test_folder_reader_sequences_separators_and_absence(tmp_path):
    write_frames(tmp_path / 'walk' / 'img', ['frame_2.png', 'frame_10.png', 'frame_1.png'])
    write_lines(tmp_path / 'walk' / 'groundtruth.txt', ['1\t2\t10\t12', 'NaN,NaN,NaN,NaN', '3 4 10 12'])
    write_frames(tmp_path / 'car', ['0001.jpg', '0002.jpg'])
    write_lines(tmp_path / 'car' / 'groundtruth.txt', ['1,2,10,12', '2,2,10,12'])
    write_lines(tmp_path / 'car' / 'absence.label', ['0', '1'])
    dataset = open_dataset('folder', tmp_path)
    assert dataset.sequence_names() == ['car', 'walk']
    walk = dataset[1]
    assert [f.name for f in walk.frames] == ['frame_1.png', 'frame_2.png', 'frame_10.png']
    np.testing.assert_array_equal(walk.boxes[2], [3, 4, 10, 12])
    np.testing.assert_array_equal(walk.visible, [True, False, True])
    np.testing.assert_array_equal(dataset[0].visible, [True, False])
    single = FrameFolder(tmp_path / 'car')
    assert single.sequence_names() == ['car'] and len(single[0]) == 2


def test_folder_reader_errors_name_file_and_line(tmp_path):
    write_frames(tmp_path, ['1.jpg', '2.jpg'])
    gt = write_lines(tmp_path / 'groundtruth.txt', ['1,2,10,12', '1,2,10,12,7'])
    with pytest.raises(DatasetError, match=r'groundtruth\.txt:2: expected 4 box values .* got 5'):
        FrameFolder(tmp_path)[0]
    write_lines(gt, ['1,2,10,12'])
    with pytest.raises(DatasetError, match=r'groundtruth\.txt: 1 boxes, but .* has 2 frames'):
        FrameFolder(tmp_path)[0]
    with pytest.raises(DatasetError, match='no groundtruth.txt'):
        FrameFolder(write_frames(tmp_path / 'empty' / 'seq', ['1.jpg'])[0].parent.parent)


def test_otb_reader_separators_two_targets_and_start_frame(tmp_path):
    write_frames(tmp_path / 'Basketball' / 'img', [f'{t:04d}.jpg' for t in range(1, 5)])
    write_lines(tmp_path / 'Basketball' / 'groundtruth_rect.txt', ['1,2,3,4', '1 2 3 4', '1\t2\t3\t4'])
    write_frames(tmp_path / 'Jogging' / 'img', ['0001.jpg', '0002.jpg'])
    write_lines(tmp_path / 'Jogging' / 'groundtruth_rect.1.txt', ['1,2,3,4', '0,0,0,0'])
    write_lines(tmp_path / 'Jogging' / 'groundtruth_rect.2.txt', ['5,6,7,8', '5,6,7,8'])
    write_frames(tmp_path / 'David' / 'img', ['0300.jpg', '0301.jpg'])
    write_lines(tmp_path / 'David' / 'groundtruth_rect.txt', ['1,2,3,4', '1,2,3,4'])
    dataset = open_dataset('otb', tmp_path)
    assert dataset.sequence_names() == ['Basketball', 'David', 'Jogging-1', 'Jogging-2']
    basketball = dataset[0]
    assert len(basketball) == 3 and basketball.frames[-1].name == '0003.jpg'
    np.testing.assert_array_equal(basketball.boxes, [[1, 2, 3, 4]] * 3)
    assert dataset[1].frames[0].name == '0300.jpg'
    np.testing.assert_array_equal(dataset[2].visible, [True, False])


def test_otb_reader_errors_name_file_and_line(tmp_path):
    write_frames(tmp_path / 'Boy' / 'img', ['0001.jpg'])
    gt = write_lines(tmp_path / 'Boy' / 'groundtruth_rect.txt', ['1,2,3,four'])
    with pytest.raises(DatasetError, match=r'groundtruth_rect\.txt:1: .*not a number'):
        OTB(tmp_path)[0]
    write_lines(gt, ['1,2,3,4', '1,2,3,4'])
    with pytest.raises(DatasetError, match=r'groundtruth_rect\.txt: 2 boxes from frame 1, but .*0002\.jpg is missing'):
        OTB(tmp_path)[0]


def test_otb_reader_takes_groundtruth_txt_and_renumbered_frames(tmp_path):
    """Copies of OTB that name the file groundtruth.txt, and renumber David's annotated frames
    (OTB's 300..) from 0001, as ../shared/data/otb_val does."""
    write_frames(tmp_path / 'Car1' / 'img', ['0001.jpg', '0002.jpg'])
    write_lines(tmp_path / 'Car1' / 'groundtruth.txt', ['1,2,3,4', '2,2,3,4'])
    write_frames(tmp_path / 'David' / 'img', ['0001.jpg', '0002.jpg', '0003.jpg'])
    write_lines(tmp_path / 'David' / 'groundtruth.txt', ['5,6,7,8'] * 3)
    write_frames(tmp_path / 'Both' / 'img', ['0001.jpg'])
    write_lines(tmp_path / 'Both' / 'groundtruth.txt', ['9,9,9,9'])
    write_lines(tmp_path / 'Both' / 'groundtruth_rect.txt', ['1,1,1,1'])  # the toolkit's name wins
    dataset = open_dataset('otb', tmp_path)
    assert dataset.sequence_names() == ['Both', 'Car1', 'David']
    np.testing.assert_array_equal(dataset[0].boxes, [[1, 1, 1, 1]])
    np.testing.assert_array_equal(dataset[1].boxes[1], [2, 2, 3, 4])
    assert [f.name for f in dataset[2].frames] == ['0001.jpg', '0002.jpg', '0003.jpg']


def test_otb_reader_without_ground_truth_names_both_file_names(tmp_path):
    write_frames(tmp_path / 'Boy' / 'img', ['0001.jpg'])
    with pytest.raises(DatasetError, match=r'no <seq>/groundtruth_rect\.txt or <seq>/groundtruth\.txt'):
        OTB(tmp_path)


def test_otb_reader_on_shared_otb_val():
    dataset = open_dataset('otb', shared_data('otb_val'))
    assert dataset.sequence_names() == ['Car1', 'David', 'DragonBaby', 'Human7', 'Jumping', 'MotorRolling',
                                        'Skiing', 'vot2015_ball1']
    assert sum(len(dataset[i]) for i in range(len(dataset))) == 2517
    david = dataset[1]
    assert len(david) == 471 and david.frames[0].name == '0001.jpg' and david.visible.all()


def test_uav123_reader_split_videos_share_frames(tmp_path):
    from stark_training.datasets.uav123 import UAV123
    write_frames(tmp_path / 'data_seq' / 'UAV123' / 'car1', [f'{t:06d}.jpg' for t in range(1, 8)])
    write_lines(tmp_path / 'anno' / 'UAV123' / 'car1_1.txt', ['1,2,3,4'] * 4)
    write_lines(tmp_path / 'anno' / 'UAV123' / 'car1_2.txt', ['NaN,NaN,NaN,NaN', '1,2,3,4', '1,2,3,4', '1,2,3,4'])
    dataset = open_dataset('uav123', tmp_path)
    assert dataset.sequence_names() == ['car1_1', 'car1_2']
    second = dataset[1]
    assert [f.name for f in second.frames] == ['000004.jpg', '000005.jpg', '000006.jpg', '000007.jpg']
    np.testing.assert_array_equal(second.visible, [False, True, True, True])
    write_lines(tmp_path / 'anno' / 'UAV123' / 'car1_2.txt', ['1,2,3,4'] * 5)
    with pytest.raises(DatasetError, match=r'car1_2\.txt: 5 boxes from frame 4, but .*000008\.jpg is missing'):
        UAV123(tmp_path)[1]


def test_nfs_reader_frame_column_lost_flags_and_errors(tmp_path):
    from stark_training.datasets.nfs import NfS
    write_frames(tmp_path / 'ball' / '30' / 'ball', [f'{t:05d}.jpg' for t in range(1, 4)])
    gt = write_lines(tmp_path / 'ball' / '30' / 'ball.txt',
                     ['1 10 20 30 50 1 0 0 0 "ball"', '1 11 21 31 51 3 1 1 0 "ball"'])
    seq = open_dataset('nfs', tmp_path)[0]
    np.testing.assert_array_equal(seq.boxes[0], [10, 20, 20, 30])
    assert np.isnan(seq.boxes[1]).all()
    np.testing.assert_array_equal(seq.visible, [True, False, False])
    np.testing.assert_array_equal(seq.attributes['occluded'], [False, False, True])
    write_lines(gt, ['1 10 20 30 50 1 0 0 0 "ball"', '1 10 20 30 50 24 0 0 0 "ball"'])
    with pytest.raises(DatasetError, match=r'ball\.txt:2: frame 24 outside the 3 frames'):
        NfS(tmp_path)[0]
