"""A disk cache for built artefacts (ONNX graphs, TensorRT engines) keyed by what they depend on.

Each entry is `<name>-<key hash>.bin` with a `.json` beside it naming the key's parts. A different
key (new weights, another GPU, another TensorRT version) is a different file, so a stale artefact is
never loaded; older entries of the same name are deleted when a new one is written. A file that
cannot be loaded (truncated, corrupt) is rebuilt with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar('T')


def default_cache_dir() -> Path:
    """$STARK_CACHE_DIR, else $XDG_CACHE_HOME/stark_ros, else ~/.cache/stark_ros."""
    if os.environ.get('STARK_CACHE_DIR'):
        return Path(os.environ['STARK_CACHE_DIR'])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'stark_ros'


def key_hash(key: Mapping[str, str]) -> str:
    """A short stable hash of the key's parts (order-independent)."""
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]


class ArtifactCache:
    """Build-once storage for bytes that take long to make."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, name: str, key: Mapping[str, str]) -> Path:
        return self.directory / f'{name}-{key_hash(key)}.bin'

    def load_or_build(self, name: str, key: Mapping[str, str], build: Callable[[], bytes],
                      load: Callable[[bytes], T]) -> T:
        """load(cached bytes) when an entry for (name, key) exists and loads; else build, store, load."""
        path = self.path(name, key)
        if path.is_file():
            try:
                return load(path.read_bytes())
            except Exception as error:  # noqa: BLE001 - any failure to load means: rebuild it
                warnings.warn(f'{path}: cached {name} cannot be loaded ({type(error).__name__}: {error}); '
                              'rebuilding it', RuntimeWarning, stacklevel=2)
        data = build()
        self._store(path, name, key, data)
        return load(data)

    def _store(self, path: Path, name: str, key: Mapping[str, str], data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f'{name}-*.bin'):
            if stale != path:
                stale.unlink(missing_ok=True)
                stale.with_suffix('.json').unlink(missing_ok=True)
        # Write then rename: a crash mid-write leaves no half file under the final name.
        partial = path.with_suffix(f'.partial{os.getpid()}')
        partial.write_bytes(data)
        os.replace(partial, path)
        path.with_suffix('.json').write_text(json.dumps(dict(key), indent=1, sort_keys=True) + '\n')
