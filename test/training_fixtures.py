"""Shared pieces of the trainer tests: a tiny STARK variant and training configs, written to disk in
the real formats (variant YAML, training YAML) that stark-train reads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# ResNet-18 body, a 32-wide single-layer transformer, 64/128 px crops: a few hundred ms per step.
TINY_VARIANT = {
    'variant': 'tiny',
    'model': {'backbone': 'resnet18', 'hidden_dim': 32, 'encoder_layers': 1, 'decoder_layers': 1, 'heads': 2,
              'feedforward_dim': 64, 'dropout': 0.1, 'num_queries': 1, 'head_channels': 16, 'score_head': True},
    'tracker': {'template_factor': 2.0, 'template_size': 64, 'search_factor': 5.0, 'search_size': 128,
                'dynamic_template': True},
}


def write_variant(folder: Path, dropout: float = 0.1, template_size: int = 64, search_size: int = 128) -> Path:
    """The tiny variant as a variant YAML file."""
    variant = {**TINY_VARIANT, 'model': {**TINY_VARIANT['model'], 'dropout': dropout},
               'tracker': {**TINY_VARIANT['tracker'], 'template_size': template_size, 'search_size': search_size}}
    path = folder / 'tiny_variant.yaml'
    path.write_text(yaml.safe_dump(variant))
    return path


def training_config(folder: Path, dropout: float = 0.1, samples: int = 16, crops: tuple[int, int] = (64, 128),
                    **train: Any) -> dict[str, Any]:
    """A training config (as YAML data) on in-memory synthetic videos with the tiny variant."""
    return {
        'model': {'variant': str(write_variant(folder, dropout, *crops)), 'from_scratch': True},
        'data': {'train': {'datasets': [{'name': 'synthetic', 'options': {'num_sequences': 3, 'num_frames': 20}}],
                           'samples_per_epoch': samples}},
        'train': {'epoch': 1, 'batch_size': 2, 'num_worker': 0, 'print_interval': 1, 'checkpoint_interval': 0,
                  **train},
    }


def write_config(folder: Path, data: dict[str, Any], name: str = 'train.yaml') -> Path:
    """`data` as a training YAML file in `folder`."""
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def subprocess_env() -> dict[str, str]:
    """One thread per process, so that separate runs compute bit-identically (and share the CPU)."""
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONPATH': str(REPO_ROOT)}


def start_stark_train(*args: str | Path, torchrun_processes: int = 0) -> subprocess.Popen:
    """Start `python -m stark_training.cli ARGS` (under torchrun with that many processes if > 0)."""
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                f'--nproc_per_node={torchrun_processes}'] if torchrun_processes else [sys.executable]
    command = [*launcher, '-m', 'stark_training.cli', *map(str, args), '--device', 'cpu', '--no-tensorboard']
    return subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 180) -> str:
    """Wait for a started run; its stderr (the log), or a test failure with its output."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f'{process.args} took over {timeout} s:\n{stdout}\n{stderr}') from None
    assert process.returncode == 0, f'{process.args} failed:\n{stdout}\n{stderr}'
    return stderr


def stark_train(*args: str | Path, timeout: float = 180) -> str:
    """Run `python -m stark_training.cli ARGS` to the end; its log (stderr)."""
    return finish(start_stark_train(*args), timeout)
