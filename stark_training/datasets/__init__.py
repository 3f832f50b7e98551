"""Dataset readers for the standard on-disk layouts, and open_dataset(name, root) to pick one by name."""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from .base import DatasetError, Sequence, SequenceDataset

# name -> (module, class); modules are imported on use so a reader's import cost is paid only when used.
READERS = {
    'lasot': ('lasot', 'LaSOT'),
    'got10k': ('got10k', 'GOT10k'),
    'trackingnet': ('trackingnet', 'TrackingNet'),
    'coco': ('coco', 'COCO'),
    'vos': ('vos', 'VOS'),
    'davis': ('vos', 'VOS'),
    'youtube_vos': ('vos', 'VOS'),
    'folder': ('folder', 'FrameFolder'),
    'otb': ('otb', 'OTB'),
    'uav123': ('uav123', 'UAV123'),
    'nfs': ('nfs', 'NfS'),
    'synthetic': ('synthetic', 'SyntheticDataset'),
    'photos': ('.photo_sequences', 'photo_sequences'),
}


def open_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> SequenceDataset:
    """The reader called `name` (see READERS) on `root` with reader options; ValueError for an
    unknown name, DatasetError for missing or malformed files."""
    key = name.lower().replace('-', '').replace(' ', '')
    key = {'youtubevos': 'youtube_vos', 'got10k': 'got10k'}.get(key, key)
    if key not in READERS:
        raise ValueError(f'unknown dataset {name!r} (known: {", ".join(sorted(READERS))})')
    module_name, class_name = READERS[key]
    reader = getattr(importlib.import_module(f'.{module_name}', __name__), class_name)
    accepted = [p for p in inspect.signature(reader).parameters if p != 'root']
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f'dataset {name!r} has no option {unknown[0]!r} (options: {", ".join(accepted)})')
    if key == 'youtube_vos':
        kwargs.setdefault('resolution', None)
    if key == 'synthetic':
        return reader(**kwargs)
    if root is None:
        raise ValueError(f'dataset {name!r} needs a root folder')
    return reader(root, **kwargs)


__all__ = ['DatasetError', 'Sequence', 'SequenceDataset', 'open_dataset', 'READERS']
