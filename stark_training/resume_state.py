"""What exact resumption needs besides the weights, as plain data that the safe loader reads back.

Random-generator states become tensors, lists and numbers (never pickled Python objects), so the
resume file loads through stark_model.read_checkpoint, which executes nothing from the file; a
state that holds anything else (an object the loader replaced by a placeholder) is refused.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

from stark_model.checkpoint import CheckpointError

PLAIN_SCALARS = (bool, int, float, str, bytes, type(None))


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states as plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        'python': {'version': version, 'state': list(internal), 'gauss': gauss},
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'position': int(position),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
        # The current device's only: each process drives one GPU (and touching others would
        # create a CUDA context on every GPU from every process).
        'cuda': [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what capture_rng_state returned."""
    python = state['python']
    random.setstate((python['version'], tuple(python['state']), python['gauss']))
    numpy = state['numpy']
    np.random.set_state((numpy['kind'], numpy['keys'].numpy().astype(np.uint32), numpy['position'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'][0])


def check_plain(value: Any, path: str, where: str = 'training state') -> None:
    """CheckpointError unless `value` is tensors, numbers, strings and lists/dicts of them."""
    if isinstance(value, torch.Tensor) or isinstance(value, PLAIN_SCALARS):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, PLAIN_SCALARS):
                raise CheckpointError(f'{path}: {where} has a key of type {type(key).__name__}')
            check_plain(item, path, f'{where}[{key!r}]')
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, path, f'{where}[{index}]')
        return
    raise CheckpointError(f'{path}: {where} holds a {type(value).__name__} ({value!r}), which a resume '
                          'state never contains: not a file this trainer wrote')
