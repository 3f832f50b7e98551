"""Make a trained checkpoint the package's default model (stark_model/default_model/).

    python -m stark_training.ship_model out/default_model/st2/checkpoints/STARKST_ep0024.pth.tar

The weights are copied as they are; the embedded variant config is the current one of
config/models (so its test-time settings follow the YAML, while the network must still match the
weights), and SHA256SUMS is rewritten. The checkpoint it came from is
recorded by name and sha256 in the shipped file.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from stark_model.checkpoint import CheckpointError, file_sha256, read_checkpoint, save_checkpoint
from stark_model.config import ConfigError, load_variant
from stark_model.factory import DEFAULT_MODEL_DIR, DEFAULT_MODEL_FILE, load_model


def ship(checkpoint: Path, variant: str = 'lite_nano', folder: Path = DEFAULT_MODEL_DIR,
         name: str = DEFAULT_MODEL_FILE) -> Path:
    """Write `checkpoint`'s weights with `variant`'s current config to folder/name and its SHA256SUMS."""
    config = load_variant(variant)
    model = load_model(checkpoint, variant)  # refuses weights that do not fit the variant's network
    source = read_checkpoint(checkpoint)
    path = save_checkpoint(folder / name, model.network, config, source.epoch,
                           {'shipped_from': {'file': checkpoint.name, 'sha256': file_sha256(checkpoint)}})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / 'SHA256SUMS').write_text(f'{digest}  {name}\n')
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m stark_training.ship_model', description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', type=Path, help='the trained checkpoint (stage 2)')
    parser.add_argument('--variant', default='lite_nano', help='variant name or YAML (default: lite_nano)')
    args = parser.parse_args(argv)
    try:
        path = ship(args.checkpoint, args.variant)
    except (CheckpointError, ConfigError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.parent / "SHA256SUMS"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
