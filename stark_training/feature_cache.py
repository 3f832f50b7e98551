"""Training from cached backbone features: the frozen-backbone mode of stark_training.trainer.

With `data.feature_cache.chunks: K` in a training config the backbone never trains, so its output
for a sampled pair never changes. The pairs of epoch e are then those of TrackingPairDataset epoch
e % K: the first time a chunk of pairs is needed, its crops go through the backbone once (ONNX
Runtime by default, several times faster than eager PyTorch on a CPU) and are stored on disk
(fp16 features, feature-resolution masks, box, label); every later epoch that reuses the chunk
trains the transformer and heads from the stored features. A CPU thus spends its time on the
parts that learn.

A chunk's file name carries a hash of everything its content depends on (sampling and processing
settings, data sources, stage, backbone weights), so a changed config never reads stale features,
and a resumed run finds the chunks it already built. Each chunk is a pure function of the config,
which keeps the trainer's exact resume exact. Under DDP every process builds the chunks it needs
itself (the same file, written atomically): simple, and the backbone pass is the cheap part there.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stark_model.backbone import feature_masks
from stark_model.checkpoint import CheckpointError, atomic_torch_save, hash_weights, read_checkpoint
from stark_model.network import NetworkOutput, StarkNetwork, Tokens

from .config import FEATURE_CACHE_RUNTIMES

CHUNK_KEYS = ('template_features', 'template_masks', 'search_features', 'search_masks', 'search_box', 'label')
CACHE_FORMAT = 1


def cache_key(content: Any, backbone: nn.Module) -> str:
    """A hash of `content` (plain data: the settings that make the pairs) and the backbone weights."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, content], sort_keys=True, default=str).encode())
    hash_weights(digest, backbone)
    return digest.hexdigest()[:16]


class BackboneRunner:
    """The frozen backbone body on batches of crops: eager PyTorch or ONNX Runtime (CPU)."""

    def __init__(self, network: StarkNetwork, runtime: str = 'onnxruntime', threads: int | None = None) -> None:
        if runtime not in FEATURE_CACHE_RUNTIMES:
            raise ValueError(f'feature cache runtime must be one of {", ".join(FEATURE_CACHE_RUNTIMES)}, '
                             f'got {runtime!r}')
        self.network = network
        self.runtime = runtime
        self.threads = threads or torch.get_num_threads()
        self.sessions: dict[int, Any] = {}

    def _session(self, size: int) -> Any:
        if size not in self.sessions:
            import onnxruntime

            from stark_model.export import export_backbone

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            self.sessions[size] = onnxruntime.InferenceSession(export_backbone(self.network, size), options,
                                                               providers=['CPUExecutionProvider'])
        return self.sessions[size]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, S, S) normalised, masks (B, S, S) -> features (B, C, S/16, S/16), small masks."""
        if self.runtime == 'pytorch':
            body = self.network.backbone[0].body.eval()
            features = body(images.to(next(body.parameters()).device)).cpu()
        else:
            array = images.to('cpu', torch.float32).contiguous().numpy()
            features = torch.from_numpy(self._session(images.shape[-1]).run(None, {'images': array})[0])
        return features, feature_masks(masks, features.shape[-2:])


def build_chunk(pairs: Dataset, epoch: int, runner: BackboneRunner, path: Path, batch_size: int = 32,
                workers: int = 0, progress: Callable[[str], None] = print) -> None:
    """Sample epoch `epoch` of `pairs` (a TrackingPairDataset), run the backbone on its crops, save."""
    pairs.set_epoch(epoch)
    loader = DataLoader(pairs, batch_size=batch_size, num_workers=workers, shuffle=False)
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in CHUNK_KEYS}
    started, done = time.monotonic(), 0
    for batch in loader:
        templates, masks = batch['template_images'], batch['template_masks']  # (B, T, 3, H, H), (B, T, H, H)
        count, num_templates = templates.shape[:2]
        features, small = runner(templates.flatten(0, 1), masks.flatten(0, 1))
        parts['template_features'].append(features.half().unflatten(0, (count, num_templates)))
        parts['template_masks'].append(small.unflatten(0, (count, num_templates)))
        features, small = runner(batch['search_images'], batch['search_masks'])
        parts['search_features'].append(features.half())
        parts['search_masks'].append(small)
        parts['search_box'].append(batch['search_box'].float())
        parts['label'].append(batch['label'].float())
        done += count
    atomic_torch_save({key: torch.cat(value) for key, value in parts.items()}, path)
    progress(f'feature cache: built {path.name} ({done} pairs, {done / max(time.monotonic() - started, 1e-6):.1f} '
             'pairs/s)')


def read_chunk(path: Path) -> dict[str, torch.Tensor]:
    """A chunk written by build_chunk, read with the safe loader; CheckpointError if it is not one."""
    contents = read_checkpoint(path).state_dict
    missing = [key for key in CHUNK_KEYS if key not in contents]
    if missing:
        raise CheckpointError(f'{path}: not a feature chunk (no {missing[0]!r})')
    return contents


class CachedPairs(Dataset):
    """The backbone features of a TrackingPairDataset's pairs: epoch e serves the pairs of epoch
    e % chunks, building that chunk on first use (see the module docstring)."""

    def __init__(self, pairs: Dataset, runner: BackboneRunner, folder: str | Path, chunks: int, key: str,
                 name: str = 'train', batch_size: int = 32, workers: int = 0,
                 progress: Callable[[str], None] = print) -> None:
        if chunks < 1:
            raise ValueError(f'a feature cache needs at least one chunk, got {chunks}')
        self.pairs = pairs
        self.runner = runner
        self.folder = Path(folder)
        self.chunks = chunks
        self.key = key
        self.name = name
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self.loaded: tuple[int, dict[str, torch.Tensor]] | None = None

    def chunk_path(self, index: int) -> Path:
        return self.folder / f'{self.name}-{self.key}-{index:04d}.pt'

    def set_epoch(self, epoch: int) -> None:
        """Serve the pairs of chunk epoch % chunks, building it first when it is not on disk."""
        index = epoch % self.chunks
        if self.loaded is not None and self.loaded[0] == index:
            return
        path = self.chunk_path(index)
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            build_chunk(self.pairs, index, self.runner, path, self.batch_size, self.workers, self.progress)
        chunk = read_chunk(path)
        if len(chunk['label']) != len(self.pairs):
            raise CheckpointError(f'{path}: holds {len(chunk["label"])} pairs, the config asks for {len(self.pairs)}')
        self.loaded = (index, chunk)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.loaded is None:
            self.set_epoch(0)
        return {key: value[index] for key, value in self.loaded[1].items()}


class FeatureNetwork(nn.Module):
    """The network after its backbone: what trains on cached features (and what DDP wraps)."""

    def __init__(self, network: StarkNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, template_features: torch.Tensor, template_masks: torch.Tensor,
                search_features: torch.Tensor, search_masks: torch.Tensor) -> NetworkOutput:
        network = self.network
        parts = [network.encode_features(template_features[:, t].float(), template_masks[:, t])
                 for t in range(template_features.shape[1])]
        parts.append(network.encode_features(search_features.float(), search_masks))
        return network.decode(Tokens.concat(parts))


def cached_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> NetworkOutput:
    """The trainer's forward on a batch of CachedPairs items; `model` is a StarkNetwork, a
    FeatureNetwork or its DDP wrapper."""
    if isinstance(model, StarkNetwork):
        model = FeatureNetwork(model)
    return model(batch['template_features'], batch['template_masks'], batch['search_features'],
                 batch['search_masks'])

