"""Building networks and trackers from a checkpoint and/or a variant name: the one entry point that
the node, the evaluator, the trainer and the benchmarks use."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .checkpoint import Checkpoint, infer_variant, load_weights, read_checkpoint
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


def load_model(checkpoint: str | os.PathLike | None = None, variant: str | os.PathLike | None = None,
               allow_untrained: bool = False) -> LoadedModel:
    """The network for `checkpoint` (variant: embedded, named, or inferred from the weights).

    Without a checkpoint the variant must be named and allow_untrained set: random weights are
    for tests and speed measurements only.
    """
    if checkpoint is None or str(checkpoint) == '':
        if not allow_untrained:
            raise ValueError('no checkpoint given: pass the path of a STARK checkpoint '
                             '(official .pth.tar or one trained with stark_training)')
        if variant is None:
            raise ValueError('an untrained model needs a variant name')
        config = load_variant(variant)
        return LoadedModel(build_network(config.model, config.tracker.search_size), config, None)
    contents = read_checkpoint(checkpoint)
    if variant is not None:
        config = load_variant(variant)
    elif contents.variant is not None:
        config = contents.variant
    else:
        config = load_variant(infer_variant(contents.state_dict))
    network = build_network(config.model, config.tracker.search_size)
    load_weights(network, contents.state_dict, str(contents.path))
    return LoadedModel(network.eval(), config, contents)


def create_tracker(model: LoadedModel, device: str = 'cpu', precision: str = 'fp32',
                   dataset: str = 'default', max_targets: int | None = None) -> StarkTracker:
    """A tracker running `model` on `device` at `precision` ('fp32', 'fp16', 'bf16')."""
    return StarkTracker(model.network, model.variant.tracker, device=device, precision=precision,
                        dataset=dataset, max_targets=max_targets)
