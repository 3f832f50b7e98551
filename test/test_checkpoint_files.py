"""Checkpoint files are inspected before torch sees them, and can be pinned by SHA-256.

A TorchScript archive runs its own code when torch.load reads it (torch.load hands such archives to
torch.jit.load, around any unpickler): it must be refused, as must anything that is not torch.save's
zip or legacy pickle format. The bomb from hostile_files is proven real in a subprocess first.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from hostile_files import bomb_goes_off, write_torchscript_bomb
from stark_model import CheckpointError, file_sha256, load_model, read_checkpoint, save_checkpoint
from stark_model.config import load_variant
from stark_model.network import build_network


@pytest.fixture(scope='module')
def lite_file(tmp_path_factory) -> Path:
    """Our own checkpoint of the (untrained) lite variant, as save_checkpoint writes it."""
    variant = load_variant('lite')
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('lite') / 'lite.pth.tar'
    return save_checkpoint(path, build_network(variant.model, variant.tracker.search_size), variant, epoch=3)


@pytest.fixture
def bomb(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / 'bomb_went_off'
    return write_torchscript_bomb(tmp_path / 'model.pth.tar', marker), marker


@pytest.mark.slow
def test_the_bomb_is_real(bomb):
    """Plain torch.load (and torch.jit.load) run its code: the marker appears."""
    path, marker = bomb
    assert not marker.exists()
    assert bomb_goes_off(path, marker, 'torch.load')
    marker.unlink()
    assert bomb_goes_off(path, marker, 'torch.jit.load')


@pytest.mark.parametrize('loader', [read_checkpoint, load_model])
def test_torchscript_archive_is_refused_before_it_runs(bomb, loader):
    path, marker = bomb
    with pytest.raises(CheckpointError) as error:
        loader(path)
    message = str(error.value)
    assert str(path) in message and 'TorchScript archive' in message and 'code/' in message
    assert not marker.exists(), 'the archive ran its code'


def rewritten_zip(source: Path, target: Path, add: dict[str, bytes] = None, rename_folder: str = None) -> Path:
    """A copy of a torch.save zip with entries added or its top folder renamed for some entries."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, 'w') as copy:
        names = original.namelist()
        folder = names[0].split('/', 1)[0]
        for index, name in enumerate(names):
            data = original.read(name)
            if rename_folder and index == 0:
                name = name.replace(folder, rename_folder, 1)
            copy.writestr(name, data)
        for name, data in (add or {}).items():
            copy.writestr(f'{folder}/{name}', data)
    return target


def test_torch_save_zip_with_torchscript_entries_is_refused(lite_file, tmp_path):
    # constants.pkl alone makes torch.load dispatch to torch.jit.load.
    path = rewritten_zip(lite_file, tmp_path / 'mixed.pth.tar', add={'constants.pkl': b'\x80\x02N.'})
    with pytest.raises(CheckpointError, match=r'refusing checkpoint .*mixed.pth.tar: it is a TorchScript archive '
                                              r'\(it holds archive/constants.pkl\)'):
        read_checkpoint(path)


def test_zip_with_entries_torch_save_does_not_write_is_refused(lite_file, tmp_path):
    path = rewritten_zip(lite_file, tmp_path / 'extra.pth.tar', add={'notes/readme.txt': b'hello'})
    with pytest.raises(CheckpointError, match=r'extra.pth.tar: its zip archive holds entries that a torch.save '
                                              r'file does not \(archive/notes/readme.txt\)'):
        read_checkpoint(path)
    path = rewritten_zip(lite_file, tmp_path / 'two.pth.tar', rename_folder='other')
    with pytest.raises(CheckpointError, match=r'two.pth.tar is not a readable PyTorch file: a zip archive, but '
                                              r'not one written by torch.save'):
        read_checkpoint(path)


def test_tar_format_of_old_pytorch_is_refused(tmp_path):
    path = tmp_path / 'old.pth'
    with tarfile.open(path, 'w') as archive:
        for name in ('sys_info', 'pickle', 'storages', 'tensors'):
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b'\x80\x02'))
    with pytest.raises(CheckpointError, match=r'refusing checkpoint .*old.pth: it is in the tar format of very '
                                              'old PyTorch versions'):
        read_checkpoint(path)


def test_legacy_pickle_and_zip_formats_still_load(lite_file, tmp_path):
    contents = read_checkpoint(lite_file)
    legacy = tmp_path / 'legacy.pth'
    torch.save({'net': contents.state_dict}, legacy, _use_new_zipfile_serialization=False)
    assert read_checkpoint(legacy).state_dict.keys() == contents.state_dict.keys()
    assert contents.kind == 'stark_ros' and contents.epoch == 3


# ----------------------------------------------------------------------------------------------
# SHA-256 pinning


def test_file_sha256_is_the_hash_of_the_bytes(lite_file):
    assert file_sha256(lite_file) == hashlib.sha256(lite_file.read_bytes()).hexdigest()


def test_pinned_sha256_accepts_the_file(lite_file):
    digest = file_sha256(lite_file)
    assert read_checkpoint(lite_file, sha256=digest).kind == 'stark_ros'
    assert read_checkpoint(lite_file, sha256=f' {digest.upper()}\n').kind == 'stark_ros'
    assert load_model(lite_file, sha256=digest).variant.variant == 'lite'


def test_sha256_mismatch_names_expected_and_actual(lite_file):
    wrong = '0' * 64
    for loader in (read_checkpoint, load_model):
        with pytest.raises(CheckpointError) as error:
            loader(lite_file, sha256=wrong)
        message = str(error.value)
        assert str(lite_file) in message and wrong in message and file_sha256(lite_file) in message


@pytest.mark.parametrize('pinned', ['abc', 'g' * 64, '0' * 63, ''])
def test_malformed_sha256_is_named(lite_file, pinned):
    with pytest.raises(CheckpointError, match=rf'the sha256 pinned for checkpoint .* \({pinned!r}\) is not 64 '
                                              'hexadecimal digits'):
        read_checkpoint(lite_file, sha256=pinned)


def test_sha256_is_checked_before_anything_is_unpickled(bomb):
    path, marker = bomb
    with pytest.raises(CheckpointError, match='but 0{64} is expected'):
        read_checkpoint(path, sha256='0' * 64)
    assert not marker.exists()


def test_sha256_without_a_checkpoint_is_an_error():
    with pytest.raises(ValueError, match='sha256 was given but no checkpoint'):
        load_model(None, variant='lite', allow_untrained=True, sha256='0' * 64)


def test_atomic_save_gives_the_file_the_mode_of_a_plain_write(tmp_path):
    from stark_model.checkpoint import atomic_torch_save

    atomic_torch_save({'w': torch.zeros(2)}, tmp_path / 'saved.pt')
    (tmp_path / 'plain.txt').write_text('x')
    assert (tmp_path / 'saved.pt').stat().st_mode == (tmp_path / 'plain.txt').stat().st_mode
