"""Hostile files for tests of every path that loads a checkpoint (read_checkpoint, load_model, the
node's model.checkpoint parameter, training resume, evaluation).

`write_torchscript_bomb(path, marker)` writes a real TorchScript archive whose loading creates the
file `marker`: the module's __setstate__, which torch.jit.load runs while unpickling, maps `marker`
as shared memory (torch.from_file(..., shared=True) creates the file). A loader is safe when the
marker never appears. Import it from any test as `from hostile_files import write_torchscript_bomb`
(pytest puts test/ on sys.path, test/ having no __init__.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import torch
from torch import nn


class _Bomb(nn.Module):
    """Looks like weights; its __setstate__ (compiled into the archive) touches the marker file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return self.marker, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.marker = state[0]
        # shared=True creates the file; the result feeds the weight so the compiler keeps the call.
        touched = torch.from_file(self.marker, True, 1, dtype=torch.uint8)
        self.weight = state[1] + touched.float().sum() * 0.0
        self.training = state[2]


def write_torchscript_bomb(path: str | os.PathLike, marker: str | os.PathLike) -> Path:
    """Write a TorchScript archive to `path` whose loading (torch.jit.load, or torch.load, which
    dispatches to it) creates the file `marker`; `marker` itself is not created here."""
    path, marker = Path(path), Path(marker).resolve()
    scripted = torch.jit.script(_Bomb(str(marker)))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path))
    marker.unlink(missing_ok=True)  # scripting may run __getstate__ only, but make sure
    return path


def bomb_goes_off(path: str | os.PathLike, marker: str | os.PathLike, loader: str = 'torch.jit.load') -> bool:
    """Whether loading `path` with plain `loader` ('torch.jit.load' or 'torch.load') in a fresh
    Python process creates `marker`: the proof that a bomb is real."""
    call = {'torch.jit.load': 'torch.jit.load(sys.argv[1])',
            'torch.load': 'torch.load(sys.argv[1], weights_only=False)'}[loader]
    subprocess.run([sys.executable, '-c', f'import sys, torch; {call}', str(path)], check=True,
                   capture_output=True, timeout=120)
    return Path(marker).exists()
