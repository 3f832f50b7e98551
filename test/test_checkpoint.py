"""Checkpoint IO: official model-zoo files, our own files, bare state dicts, and every way a file can
be wrong or hostile. Fixtures are written here in the real on-disk formats (torch.save zip files)."""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import os
import pickle
import random
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from stark_model import CheckpointError, load_model, read_checkpoint, save_checkpoint
from stark_model.backbone import BackboneWithPosition
from stark_model.checkpoint import infer_variant, load_torchvision_resnet, load_weights
from stark_model.config import load_variant
from stark_model.network import build_network

# Module names of the original training code that the official files pickle objects from.
FOREIGN_MODULES = ('lib.train.admin.settings', 'lib.train.admin.local', 'lib.train.admin.stats',
                   'lib.utils.box_ops_fake_easydict', 'lib.utils.fake_lists')


# ----------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def foreign_modules(*names: str):
    """Register throw-away modules (and their parent packages) in sys.modules, for pickling only;
    on exit they are removed again (and anything they shadowed is put back)."""
    added: dict[str, types.ModuleType | None] = {}
    modules = {}
    for name in names:
        parts = name.split('.')
        for depth in range(1, len(parts) + 1):
            sub = '.'.join(parts[:depth])
            if sub not in modules:
                added.setdefault(sub, sys.modules.get(sub))
                modules[sub] = types.ModuleType(sub)
                sys.modules[sub] = modules[sub]
    try:
        yield modules
    finally:
        for sub, previous in added.items():
            if previous is None:
                sys.modules.pop(sub, None)
            else:
                sys.modules[sub] = previous


def foreign_class(module: types.ModuleType, name: str, base: type = object) -> type:
    cls = type(name, (base,), {'__module__': module.__name__, '__qualname__': name})
    setattr(module, name, cls)
    return cls


def real_adamw_state() -> dict:
    """An AdamW state_dict after one step, as the original's training saved next to the weights."""
    torch.manual_seed(1)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def write_official(path: Path, state_dict: dict[str, torch.Tensor]) -> set[str]:
    """Write a file in the model zoo's layout; returns the foreign class names it pickles."""
    with foreign_modules(*FOREIGN_MODULES) as mods:
        Settings = foreign_class(mods['lib.train.admin.settings'], 'Settings')
        EnvironmentSettings = foreign_class(mods['lib.train.admin.local'], 'EnvironmentSettings')
        AverageMeter = foreign_class(mods['lib.train.admin.stats'], 'AverageMeter')
        EasyDict = foreign_class(mods['lib.utils.box_ops_fake_easydict'], 'EasyDict', dict)
        DatasetList = foreign_class(mods['lib.utils.fake_lists'], 'DatasetList', list)

        env = EnvironmentSettings()
        env.paths = {'workspace_dir': '/home/someone/Stark', 'lasot_dir': '/data/lasot'}
        cfg = EasyDict(MODEL=EasyDict(HIDDEN_DIM=256, BACKBONE=EasyDict(TYPE='resnet50')), TRAIN={'EPOCH': 500})
        cfg.attribute_too = 'easydict keeps items as attributes as well'
        settings = Settings()
        settings.script_name = 'stark_s'
        settings.config_name = 'baseline'
        settings.env = env
        settings.cfg = cfg
        settings.datasets = DatasetList(['LASOT', 'GOT10K_vottrain', 'COCO17', 'TRACKINGNET'])
        settings.device = torch.device('cuda', 0)
        settings.local_rank = -1
        stats = OrderedDict()
        for phase in ('train', 'val'):
            meters = OrderedDict()
            for metric in ('Loss/total', 'Loss/giou', 'IoU'):
                meter = AverageMeter()
                meter.val, meter.avg, meter.sum, meter.count = 0.5, 0.4, 40.0, 100
                meters[metric] = meter
            stats[phase] = meters
        content = {
            'epoch': 500,
            'actor_type': 'STARKSActor',
            'net_type': 'STARKS',
            'net': OrderedDict(state_dict),
            'net_info': None,
            'constructor': None,
            'optimizer': real_adamw_state(),
            'stats': stats,
            'settings': settings,
        }
        torch.save(content, path)
        names = {f'{c.__module__}.{c.__qualname__}'
                 for c in (Settings, EnvironmentSettings, AverageMeter, EasyDict, DatasetList)}
    for name in FOREIGN_MODULES:
        assert name not in sys.modules
    return names


def assert_same_weights(network: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    loaded = network.state_dict()
    assert list(loaded) == list(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value), key


@pytest.fixture(scope='module')
def lite_state() -> dict[str, torch.Tensor]:
    """Weights of the small 'lite' network, distinct from a fresh build's (seeded)."""
    torch.manual_seed(0)
    network = load_model(variant='lite', allow_untrained=True).network
    with torch.no_grad():
        for value in network.state_dict().values():
            if value.is_floating_point():
                value.add_(torch.randn_like(value) * 0.01)
            else:
                value.fill_(7)  # num_batches_tracked
    return {k: v.clone() for k, v in network.state_dict().items()}


@pytest.fixture
def state_file(tmp_path, lite_state):
    """Write a (possibly edited) bare state dict and return its path."""
    def write(state: dict, name: str = 'weights.pth') -> Path:
        path = tmp_path / name
        torch.save(state, path)
        return path
    return write


# ----------------------------------------------------------------------------------------------
# Official model-zoo layout


def test_official_file_loads_without_importing_its_classes(tmp_path, lite_state):
    path = tmp_path / 'STARKS_ep0500.pth.tar'
    foreign = write_official(path, lite_state)
    with pytest.raises(pickle.UnpicklingError):  # sanity: the file really is not weights_only-loadable
        torch.load(path, weights_only=True)

    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == 'official'
    assert checkpoint.epoch == 500
    assert checkpoint.variant is None
    assert set(checkpoint.ignored_objects) == foreign
    assert list(checkpoint.state_dict) == list(lite_state)
    for name in FOREIGN_MODULES + ('lib', 'lib.train', 'lib.utils'):
        assert name not in sys.modules, f'loading imported {name}'

    model = load_model(path)
    assert model.checkpoint.kind == 'official'
    assert model.variant.variant == 'lite'  # inferred from the keys
    assert not model.network.training
    assert_same_weights(model.network, lite_state)
    assert 'official checkpoint' in model.describe()


def test_official_file_with_named_variant(tmp_path, lite_state):
    path = tmp_path / 'STARKST_ep0050.pth.tar'
    write_official(path, lite_state)
    model = load_model(path, variant='lite')
    assert_same_weights(model.network, lite_state)
    with pytest.raises(CheckpointError, match='do not fit the network'):
        load_model(path, variant='s50')


def test_infer_variant_from_the_lite_keys(lite_state):
    assert infer_variant(lite_state) == 'lite'


@pytest.mark.parametrize('variant', ['s50', 'st50', 'st101'])
def test_infer_variant_of_the_paper_variants(variant):
    with torch.device('meta'):  # the layout only: no memory, no initialisation cost
        state = build_network(load_variant(variant).model).state_dict()
    assert infer_variant(state) == variant
    # The official files have no step counters in the backbone and may lack them in the head.
    assert infer_variant({k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}) == variant


def test_infer_variant_of_the_original_s50_key_layout(shared_reference):
    path = shared_reference / 'parity' / 'keys_S50.json'
    if not path.is_file():
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{path} is missing')
        pytest.skip(f'{path} is absent')
    entries = json.loads(path.read_text())
    state = {key: torch.empty(shape, device='meta') for key, shape, _ in entries}
    assert infer_variant(state) == 's50'
    with torch.device('meta'):
        ours = build_network(load_variant('s50').model).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_infer_variant_refuses_an_unknown_layout(lite_state):
    odd = {k: v for k, v in lite_state.items() if not k.startswith('cls_head.')}  # lite without score head
    with pytest.raises(CheckpointError, match='cannot tell the model variant.*score head no'):
        infer_variant(odd)
    with pytest.raises(CheckpointError, match='backbone unknown'):
        infer_variant({'foo.weight': torch.zeros(1)})


# ----------------------------------------------------------------------------------------------
# Our own checkpoints and bare state dicts


def test_save_checkpoint_round_trip(tmp_path, lite_state):
    variant = load_variant('lite')
    variant = dataclasses.replace(variant, tracker=dataclasses.replace(
        variant.tracker, update_intervals={'default': 200, 'vot20': 10}, update_threshold=0.6))
    network = build_network(variant.model)
    load_weights(network, lite_state, 'fixture')
    path = save_checkpoint(tmp_path / 'run' / 'STARKST_ep0007.pth.tar', network, variant, epoch=7,
                           extra={'note': 'test'})
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == 'stark_ros'
    assert checkpoint.epoch == 7
    assert checkpoint.variant == variant
    assert checkpoint.ignored_objects == []

    plain = torch.load(path, weights_only=True)  # only tensors and plain data inside
    assert plain['net_type'] == 'STARKST'
    assert plain['stark_ros']['note'] == 'test'
    for key, value in lite_state.items():
        assert torch.equal(plain['net'][key], value), key

    model = load_model(path)
    assert model.variant == variant  # the embedded config wins over the YAML of the same name
    assert model.variant.tracker.update_interval('VOT20') == 10
    assert_same_weights(model.network, lite_state)


def test_bare_state_dict_loads(state_file, lite_state):
    path = state_file(lite_state)
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == 'state_dict'
    assert checkpoint.epoch is None and checkpoint.variant is None
    model = load_model(path)
    assert model.variant.variant == 'lite'
    assert_same_weights(model.network, lite_state)


def test_legacy_torch_format_loads(tmp_path, lite_state):
    path = tmp_path / 'legacy.pth'
    torch.save({'net': lite_state, 'epoch': 3}, path, _use_new_zipfile_serialization=False)
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == 'official' and checkpoint.epoch == 3
    assert_same_weights(load_model(path).network, lite_state)


def test_missing_step_counters_are_tolerated(state_file, lite_state):
    counters = [k for k in lite_state if k.endswith('.num_batches_tracked')]
    assert counters, 'the lite head has BatchNorm step counters'
    model = load_model(state_file({k: v for k, v in lite_state.items() if k not in counters}))
    fresh = build_network(load_variant('lite').model).state_dict()
    for key, value in model.network.state_dict().items():
        expected = fresh[key] if key in counters else lite_state[key]
        assert torch.equal(value, expected), key


# ----------------------------------------------------------------------------------------------
# Weights that do not fit


def test_missing_key_is_named(state_file, lite_state):
    key = 'box_head.conv1_tl.1.running_mean'
    state = {k: v for k, v in lite_state.items() if k != key}
    with pytest.raises(CheckpointError) as error:
        load_model(state_file(state), variant='lite')
    assert '1 missing' in str(error.value) and key in str(error.value)


def test_unexpected_key_is_named(state_file, lite_state):
    state = {**lite_state, 'transformer.encoder.norm.weight': torch.ones(128)}
    with pytest.raises(CheckpointError) as error:
        load_model(state_file(state), variant='lite')
    assert '1 unexpected' in str(error.value) and 'transformer.encoder.norm.weight' in str(error.value)


def test_wrong_shape_names_key_and_both_shapes(state_file, lite_state):
    key = 'query_embed.weight'
    state = {**lite_state, key: torch.zeros(2, 128)}
    with pytest.raises(CheckpointError) as error:
        load_model(state_file(state), variant='lite')
    message = str(error.value)
    assert 'wrong shape' in message and key in message
    assert '(2, 128)' in message and '(1, 128)' in message


def test_many_problems_are_summarised(state_file, lite_state):
    state = {k: v for k, v in lite_state.items() if not k.startswith('transformer.')}
    with pytest.raises(CheckpointError, match=r'missing: .*more\)'):
        load_model(state_file(state), variant='lite')


# ----------------------------------------------------------------------------------------------
# Files that are not checkpoints


def zip_without_torch(path: Path) -> None:
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('weights/readme.txt', 'not a torch file')


BROKEN_FILES = {
    'truncated': (lambda path, valid: path.write_bytes(valid.read_bytes()[:valid.stat().st_size // 2]),
                  'truncated or corrupt'),
    'random bytes': (lambda path, valid: path.write_bytes(random.Random(5).randbytes(4096)),
                     'not a readable PyTorch file'),
    'empty': (lambda path, valid: path.write_bytes(b''), 'is empty'),
    'zip, not torch': (lambda path, valid: zip_without_torch(path), 'not a readable PyTorch file'),
    'text': (lambda path, valid: path.write_text('net: weights\n'), 'not a readable PyTorch file'),
}


@pytest.mark.parametrize('case', BROKEN_FILES)
def test_broken_file_is_reported(case, tmp_path, state_file, lite_state):
    valid = state_file(lite_state)
    path = tmp_path / 'broken.pth.tar'
    make, fragment = BROKEN_FILES[case]
    make(path, valid)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert fragment in str(error.value) and str(path) in str(error.value)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_random_bytes_never_escape_as_other_errors(tmp_path):
    # Random data once escaped as OverflowError/MemoryError from absurd pickle length fields.
    path = tmp_path / 'noise.pth'
    rng = random.Random(0)
    for seed in range(300):
        header = b'\x80\x02' if seed % 2 else b''
        path.write_bytes(header + rng.randbytes(rng.choice([1, 9, 200])))
        with pytest.raises(CheckpointError):
            read_checkpoint(path)
    # Length fields asking for 2**62 bytes: FRAME and BINBYTES8.
    for data in (b'\x80\x04\x95' + (2 ** 62).to_bytes(8, 'little'),
                 b'\x80\x04\x8e' + (2 ** 62).to_bytes(8, 'little')):
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match='not a readable PyTorch file'):
            read_checkpoint(path)


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match='is not a file'):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match='does not exist'):
        read_checkpoint(tmp_path / 'nowhere.pth.tar')
    with pytest.raises(CheckpointError, match='does not exist'):
        load_model(tmp_path / 'nowhere.pth.tar')


def test_file_without_weights_lists_its_keys(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'model_state': {'layer': [1, 2]}, 'epoch': 3, 'args': 'x'}, path)
    with pytest.raises(CheckpointError, match=r'no "net" entry.*top-level keys: args, epoch, model_state'):
        read_checkpoint(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match='holds a list, not a dict'):
        read_checkpoint(path)


def test_plain_pickle_is_not_a_torch_file(tmp_path, lite_state):
    path = tmp_path / 'plain.pkl'
    with open(path, 'wb') as file:
        pickle.dump({'net': {'a': 1}}, file)
    with pytest.raises(CheckpointError, match='not a readable PyTorch file'):
        read_checkpoint(path)


def test_non_tensor_value_is_named(tmp_path, lite_state):
    path = tmp_path / 'bad.pth'
    torch.save({**lite_state, 'meta_info': 'v2'}, path)
    with pytest.raises(CheckpointError, match=r"\['meta_info'\] is a str, not a tensor"):
        read_checkpoint(path)
    torch.save({'net': {**lite_state, 'query_embed.weight': [0.0] * 128}, 'epoch': 1}, path)
    with pytest.raises(CheckpointError, match=r"\['net'\]\['query_embed.weight'\] is a list, not a tensor"):
        read_checkpoint(path)
    torch.save({'net': [1, 2]}, path)
    with pytest.raises(CheckpointError, match=r"\['net'\] is not a state dict \(got list\)"):
        read_checkpoint(path)


@pytest.mark.parametrize('section,key', [('model', 'hidden_size'), ('tracker', 'search_scale'), ('', 'author')])
def test_embedded_config_with_bad_key(tmp_path, lite_state, section, key):
    config = load_variant('lite').to_dict()
    (config[section] if section else config)[key] = 1
    path = tmp_path / 'ours.pth.tar'
    torch.save({'net': lite_state, 'stark_ros': {'format': 1, 'variant': config}}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert f'unknown key {section + "." if section else ""}{key}' in str(error.value)
    assert 'embedded config' in str(error.value)


def test_embedded_config_with_bad_value(tmp_path, lite_state):
    config = load_variant('lite').to_dict()
    config['model']['hidden_dim'] = 'wide'
    path = tmp_path / 'ours.pth.tar'
    torch.save({'net': lite_state, 'stark_ros': {'format': 1, 'variant': config}}, path)
    with pytest.raises(CheckpointError, match="model.hidden_dim must be int, got 'wide'"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------------------------
# Files that would run code


class _Payload:
    """Its unpickling calls `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(marker: Path):
    touch = f'open({str(marker)!r}, "w").close()'
    return {
        'os.system': (_Payload(os.system, f'touch {marker}'), f'{os.system.__module__}.system'),
        'subprocess.call': (_Payload(subprocess.call, ['touch', str(marker)]), 'subprocess.call'),
        'subprocess.Popen': (_Payload(subprocess.Popen, ['touch', str(marker)]), 'subprocess.Popen'),
        'builtins.eval': (_Payload(builtins.eval, touch), 'builtins.eval'),
        'builtins.exec': (_Payload(builtins.exec, touch), 'builtins.exec'),
        'os.popen': (_Payload(os.popen, f'touch {marker}'), 'os.popen'),
    }


@pytest.mark.parametrize('container', ['pickle.dump', 'torch.save', 'torch.save legacy'])
@pytest.mark.parametrize('payload', list(_payloads(Path('/x'))))
def test_code_running_pickle_is_refused(tmp_path, lite_state, container, payload):
    marker = tmp_path / 'marker'
    evil, global_name = _payloads(marker)[payload]
    path = tmp_path / 'evil.pth.tar'
    if container == 'pickle.dump':
        with open(path, 'wb') as file:
            pickle.dump(evil, file)
    else:
        content = {'net': lite_state, 'epoch': 1, 'settings': evil}
        torch.save(content, path, _use_new_zipfile_serialization=container == 'torch.save')
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert 'refusing' in str(error.value) and global_name in str(error.value)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_python2_global_names_resolve_like_a_normal_unpickler(tmp_path, lite_state):
    # torch.save writes protocol 2: set is '__builtin__ set' and subprocess.call 'commands call'.
    # Allowed builtins must still be recognised (not turned into placeholders) ...
    path = tmp_path / 'plain_data.pth'
    torch.save({'net': lite_state, 'epoch': 1, 'settings': {'tags': {'a', 'b'}, 'z': complex(1, 2),
                                                            'raw': bytearray(b'xy')}}, path)
    assert read_checkpoint(path).ignored_objects == []
    # ... and Python 2 spellings of code-running functions are refused under their real name.
    with open(path, 'wb') as file:
        file.write(b'\x80\x02ccommands\ncall\nq\x00]q\x01X\x04\x00\x00\x00trueq\x02a\x85q\x03Rq\x04.')
    with pytest.raises(CheckpointError, match=r'refusing .*subprocess\.call'):
        read_checkpoint(path)


def test_foreign_function_is_neither_imported_nor_called(tmp_path, lite_state, monkeypatch):
    name = 'stark_test_fake_plugin'
    import_marker, call_marker = tmp_path / 'imported', tmp_path / 'called'
    # The module exists on disk and on sys.path while loading: importing it would leave a marker.
    plugin_dir = tmp_path / 'plugins'
    plugin_dir.mkdir()
    (plugin_dir / f'{name}.py').write_text(
        f'open({str(import_marker)!r}, "w").close()\n'
        'def touch(path):\n    open(path, "w").close()\n')
    with foreign_modules(name) as mods:
        def touch(path):
            open(path, 'w').close()
        touch.__module__, touch.__qualname__ = name, 'touch'
        mods[name].touch = touch
        path = tmp_path / 'STARKS_ep0500.pth.tar'
        torch.save({'net': lite_state, 'epoch': 500, 'settings': _Payload(touch, str(call_marker))}, path)
    assert name not in sys.modules
    monkeypatch.syspath_prepend(str(plugin_dir))

    checkpoint = read_checkpoint(path)
    assert f'{name}.touch' in checkpoint.ignored_objects
    assert checkpoint.kind == 'official'
    assert name not in sys.modules
    assert not import_marker.exists() and not call_marker.exists()


def test_foreign_object_inside_the_weights_is_refused(tmp_path, lite_state):
    with foreign_modules('lib.models.fake') as mods:
        Tensorish = foreign_class(mods['lib.models.fake'], 'Tensorish')
        path = tmp_path / 'odd.pth'
        torch.save({'net': {**lite_state, 'query_embed.weight': Tensorish()}}, path)
    with pytest.raises(CheckpointError, match=r"\['query_embed.weight'\] is a Tensorish, not a tensor"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------------------------
# torchvision ImageNet weights for the backbone


class _BackboneOnly(nn.Module):
    """Just what load_torchvision_resnet touches (network.backbone[0].body), without the rest."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone = BackboneWithPosition(name, 256)


def torchvision_resnet50_state() -> dict[str, torch.Tensor]:
    """A state dict in torchvision's resnet50 layout: our body's keys plus BatchNorm step counters,
    layer4 and fc (torchvision itself is not installed)."""
    generator = torch.Generator().manual_seed(3)
    body = BackboneWithPosition('resnet101', 256)[0].body  # layer3 of ResNet-101 is a superset
    state = {}
    for key, value in body.state_dict().items():
        if key.startswith('layer3.') and int(key.split('.')[1]) >= 6:
            continue
        state[key] = torch.randn(value.shape, generator=generator)
        if key.endswith('.running_var'):
            state[key] = state[key].abs() + 0.1
            state[key[:-len('running_var')] + 'num_batches_tracked'] = torch.tensor(1000)
    for block in range(3):
        in_channels = 1024 if block == 0 else 2048
        state[f'layer4.{block}.conv1.weight'] = torch.randn(512, in_channels, 1, 1, generator=generator)
        for part in ('weight', 'bias', 'running_mean', 'running_var'):
            state[f'layer4.{block}.bn1.{part}'] = torch.randn(512, generator=generator)
        state[f'layer4.{block}.bn1.num_batches_tracked'] = torch.tensor(1000)
    state['layer4.0.downsample.0.weight'] = torch.randn(2048, 1024, 1, 1, generator=generator)
    state['fc.weight'] = torch.randn(1000, 2048, generator=generator)
    state['fc.bias'] = torch.randn(1000, generator=generator)
    return state


def test_torchvision_resnet_loads_into_the_backbone():
    state = torchvision_resnet50_state()
    network = _BackboneOnly('resnet50')
    load_torchvision_resnet(network, state, 'resnet50-imagenet.pth')
    body = network.backbone[0].body.state_dict()
    assert body, 'the body has weights'
    for key, value in body.items():
        assert torch.equal(value, state[key]), key


def test_torchvision_resnet_problems_are_reported():
    state = torchvision_resnet50_state()
    network = _BackboneOnly('resnet50')
    bad = {**state, 'layer2.0.conv1.weight': torch.zeros(128, 256, 3, 3)}
    with pytest.raises(CheckpointError, match=r'resnet50-imagenet.pth.*wrong shape: layer2.0.conv1.weight '
                                              r'\(128, 256, 3, 3\) \(network expects \(128, 256, 1, 1\)\)'):
        load_torchvision_resnet(network, bad, 'resnet50-imagenet.pth')
    missing = {k: v for k, v in state.items() if k != 'layer3.5.bn3.running_mean'}
    with pytest.raises(CheckpointError, match=r'1 missing: layer3.5.bn3.running_mean'):
        load_torchvision_resnet(network, missing, 'resnet50-imagenet.pth')
    # ResNet-101 weights carry layer3.6..22: they must not load silently into a ResNet-50.
    deeper = {**state, 'layer3.6.conv1.weight': torch.zeros(256, 1024, 1, 1)}
    with pytest.raises(CheckpointError, match=r'1 unexpected: layer3.6.conv1.weight'):
        load_torchvision_resnet(network, deeper, 'resnet101-imagenet.pth')
    with pytest.raises(CheckpointError, match='unexpected.*wrong shape'):  # ResNet-50 weights into ResNet-18
        load_torchvision_resnet(_BackboneOnly('resnet18'), state, 'resnet50-imagenet.pth')
