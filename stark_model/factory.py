"""Building networks and trackers from a checkpoint and/or a variant name: the one entry point that
the node, the evaluator, the trainer and the benchmarks use."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, CheckpointError, infer_variant, load_weights, read_checkpoint
from .config import VariantConfig, load_variant
from .network import StarkNetwork, build_network
from .tracker import StarkTracker


@dataclass
class LoadedModel:
    """A network with its variant config and where its weights came from (None: untrained)."""

    network: StarkNetwork
    variant: VariantConfig
    checkpoint: Checkpoint | None

    def describe(self) -> str:
        source = 'untrained weights' if self.checkpoint is None else \
            f'{self.checkpoint.kind} checkpoint {self.checkpoint.path}'
        return f'STARK {self.variant.variant} from {source}'


DEFAULT_MODEL_DIR = Path(__file__).parent / 'default_model'
DEFAULT_MODEL_FILE = 'stark_lite_nano.pth.tar'


def default_checkpoint() -> Path:
    """The default model shipped inside this package (docs/MODEL_CARD.md), its sha256 checked."""
    path = DEFAULT_MODEL_DIR / DEFAULT_MODEL_FILE
    sums = DEFAULT_MODEL_DIR / 'SHA256SUMS'
    if not path.is_file() or not sums.is_file():
        raise CheckpointError(f'the default model {path} (or its SHA256SUMS) is missing from this installation; '
                              'pass a checkpoint path instead')
    expected = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected.get(path.name) != actual:
        raise CheckpointError(f'the default model {path} does not match {sums} (sha256 {actual}): '
                              'the file is damaged; reinstall stark_ros')
    return path


def load_model(checkpoint: str | os.PathLike | None = None, variant: str | os.PathLike | None = None,
               allow_untrained: bool = False, sha256: str | None = None) -> LoadedModel:
    """The network for `checkpoint` (variant: embedded, named, or inferred from the weights);
    sha256, when given, pins the checkpoint file's SHA-256 (checked before unpickling).

    Without a checkpoint: the default model shipped in the package (default_checkpoint()), or,
    with a variant named and allow_untrained set, random weights (for tests and speed figures).
    """
    if checkpoint is None or str(checkpoint) == '':
        if not (allow_untrained and variant is not None):
            return load_model(default_checkpoint(), variant, sha256=sha256)
        if sha256 is not None:
            raise ValueError('a sha256 was given but no checkpoint to check it against (untrained weights)')
        config = load_variant(variant)
        return LoadedModel(build_network(config.model, config.tracker.search_size, config.tracker.template_size),
                           config, None)
    contents = read_checkpoint(checkpoint, sha256=sha256)
    if variant is not None:
        config = load_variant(variant)
    elif contents.variant is not None:
        config = contents.variant
    else:
        config = load_variant(infer_variant(contents.state_dict))
    network = build_network(config.model, config.tracker.search_size, config.tracker.template_size)
    load_weights(network, contents.state_dict, str(contents.path))
    return LoadedModel(network.eval(), config, contents)


def create_tracker(model: LoadedModel, device: str = 'cpu', precision: str = 'fp32',
                   dataset: str = 'default', max_targets: int | None = None,
                   fast_kernels: bool = False, backend: str = 'auto', crops: str = 'auto',
                   cache_dir: str | None = None) -> StarkTracker:
    """A tracker running `model` on `device` at `precision` ('fp32', 'fp16', 'bf16') through
    `backend` (stark_model.backends); fast_kernels trades the original's exact rounding for speed
    (see StarkTracker)."""
    return StarkTracker(model.network, model.variant.tracker, device=device, precision=precision,
                        dataset=dataset, max_targets=max_targets, fast_kernels=fast_kernels,
                        backend=backend, crops=crops, cache_dir=cache_dir)
