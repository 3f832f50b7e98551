"""open_dataset by name, the in-memory synthetic dataset, and what readers send to DataLoader workers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from dataset_fixtures import write_frames, write_lines

from stark_training.datasets import READERS, open_dataset
from stark_training.datasets.synthetic import SyntheticDataset


def test_open_dataset_names_the_unknown_reader_and_a_missing_root():
    with pytest.raises(ValueError, match=r"unknown dataset 'vot2020' \(known: coco, davis"):
        open_dataset('vot2020', '/nowhere')
    with pytest.raises(ValueError, match=r"dataset 'lasot' has no option 'splits' \(options: split\)"):
        open_dataset('lasot', '/nowhere', splits='train')
    with pytest.raises(ValueError, match="needs a root folder"):
        open_dataset('lasot')
    assert {'lasot', 'got10k', 'trackingnet', 'coco', 'vos', 'folder', 'otb', 'uav123', 'nfs'} <= set(READERS)


def test_synthetic_dataset_is_a_deterministic_sequence_dataset():
    first = open_dataset('synthetic', num_sequences=2, num_frames=5, width=64, height=48, seed=4, target_size=12)
    again = SyntheticDataset(num_sequences=2, num_frames=5, width=64, height=48, seed=4, target_size=12)
    seq = first[1]
    assert first.sequence_names() == ['synthetic-4', 'synthetic-5'] and seq.dataset == 'synthetic'
    assert seq.boxes.shape == (5, 4) and seq.visible.all() and seq.image(2).shape == (48, 64, 3)
    np.testing.assert_array_equal(seq.image(3), again[1].image(3))
    np.testing.assert_array_equal(seq.boxes, again[1].boxes)


def test_readers_pickle_without_their_cache(tmp_path):
    write_frames(tmp_path, ['1.jpg', '2.jpg'])
    write_lines(tmp_path / 'groundtruth.txt', ['1,2,10,12', '2,2,10,12'])
    dataset = open_dataset('folder', tmp_path)
    dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy._cache) == 0 and len(dataset._cache) == 1
    np.testing.assert_array_equal(copy[0].boxes, dataset[0].boxes)
    with pytest.raises(IndexError, match='out of range'):
        dataset[1]


def test_dataset_check_reports_counts_and_the_first_error(tmp_path, capsys):
    from stark_training.datasets.check import main
    write_frames(tmp_path / 'seq', ['1.jpg', '2.jpg'])
    write_lines(tmp_path / 'seq' / 'groundtruth.txt', ['1,2,10,12', 'NaN,NaN,NaN,NaN'])
    assert main(['folder', str(tmp_path)]) == 0
    assert '1 sequences, 2 frames, 1 with a visible target' in capsys.readouterr().out
    write_lines(tmp_path / 'seq' / 'groundtruth.txt', ['1,2,10,12', '1,2'])
    assert main(['folder', str(tmp_path)]) == 1
    assert 'groundtruth.txt:2: expected 4 box values' in capsys.readouterr().out
    assert main(['lasot', str(tmp_path), '--option', 'split=validation']) == 1
    assert "LaSOT split 'validation'" in capsys.readouterr().out
