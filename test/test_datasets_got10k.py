"""GOT-10k reader on a tiny GOT-10k-layout fixture: labels, test split, vot split files, errors."""
from __future__ import annotations

import numpy as np
import pytest
from dataset_fixtures import write_frames, write_lines

from stark_training.datasets import DatasetError, open_dataset
from stark_training.datasets.got10k import GOT10k

META = ['[METAINFO]', 'url: https://example.invalid/video', 'object_class: fish', 'motion_class: swimming']


def make_got10k(root, split='train', names=('GOT-10k_Train_000001', 'GOT-10k_Train_000002'), frames=5):
    """Sequences whose frame 2 is absent (cover 0) and frame 4 half covered and cut by the image."""
    write_lines(root / split / 'list.txt', list(names))
    for name in names:
        folder = root / split / name
        write_frames(folder, [f'{t:08d}.jpg' for t in range(1, frames + 1)])
        if split == 'test':
            write_lines(folder / 'groundtruth.txt', ['3.0,4.0,20.0,10.0'])
        else:
            write_lines(folder / 'groundtruth.txt', [f'{t},{t},20,10' for t in range(frames)])
            write_lines(folder / 'absence.label', ['0', '1', '0', '0', '0'][:frames])
            write_lines(folder / 'cover.label', ['8', '0', '8', '4', '8'][:frames])
            write_lines(folder / 'cut_by_image.label', ['0', '0', '0', '1', '0'][:frames])
        write_lines(folder / 'meta_info.ini', META)
    return root


def test_got10k_reader_reads_labels_and_meta(tmp_path):
    dataset = open_dataset('got10k', make_got10k(tmp_path), split='train')
    assert dataset.sequence_names() == ['GOT-10k_Train_000001', 'GOT-10k_Train_000002']
    seq = dataset[1]
    np.testing.assert_array_equal(seq.boxes[3], [3, 3, 20, 10])
    np.testing.assert_array_equal(seq.visible, [True, False, True, True, True])
    np.testing.assert_array_equal(seq.attributes['cover'], [8, 0, 8, 4, 8])
    np.testing.assert_array_equal(seq.attributes['cut_by_image'], [0, 0, 0, 1, 0])
    assert seq.attributes['meta']['object_class'] == 'fish'
    assert seq.image(4).shape == (48, 64, 3)


def test_got10k_reader_test_split_has_only_the_first_box(tmp_path):
    make_got10k(tmp_path, 'test', names=('GOT-10k_Test_000001',))
    seq = GOT10k(tmp_path, split='test')[0]
    np.testing.assert_array_equal(seq.boxes[0], [3, 4, 20, 10])
    assert np.isnan(seq.boxes[1:]).all()
    np.testing.assert_array_equal(seq.visible, [True, False, False, False, False])
    np.testing.assert_array_equal(seq.attributes['annotated'], seq.visible)


def test_got10k_reader_vot_split_file_by_index_or_name(tmp_path):
    make_got10k(tmp_path)
    split = write_lines(tmp_path / 'vottrain.txt', ['1'])
    assert GOT10k(tmp_path, vot_split=split).sequence_names() == ['GOT-10k_Train_000002']
    write_lines(split, ['GOT-10k_Train_000001', '7'])
    with pytest.raises(DatasetError, match=r'vottrain\.txt:2: index 7 beyond'):
        GOT10k(tmp_path, vot_split=split)
    with pytest.raises(DatasetError, match='votval: missing .*not shipped'):
        GOT10k(tmp_path, vot_split='votval')


def test_got10k_reader_malformed_files_name_file_and_line(tmp_path):
    make_got10k(tmp_path)
    folder = tmp_path / 'train' / 'GOT-10k_Train_000001'
    write_lines(folder / 'cover.label', ['8', '0', 'eight', '4', '8'])
    with pytest.raises(DatasetError, match=r'cover\.label:3: label .eight. is not an integer'):
        GOT10k(tmp_path)[0]
    write_lines(folder / 'cover.label', ['8'] * 5)
    write_lines(folder / 'groundtruth.txt', ['1,1,20,10'] * 4)
    with pytest.raises(DatasetError, match=r'groundtruth\.txt: 4 boxes, but .* has 5 frames'):
        GOT10k(tmp_path)[0]
    write_lines(folder / 'groundtruth.txt', ['1,1,20,10'] * 3 + ['1,1,20', '1,1,20,10'])
    with pytest.raises(DatasetError, match=r'groundtruth\.txt:4: expected 4 box values'):
        GOT10k(tmp_path)[0]
    write_lines(folder / 'groundtruth.txt', ['1,1,20,10'] * 5)
    write_lines(folder / 'meta_info.ini', ['[METAINFO]', 'object_class fish'])
    with pytest.raises(DatasetError, match=r'meta_info\.ini:2: expected "key: value"'):
        GOT10k(tmp_path)[0]


def test_got10k_reader_missing_list_and_sequence(tmp_path):
    (tmp_path / 'train').mkdir()
    with pytest.raises(DatasetError, match=r'list\.txt: missing'):
        GOT10k(tmp_path)
    write_lines(tmp_path / 'train' / 'list.txt', ['GOT-10k_Train_000009'])
    with pytest.raises(DatasetError, match='GOT-10k_Train_000009.*missing'):
        GOT10k(tmp_path)[0]
