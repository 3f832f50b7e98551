"""Reading and writing STARK checkpoints safely.

Accepted files: the official model zoo's `.pth.tar` (weights under 'net', next to pickled training
objects), our own checkpoints (same layout plus the embedded variant config), and bare state dicts.
Unpickling never imports or calls anything outside PyTorch's own allow-list of tensor-rebuilding
functions: every other class in the file (the original's training settings, say) is replaced by an
inert placeholder, and a file that names a code-running function (os.system, eval, ...) is refused.
Before torch sees a file its format is checked: only torch.save's zip archive (holding exactly the
entries torch.save writes) and its legacy pickle format pass. TorchScript archives, which torch.load
would hand to torch.jit.load and so run the code inside, are refused, as is the tar format of very old
PyTorch. A SHA-256 can pin the file (read_checkpoint(path, sha256=...)); it is checked before unpickling.
Weights load strictly: any missing, unexpected or misshaped key is an error that names it.
"""
from __future__ import annotations

import _compat_pickle
import hashlib
import io
import os
import pickle
import re
import struct
import types
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import torch
from torch import nn

from .config import ConfigError, VariantConfig, load_variant, variant_from_dict

# Modules whose functions run code or touch the system when called by the unpickler.
CODE_RUNNING_MODULES = frozenset({
    'os', 'posix', 'nt', 'sys', 'subprocess', 'builtins', '__builtin__', 'shutil', 'socket',
    'importlib', 'runpy', 'pty', 'code', 'codeop', 'ctypes', 'multiprocessing', 'pickle', '_pickle',
    'marshal', 'types', 'operator', 'functools', 'webbrowser', 'signal', 'threading', 'asyncio',
})
OURS_KEY = 'stark_ros'
FORMAT_VERSION = 1
# A step counter of BatchNorm: unused in evaluation, and left out of the parity weights.
OPTIONAL_KEY_SUFFIX = '.num_batches_tracked'
# Parts of a torchvision ResNet after layer3, which the stride-16 body does not have.
TORCHVISION_SKIPPED = ('layer4.', 'fc.')


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and what is wrong with it."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, once read safely."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str  # 'official', 'stark_ros' or 'state_dict'
    variant: VariantConfig | None = None  # embedded in our own checkpoints
    epoch: int | None = None
    ignored_objects: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # our files: what save_checkpoint(extra=...) stored


class _RefusedGlobal(pickle.UnpicklingError):
    """The file names a function that could run code; kept apart from plain corruption."""


class _Inert:
    """Stands in for an object of a class the loader will not import; it keeps and runs nothing."""

    qualified_name = '?'

    def __new__(cls, *args: Any, **kwargs: Any) -> '_Inert':
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f'<ignored {self.qualified_name}>'


def _restricted_pickle_module(ignored: list[str]) -> types.SimpleNamespace:
    """A pickle-module stand-in for torch.load whose unpickler resolves only PyTorch's allow-list."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = _get_allowed_globals()
    placeholders: dict[str, type] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # torch.save writes protocol 2, whose globals use Python 2 names (__builtin__.set,
            # commands.call = subprocess.call): judge the name a normal unpickler would resolve.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            qualified = f'{module}.{name}'
            if qualified in allowed:
                return allowed[qualified]
            if module.split('.')[0] in CODE_RUNNING_MODULES:
                raise _RefusedGlobal(f'it refers to {qualified}, which could run code when unpickled')
            if qualified not in placeholders:
                placeholders[qualified] = type(name, (_Inert,), {'qualified_name': qualified})
                ignored.append(qualified)
            return placeholders[qualified]

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__='stark_model.restricted_pickle', Unpickler=RestrictedUnpickler,
                                 load=load, UnpicklingError=pickle.UnpicklingError)


# Entries of a torch.save zip archive, below its one top-level folder. Everything else (TorchScript's
# code/ and constants.pkl above all: torch.load hands such archives to torch.jit.load, which runs
# the code inside) is refused before torch sees the file.
TORCH_SAVE_ENTRY = re.compile(r'data\.pkl|data/\d+|version|byteorder|\.format_version|\.storage_alignment'
                              r'|\.data/serialization_id|\.data/version')
TORCHSCRIPT_ENTRY = re.compile(r'code/.*|constants\.pkl|extra/.*|\.data/.*\.pkl')
PICKLE_PROTOCOL_OPCODE = 0x80  # a pickle of protocol 2 or later starts with it (torch.save's legacy format)
SHA256_DIGITS = re.compile(r'[0-9a-fA-F]{64}')


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hexadecimal digits."""
    with open(path, 'rb') as file:
        return _sha256_of(file)


def hash_weights(digest: Any, module: nn.Module) -> None:
    """Feed every state-dict entry of `module` (name and tensor bytes, in order) to `digest`."""
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


def _sha256_of(file: BinaryIO) -> str:
    file.seek(0)
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b''):
        digest.update(block)
    return digest.hexdigest()


def _check_sha256(file: BinaryIO, path: Path, expected: str) -> None:
    if not isinstance(expected, str) or not SHA256_DIGITS.fullmatch(expected.strip()):
        raise CheckpointError(f'the sha256 pinned for checkpoint {path} ({expected!r}) is not 64 '
                              'hexadecimal digits')
    actual = _sha256_of(file)
    if actual != expected.strip().lower():
        raise CheckpointError(f'checkpoint {path} has sha256 {actual}, but {expected.strip().lower()} is '
                              'expected: it is not the pinned file (replaced, modified or corrupt)')


def _check_zip_entries(file: BinaryIO, path: Path) -> None:
    """Refuse a zip archive that is not a plain torch.save archive, naming the entries that show it."""
    file.seek(0)
    try:
        names = zipfile.ZipFile(file).namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise CheckpointError(f'checkpoint {path} is truncated or corrupt (broken zip archive: {error})') from None
    folders = {name.split('/', 1)[0] for name in names}
    inner = [name.split('/', 1)[1] if '/' in name else '' for name in names]
    if len(folders) != 1 or 'data.pkl' not in inner:
        shown = ', '.join(names[:5]) + (f', ... ({len(names) - 5} more)' if len(names) > 5 else '')
        raise CheckpointError(f'checkpoint {path} is not a readable PyTorch file: a zip archive, but not one '
                              f'written by torch.save (no <folder>/data.pkl; entries: {shown or "none"})')
    script = [name for name, entry in zip(names, inner) if TORCHSCRIPT_ENTRY.fullmatch(entry)]
    if script:
        raise CheckpointError(f'refusing checkpoint {path}: it is a TorchScript archive (it holds '
                              f'{", ".join(script[:3])}), and loading one runs the code inside it; '
                              'give the weights as saved by torch.save (a state dict or a training checkpoint)')
    unknown = [name for name, entry in zip(names, inner) if not TORCH_SAVE_ENTRY.fullmatch(entry)]
    if unknown:
        raise CheckpointError(f'refusing checkpoint {path}: its zip archive holds entries that a torch.save '
                              f'file does not ({", ".join(unknown[:3])}), so it may be more than tensors')


def _check_format(file: BinaryIO, path: Path) -> None:
    """Let through only torch.save's zip format and its legacy pickle format, before torch sees the file."""
    head = file.read(512)
    if not head:
        raise CheckpointError(f'checkpoint {path} is empty')
    if head.startswith(b'PK'):
        file.seek(0)
        if not zipfile.is_zipfile(file):
            raise CheckpointError(f'checkpoint {path} is truncated or corrupt (broken zip archive)')
        _check_zip_entries(file, path)
    elif head[0] == PICKLE_PROTOCOL_OPCODE:
        return  # the legacy format: pickles, read by the restricted unpickler below
    elif len(head) == 512 and _is_tar_header(head):
        raise CheckpointError(f'refusing checkpoint {path}: it is in the tar format of very old PyTorch '
                              'versions, which is not supported; load it with that PyTorch and save it again '
                              'with torch.save')
    else:
        raise CheckpointError(f'checkpoint {path} is not a readable PyTorch file: neither a torch.save zip '
                              f'archive nor a pickle (it starts with {head[:8]!r})')


def _is_tar_header(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header: its checksum field matches its bytes."""
    try:
        recorded = int(block[148:156].rstrip(b' \0').decode('ascii') or '-1', 8)
    except ValueError:
        return False
    return recorded == sum(block[:148]) + 8 * 32 + sum(block[156:])


def safe_torch_load(path: Path, ignored: list[str], sha256: str | None = None) -> Any:
    """The content of a torch file, read only after its format is checked (and its sha256, when
    given) and through the restricted unpickler; foreign classes named in `ignored`."""
    try:
        file = open(path, 'rb')
    except OSError as error:
        raise CheckpointError(f'cannot read checkpoint {path}: {error.strerror}') from None
    # One open file throughout: what was inspected and hashed is what gets unpickled, even if the
    # path is replaced meanwhile.
    with file:
        if sha256 is not None:
            _check_sha256(file, path, sha256)
        file.seek(0)
        _check_format(file, path)
        file.seek(0)
        try:
            return torch.load(file, map_location='cpu', weights_only=False,
                              pickle_module=_restricted_pickle_module(ignored))
        except _RefusedGlobal as error:
            raise CheckpointError(f'refusing checkpoint {path}: {error}') from None
        except MemoryError:
            # Corrupt length fields ask the unpickler for absurd buffers.
            raise CheckpointError(f'checkpoint {path} is not a readable PyTorch file: reading it asked for more '
                                  'memory than there is (corrupt length field, or too little RAM)') from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, TypeError,
                KeyError, AttributeError, IndexError, OverflowError, struct.error) as error:
            raise CheckpointError(f'checkpoint {path} is not a readable PyTorch file '
                                  f'(truncated, corrupt or another format): {type(error).__name__}: {error}'
                                  ) from None


def _as_state_dict(candidate: Any, path: Path, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(candidate, Mapping) or not candidate:
        raise CheckpointError(f'checkpoint {path}: {where} is not a state dict (got {type(candidate).__name__})')
    for key, value in candidate.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f'checkpoint {path}: {where}[{key!r}] is a {type(value).__name__}, '
                                  'not a tensor')
    return dict(candidate)


def read_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> Checkpoint:
    """Read a checkpoint file safely; see the module docstring for the accepted layouts.

    sha256: when given, the file's SHA-256 (hex digits) must equal it; checked before unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist' if not path.exists()
                              else f'checkpoint {path} is not a file')
    ignored: list[str] = []
    content = safe_torch_load(path, ignored, sha256)
    if not isinstance(content, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(content).__name__}, not a dict of weights')
    if 'net' in content:
        ours = content.get(OURS_KEY)
        variant = None
        if isinstance(ours, Mapping) and 'variant' in ours:
            try:
                variant = variant_from_dict(ours['variant'], f'{path} (embedded config)')
            except ConfigError as error:
                raise CheckpointError(str(error)) from None
        epoch = content.get('epoch')
        extra = {k: v for k, v in ours.items() if k not in ('format', 'variant')} if variant else {}
        return Checkpoint(path, _as_state_dict(content['net'], path, "['net']"),
                          'stark_ros' if variant else 'official', variant,
                          epoch if isinstance(epoch, int) else None, ignored, extra)
    if any(isinstance(v, torch.Tensor) for v in content.values()):
        # Tensors at the top level: a bare state dict, whose non-tensor entries get named.
        return Checkpoint(path, _as_state_dict(content, path, 'the file'), 'state_dict', ignored_objects=ignored)
    keys = ', '.join(sorted(map(str, content))[:12])
    raise CheckpointError(f'checkpoint {path} holds no STARK weights: no "net" entry and not a state '
                          f'dict (top-level keys: {keys})')


def _block_count(state_dict: Mapping[str, torch.Tensor], layer: str) -> int:
    prefix = f'backbone.0.body.{layer}.'
    indices = {int(key[len(prefix):].split('.', 1)[0]) for key in state_dict if key.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def infer_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The variant name whose network has this state dict's layout (backbone depth, score head)."""
    bottleneck = 'backbone.0.body.layer1.0.conv3.weight' in state_dict
    blocks = _block_count(state_dict, 'layer3')
    score_head = any(key.startswith('cls_head.') for key in state_dict)
    backbone = {(True, 6): 'resnet50', (True, 23): 'resnet101', (False, 2): 'resnet18'}.get((bottleneck, blocks))
    if 'backbone.0.body._conv_stem.weight' in state_dict:
        backbone = 'efficientnet_lite0'
    if 'backbone.0.body.stem.0.weight' in state_dict:
        backbone = 'nanotrack_v2'
    query = state_dict.get('query_embed.weight')
    hidden = int(query.shape[-1]) if query is not None and query.dim() == 2 else None
    for name in ('s50', 'st50', 'st101', 'lite', 'lite_effnet', 'lite_nano'):
        model = load_variant(name).model
        if (model.backbone, model.score_head, model.hidden_dim) == (backbone, score_head, hidden):
            return name
    raise CheckpointError(
        f'cannot tell the model variant from the weights (backbone {backbone or "unknown"} with '
        f'{blocks} layer3 blocks, score head {"yes" if score_head else "no"}, hidden size {hidden}); '
        'name it explicitly (variant=...)')


def load_weights(network: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy weights into `network`, refusing any missing, unexpected or misshaped entry."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(OPTIONAL_KEY_SUFFIX)]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f'{k} {tuple(v.shape)} (network expects {tuple(expected[k].shape)})'
                 for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    problems = []
    for label, keys in (('missing', missing), ('unexpected', unexpected), ('wrong shape', misshaped)):
        if keys:
            shown = '; '.join(keys[:8]) + (f'; ... ({len(keys) - 8} more)' if len(keys) > 8 else '')
            problems.append(f'{len(keys)} {label}: {shown}')
    if problems:
        raise CheckpointError(f'weights from {source} do not fit the network: ' + ' | '.join(problems))
    complete = dict(state_dict)
    for key in expected:
        complete.setdefault(key, expected[key])  # only optional step counters get here
    network.load_state_dict(complete, strict=True)


def save_checkpoint(path: str | os.PathLike, network: nn.Module, variant: VariantConfig,
                    epoch: int | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write weights in the official layout ('net', 'epoch', 'net_type') plus our variant config.

    The file holds only tensors and plain data, so it also loads with torch.load(weights_only=True).
    It is written to a temporary file first, so an interrupted save never leaves a broken file.
    """
    path = Path(path)
    content = {
        'net': {k: v.detach().cpu() for k, v in network.state_dict().items()},
        'net_type': 'STARKST' if variant.model.score_head else 'STARKS',
        'epoch': epoch,
        OURS_KEY: {'format': FORMAT_VERSION, 'variant': variant.to_dict(), **(extra or {})},
    }
    atomic_torch_save(content, path)
    return path


def atomic_torch_save(content: Any, path: str | os.PathLike) -> None:
    """torch.save through a temporary file in the same folder, so an interrupted save never
    leaves a broken file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened exclusively, not mkstemp: mkstemp's files are private (0600), this one
    # gets the mode any other written file gets.
    temporary = path.with_name(f'.{path.name}.{uuid.uuid4().hex}')
    try:
        with open(temporary, 'xb') as file:
            buffer = io.BytesIO()
            torch.save(content, buffer)
            file.write(buffer.getbuffer())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_torchvision_resnet(network: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Initialise the backbone from torchvision ImageNet weights (conv1.weight, layer1.0..., fc...):
    layers the cut network lacks (layer4, fc) are skipped; every remaining backbone key must fit."""
    body = network.backbone[0].body
    # Skip by name, not by "whatever the body lacks": a deeper ResNet's extra layer3 blocks must not
    # be dropped silently (ResNet-101 weights would otherwise load into a ResNet-50).
    load_weights(body, {k: v for k, v in state_dict.items()
                        if not k.startswith(TORCHVISION_SKIPPED) and not k.endswith(OPTIONAL_KEY_SUFFIX)},
                 source)
