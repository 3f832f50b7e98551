"""Training with a frozen backbone from cached backbone features: the CPU recipe of the default model.

With the ImageNet backbone frozen, its output for a sampled pair never changes, so each epoch's
pairs are sampled (TrackingPairDataset) and pushed through the backbone once, stored as a chunk
(fp16 features + feature-resolution masks + box + label), and the transformer and heads train
from the chunks. A builder process can make chunk k+1 while the trainer learns from chunk k;
the trainer reads an epoch's chunk only once it is complete, so the weights depend on the config
alone, never on timing. Stage 2 (the score head) caches the trained encoder's memory for the
last chunks, each pair also joined to another pair's search region as a negative, and trains the
score head with the decoder (BCE, plus the box loss on the positives).

    python -m stark_training.feature_cache config/training/default_model_lite_effnet.yaml --role all
    # or two processes sharing the work: --role builder and --role trainer

Every step resumes: finished chunks are kept, and the trainer continues from its last epoch
checkpoint (weights, optimizer, scheduler, RNG states), giving the same weights as an unbroken run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from stark_model import load_variant, save_checkpoint
from stark_model.checkpoint import CheckpointError, safe_torch_load, atomic_torch_save, load_weights, read_checkpoint
from stark_model.config import ConfigError, VariantConfig, read_yaml
from stark_model.efficientnet import load_imagenet_weights
from stark_model.network import NetworkOutput, StarkNetwork, Tokens, build_network

from .datasets import open_dataset
from .datasets.base import SequenceDataset
from .losses import box_loss, score_loss
from .photo_sequences import PhotoSequences
from .processing import ProcessingSettings
from .resume_state import capture_rng_state, check_plain, restore_rng_state
from .sampling import TrackingPairDataset

CHUNK_KEYS = ('template_features', 'template_masks', 'search_features', 'search_masks', 'search_box', 'label')


# ---------------------------------------------------------------------------------------------
# Configuration
@dataclass(frozen=True)
class DataRecipe:
    """Training material: DAVIS-2016 sequences by name, COCO splits, photo sequences, their ratios."""

    davis_root: str
    davis_resolution: str
    davis_train: tuple[str, ...]
    davis_held_out: tuple[str, ...]
    coco_root: str
    coco_splits: tuple[str, ...]
    photo_root: str
    photo_train: tuple[str, ...]
    photo_sequences: int = 48
    photo_frames: int = 40
    ratios: Mapping[str, float] = field(default_factory=lambda: {'davis': 2.0, 'coco': 1.0, 'photos': 1.0})


@dataclass(frozen=True)
class StageRecipe:
    """One training stage: epochs (one cached chunk each), pairs per chunk, optimiser settings."""

    epochs: int
    pairs_per_epoch: int
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_drop_epoch: int = 0  # 0: no drop
    grad_clip: float = 0.1
    replay_chunks: int = 0  # stage 1: also train each epoch on this many previous chunks
    head_epochs: int = 0  # stage 2: passes over the cached decoder outputs


@dataclass(frozen=True)
class Recipe:
    """A whole default-model training run."""

    source: Path
    variant: VariantConfig
    seed: int
    output: Path
    data: DataRecipe
    processing: ProcessingSettings
    stage1: StageRecipe
    stage2: StageRecipe


def _fields_of(cls: type, data: Any, where: str, source: Path) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f'{source}: {where} must be a mapping')
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f'{source}: unknown key {where}.{unknown[0]} (allowed: {", ".join(sorted(names))})')
    required = {f.name for f in fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f'{source}: missing key {where}.{missing[0]}')
    values = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        expected = {'int': int, 'float': float, 'str': str}.get(f.type if isinstance(f.type, str) else '')
        if f.type == 'tuple[str, ...]':
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f'{source}: {where}.{f.name} must be a list of names, got {value!r}')
            value = tuple(value)
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif expected is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise ConfigError(f'{source}: {where}.{f.name} must be {expected.__name__}, got {value!r}')
        values[f.name] = value
    return values


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check a recipe YAML; relative paths are resolved against the file's folder."""
    path = Path(path).resolve()
    raw = read_yaml(path, 'training recipe')
    top_keys = ('variant', 'seed', 'output', 'data', 'processing', 'stage1', 'stage2')
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{path}: the top level must be a mapping of {", ".join(top_keys)}')
    unknown = sorted(set(raw) - set(top_keys))
    if unknown:
        raise ConfigError(f'{path}: unknown key {unknown[0]} (allowed: {", ".join(top_keys)})')
    missing = [key for key in top_keys if key not in raw]
    if missing:
        raise ConfigError(f'{path}: missing key {missing[0]}')
    data = _fields_of(DataRecipe, raw['data'], 'data', path)
    ratios = data.get('ratios', {'davis': 2.0, 'coco': 1.0, 'photos': 1.0})
    if not isinstance(ratios, Mapping) or set(ratios) - {'davis', 'coco', 'photos'} or \
            not all(isinstance(v, (int, float)) and v >= 0 for v in ratios.values()):
        raise ConfigError(f'{path}: data.ratios must map davis/coco/photos to non-negative numbers, got {ratios!r}')
    overlap = set(data['davis_train']) & set(data['davis_held_out'])
    if overlap:
        raise ConfigError(f'{path}: data.davis_held_out sequence {sorted(overlap)[0]!r} is also in data.davis_train')
    for key in ('davis_root', 'coco_root', 'photo_root'):
        data[key] = str((path.parent / data[key]).resolve())
    try:
        processing = ProcessingSettings.from_mapping(raw['processing'], f'{path}: processing')
    except ValueError as error:
        raise ConfigError(str(error)) from None
    variant_name = raw['variant']
    if not isinstance(variant_name, str):
        raise ConfigError(f'{path}: variant must be a variant name or YAML path, got {variant_name!r}')
    variant = load_variant(path.parent / variant_name if variant_name.endswith(('.yaml', '.yml')) else variant_name)
    if (processing.template_size, processing.search_size) != (variant.tracker.template_size,
                                                             variant.tracker.search_size):
        raise ConfigError(f'{path}: processing crop sizes {processing.template_size}/{processing.search_size} '
                          f'differ from variant {variant.variant} ({variant.tracker.template_size}/'
                          f'{variant.tracker.search_size})')
    if not isinstance(raw['seed'], int) or not isinstance(raw['output'], str):
        raise ConfigError(f'{path}: seed must be an integer and output a folder name')
    return Recipe(path, variant, raw['seed'], (path.parent / raw['output']).resolve(),
                  DataRecipe(**{**data, 'ratios': {k: float(v) for k, v in ratios.items()}}), processing,
                  StageRecipe(**_fields_of(StageRecipe, raw['stage1'], 'stage1', path)),
                  StageRecipe(**_fields_of(StageRecipe, raw['stage2'], 'stage2', path)))


# ---------------------------------------------------------------------------------------------
# Data
def training_datasets(data: DataRecipe) -> tuple[list[SequenceDataset], list[float]]:
    """The sources of the recipe and their sampling ratios (sources with ratio 0 are left out)."""
    sources: list[tuple[SequenceDataset, float]] = []
    if data.ratios.get('davis', 0) > 0:
        davis = open_dataset('davis', data.davis_root, resolution=data.davis_resolution, videos=list(data.davis_train))
        sources.append((davis, data.ratios['davis']))
    if data.ratios.get('coco', 0) > 0:
        for split in data.coco_splits:
            sources.append((open_dataset('coco', data.coco_root, split=split),
                            data.ratios['coco'] / len(data.coco_splits)))
    if data.ratios.get('photos', 0) > 0:
        photos = PhotoSequences([Path(data.photo_root) / name for name in data.photo_train],
                                data.photo_sequences, data.photo_frames, seed=7)
        sources.append((photos, data.ratios['photos']))
    return [s for s, _ in sources], [r for _, r in sources]


def pair_dataset(recipe: Recipe, stage: int) -> TrackingPairDataset:
    """The recipe's pairs (two templates: STARK-ST); epoch k's items make chunk k."""
    datasets, ratios = training_datasets(recipe.data)
    return TrackingPairDataset(datasets, ratios, recipe.stage1.pairs_per_epoch, recipe.processing, stage=stage,
                               num_templates=2, seed=recipe.seed + 1000 * stage)


def pretrained_network(recipe: Recipe) -> StarkNetwork:
    """The variant's network with the ImageNet backbone; transformer and heads seeded by the recipe."""
    torch.manual_seed(recipe.seed)
    network = build_network(recipe.variant.model, recipe.variant.tracker.search_size)
    load_imagenet_weights(network.backbone[0].body)
    return network


# ---------------------------------------------------------------------------------------------
# Chunks of cached features
def chunk_path(folder: Path, stage: int, epoch: int) -> Path:
    return folder / f'stage{stage}_chunk{epoch:04d}.pt'



@torch.no_grad()
def build_chunk(network: StarkNetwork, pairs: TrackingPairDataset, epoch: int, path: Path,
                batch_size: int = 16, stride: int = 16, progress: Callable[[str], None] = print) -> None:
    """Sample epoch `epoch` of `pairs`, run the frozen backbone on its crops and save the chunk."""
    pairs.set_epoch(epoch)
    body = network.backbone[0].eval()
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in CHUNK_KEYS}
    started = time.monotonic()
    for first in range(0, len(pairs), batch_size):
        items = [pairs[i] for i in range(first, min(first + batch_size, len(pairs)))]
        templates = torch.stack([item['template_images'] for item in items])  # (B, T, 3, H, H)
        count, num_templates = templates.shape[:2]
        template_masks = torch.stack([item['template_masks'] for item in items])
        features, small = body(templates.flatten(0, 1), template_masks.flatten(0, 1))
        parts['template_features'].append(features.half().view(count, num_templates, *features.shape[1:]))
        parts['template_masks'].append(small.view(count, num_templates, *small.shape[1:]))
        features, small = body(torch.stack([item['search_images'] for item in items]),
                               torch.stack([item['search_masks'] for item in items]))
        parts['search_features'].append(features.half())
        parts['search_masks'].append(small)
        parts['search_box'].append(torch.stack([item['search_box'] for item in items]))
        parts['label'].append(torch.stack([item['label'] for item in items]))
        done = first + count
        if done % (8 * batch_size) == 0 or done == len(pairs):
            rate = done / max(time.monotonic() - started, 1e-6)
            progress(f'chunk {path.name}: {done}/{len(pairs)} pairs ({rate:.1f} pairs/s)')
    atomic_torch_save({key: torch.cat(value) for key, value in parts.items()}, path)


def read_chunk(path: Path) -> dict[str, torch.Tensor]:
    """A chunk written by build_chunk, read with the safe loader; CheckpointError if it is not one."""
    contents = read_checkpoint(path).state_dict
    missing = [key for key in CHUNK_KEYS if key not in contents]
    if missing:
        raise CheckpointError(f'{path}: not a feature chunk (no {missing[0]!r})')
    return contents


def wait_for_chunk(path: Path, timeout_s: float, progress: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """The chunk at `path`, waiting for a builder process to finish it."""
    deadline = time.monotonic() + timeout_s
    reported = False
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{path} did not appear within {timeout_s:.0f} s: is a --role builder running?')
        if not reported:
            progress(f'waiting for {path.name} from the builder')
            reported = True
        time.sleep(2.0)
    return read_chunk(path)


def forward_cached(network: StarkNetwork, batch: Mapping[str, torch.Tensor]) -> NetworkOutput:
    """The network's output for a batch of cached pairs (features of templates and search)."""
    return network.decode(_tokens(network, batch))


def batches(chunk: Mapping[str, torch.Tensor], batch_size: int, generator: torch.Generator
            ) -> Iterator[dict[str, torch.Tensor]]:
    """The chunk's pairs in a shuffled order, `batch_size` at a time (the last partial batch dropped)."""
    order = torch.randperm(len(chunk['label']), generator=generator)
    for first in range(0, len(order) - batch_size + 1, batch_size):
        index = order[first:first + batch_size]
        yield {key: value[index] for key, value in chunk.items()}


# ---------------------------------------------------------------------------------------------
# Training state
def _read_state(path: Path) -> dict[str, Any]:
    """A training-state file written by this module, read with the safe unpickler."""
    ignored: list[str] = []
    state = safe_torch_load(path, ignored)
    if ignored or not isinstance(state, dict):
        raise CheckpointError(f'{path}: not a training state written by stark_training.feature_cache')
    check_plain(state, str(path))
    return state


def _trainable(network: StarkNetwork, stage: int) -> list[torch.nn.Parameter]:
    """Stage 1: everything but the (frozen) backbone and the score head; stage 2: the score head."""
    for name, parameter in network.named_parameters():
        in_stage = name.startswith('cls_head.') if stage == 2 else not name.startswith(('backbone.', 'cls_head.'))
        parameter.requires_grad_(in_stage)
    return [p for p in network.parameters() if p.requires_grad]


def train_stage1(recipe: Recipe, network: StarkNetwork, log: Callable[[dict[str, Any]], None],
                 progress: Callable[[str], None], wait_s: float) -> None:
    """Stage 1 from the cached chunks, one chunk per epoch, resuming from the last epoch state."""
    stage = recipe.stage1
    parameters = _trainable(network, 1)
    optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, stage.lr_drop_epoch or stage.epochs + 1, gamma=0.1)
    state_path = recipe.output / 'stage1_state.pt'
    first_epoch = 0
    if state_path.is_file():
        state = _read_state(state_path)
        load_weights(network, state['net'], str(state_path))
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        scheduler.step_size = stage.lr_drop_epoch or stage.epochs + 1  # the recipe's, if it was extended
        restore_rng_state(state['rng'])
        first_epoch = state['epoch'] + 1
        progress(f'stage 1: resuming after epoch {state["epoch"]}')
    generator = torch.Generator()
    for epoch in range(first_epoch, stage.epochs):
        chunk = wait_for_chunk(chunk_path(recipe.output / 'cache', 1, epoch), wait_s, progress)
        # Replaying recent chunks keeps the trainer busy while the builder (the slower) makes the next.
        for previous in range(max(0, epoch - stage.replay_chunks), epoch):
            older = read_chunk(chunk_path(recipe.output / 'cache', 1, previous))
            chunk = {key: torch.cat([chunk[key], older[key]]) for key in CHUNK_KEYS}
        generator.manual_seed(recipe.seed * 100_003 + epoch)
        network.train()
        started, sums, steps = time.monotonic(), {}, 0
        for batch in batches(chunk, stage.batch_size, generator):
            output = forward_cached(network, batch)
            loss, parts = box_loss(output.boxes, batch['search_box'])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, stage.grad_clip)
            optimizer.step()
            steps += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            if steps % 16 == 0:
                progress(f'stage 1 epoch {epoch + 1}: step {steps}/{len(chunk["label"]) // stage.batch_size}, '
                         f'loss {sums["loss"] / steps:.4f}, IoU {sums["iou"] / steps:.3f}')
        lr = optimizer.param_groups[0]['lr']  # the rate this epoch trained at
        scheduler.step()
        means = {key: value / max(steps, 1) for key, value in sums.items()}
        log({'stage': 1, 'epoch': epoch, 'steps': steps, 'seconds': round(time.monotonic() - started, 1),
             'lr': lr, **{k: round(v, 5) for k, v in means.items()}})
        progress(f'stage 1 epoch {epoch + 1}/{stage.epochs}: ' +
                 ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + f' ({time.monotonic() - started:.0f} s)')
        atomic_torch_save({'net': {k: v.detach().clone() for k, v in network.state_dict().items()},
                      'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                      'rng': capture_rng_state(), 'epoch': epoch}, state_path)


def with_negatives(chunk: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The chunk's pairs (label 1) plus as many negatives (label 0): each pair's templates with the
    search region of another pair, which shows another video, photo or image (STARK's negatives
    from another sequence), its box set to the centre as STARK does for negatives."""
    count = len(chunk['label'])
    shift = torch.randint(1, count, (1,), generator=generator).item()
    other = (torch.arange(count) + shift) % count  # a derangement: never a pair's own search region
    negatives = dict(chunk)
    negatives['search_features'] = chunk['search_features'][other]
    negatives['search_masks'] = chunk['search_masks'][other]
    negatives['search_box'] = torch.tensor([0.375, 0.375, 0.625, 0.625]).expand(count, 4)
    negatives['label'] = torch.zeros(count)
    positives = {**chunk, 'label': torch.ones(count)}
    return {key: torch.cat([positives[key], negatives[key]]) for key in CHUNK_KEYS}


@torch.no_grad()
def _encoded(network: StarkNetwork, chunk: Mapping[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """Encoder memory (N, L, C) of every pair, fp16: stage 2 leaves the encoder as it is."""
    network.eval()
    memories = []
    for first in range(0, len(chunk['label']), batch_size):
        batch = {key: value[first:first + batch_size] for key, value in chunk.items()}
        tokens = _tokens(network, batch)
        memories.append(network.transformer.encoder(tokens.features, tokens.mask, tokens.pos).transpose(0, 1).half())
    return torch.cat(memories)


def _tokens(network: StarkNetwork, batch: Mapping[str, torch.Tensor]) -> Tokens:
    templates = batch['template_features'].float()
    parts = [network.encode_features(templates[:, t], batch['template_masks'][:, t])
             for t in range(templates.shape[1])]
    parts.append(network.encode_features(batch['search_features'].float(), batch['search_masks']))
    return Tokens.concat(parts)


def _decode(network: StarkNetwork, memory: torch.Tensor, tokens: Tokens) -> NetworkOutput:
    """Decoder and heads on a cached encoder memory (B, L, C)."""
    memory = memory.float().transpose(0, 1)
    query_pos = network.query_embed.weight.unsqueeze(1).repeat(1, memory.shape[1], 1)
    decoded = network.transformer.decoder(torch.zeros_like(query_pos), memory, tokens.mask, tokens.pos,
                                          query_pos).transpose(0, 1)
    boxes, score_tl, score_br = network._predict_boxes(decoded, memory)
    return NetworkOutput(boxes, network.cls_head(decoded), score_tl, score_br, decoded)


def _stage2_parameters(network: StarkNetwork) -> list[torch.nn.Parameter]:
    """The score head, the decoder and its query: after stage 1 the decoder's output hardly
    depends on the input (the box head only needs it as a query), so the score head alone cannot
    tell target from background; the decoder learns it too, its boxes held by the box loss."""
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith(('cls_head.', 'transformer.decoder.', 'query_embed.')))
    return [p for p in network.parameters() if p.requires_grad]


def train_stage2(recipe: Recipe, network: StarkNetwork, log: Callable[[dict[str, Any]], None],
                 progress: Callable[[str], None]) -> None:
    """Stage 2: score head (with the decoder) on the positives and negatives of the last
    `stage2.epochs` stage-1 chunks, from their cached encoder memories; loss = BCE on the score
    plus the stage-1 box loss on the positives."""
    stage = recipe.stage2
    generator = torch.Generator().manual_seed(recipe.seed + 2)
    pairs, memories = [], []
    for epoch in range(max(0, recipe.stage1.epochs - stage.epochs), recipe.stage1.epochs):
        chunk = with_negatives(read_chunk(chunk_path(recipe.output / 'cache', 1, epoch)), generator)
        memories.append(_encoded(network, chunk, stage.batch_size))
        pairs.append(chunk)
    data = {key: torch.cat([chunk[key] for chunk in pairs]) for key in CHUNK_KEYS}
    memory = torch.cat(memories)
    progress(f'stage 2: encoder memory of {len(memory)} pairs cached')
    parameters = _stage2_parameters(network)
    optimizer = torch.optim.AdamW(parameters, lr=stage.lr, weight_decay=stage.weight_decay)
    network.eval()  # box head batch norm keeps its statistics
    network.transformer.decoder.train()
    means: dict[str, float] = {}
    for epoch in range(stage.head_epochs):
        order = torch.randperm(len(memory), generator=generator)
        sums, steps = {}, 0
        for first in range(0, len(order) - stage.batch_size + 1, stage.batch_size):
            index = order[first:first + stage.batch_size]
            batch = {key: value[index] for key, value in data.items()}
            with torch.no_grad():
                tokens = _tokens(network, batch)
            output = _decode(network, memory[index], tokens)
            score, parts = score_loss(output.logits, batch['label'])
            positive = batch['label'] > 0.5
            boxes, box_parts = box_loss(output.boxes[positive], batch['search_box'][positive])
            optimizer.zero_grad(set_to_none=True)
            (score + boxes).backward()
            torch.nn.utils.clip_grad_norm_(parameters, recipe.stage1.grad_clip)
            optimizer.step()
            steps += 1
            for key, value in {**parts, 'box_loss': box_parts['loss'], 'iou': box_parts['iou']}.items():
                sums[key] = sums.get(key, 0.0) + value
        means = {key: round(value / max(steps, 1), 5) for key, value in sums.items()}
        log({'stage': 2, 'epoch': epoch, 'steps': steps, **means})
        progress(f'stage 2 pass {epoch + 1}/{stage.head_epochs}: {means}')
    network.eval()


def plot_training_log(log_path: Path, png_path: Path) -> Path:
    """Loss curves of a run (stage-1 box losses and IoU per epoch, stage-2 score loss) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    stage1 = [r for r in records if r['stage'] == 1]
    stage2 = [r for r in records if r['stage'] == 2]
    figure = Figure(figsize=(10.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    boxes, scores = figure.subplots(1, 2)
    epochs = [r['epoch'] + 1 for r in stage1]
    for key, style in (('loss', '-'), ('giou', '--'), ('l1', ':'), ('iou', '-.')):
        boxes.plot(epochs, [r[key] for r in stage1], style, marker='o', label=key)
    boxes.set(title='stage 1 (boxes), mean per epoch', xlabel='epoch', ylim=(0, None))
    scores.plot([r['epoch'] + 1 for r in stage2], [r['bce'] for r in stage2], '-', label='BCE')
    scores.plot([r['epoch'] + 1 for r in stage2], [r['accuracy'] for r in stage2], '--', label='accuracy')
    scores.set(title='stage 2 (score head)', xlabel='pass over the cached pairs', ylim=(0, 1))
    for axes in (boxes, scores):
        axes.grid(True, alpha=0.4)
        axes.legend(fontsize=8)
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


# ---------------------------------------------------------------------------------------------
# Command line
def run_builder(recipe: Recipe, network: StarkNetwork, progress: Callable[[str], None], lookahead: int) -> None:
    """Make every chunk the recipe needs (one per stage-1 epoch), skipping finished ones."""
    pairs = pair_dataset(recipe, 1)
    for epoch in range(recipe.stage1.epochs):
        path = chunk_path(recipe.output / 'cache', 1, epoch)
        if path.is_file():
            continue
        # Stay at most `lookahead` chunks ahead of the trainer, which frees nothing but disk.
        while lookahead and epoch - _trained_epochs(recipe) > lookahead:
            time.sleep(5.0)
        build_chunk(network, pairs, epoch, path, recipe.stage1.batch_size, progress=progress)


def _trained_epochs(recipe: Recipe) -> int:
    path = recipe.output / 'stage1_state.pt'
    if not path.is_file():
        return 0
    try:
        return _read_state(path)['epoch'] + 1
    except CheckpointError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m stark_training.feature_cache', description=__doc__.splitlines()[0])
    parser.add_argument('recipe', type=Path, help='training recipe YAML (config/training/default_model_*.yaml)')
    parser.add_argument('--role', choices=('all', 'builder', 'trainer'), default='all',
                        help='all: build chunks and train in this process; builder/trainer: split over two')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    parser.add_argument('--lookahead', type=int, default=3, help='builder: most chunks ahead of the trainer')
    parser.add_argument('--wait', type=float, default=3600.0, help='trainer: seconds to wait for a chunk')
    parser.add_argument('--plot', type=Path, help='only draw the loss curves of the run\'s log into this PNG')
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.plot:
        print(f'wrote {plot_training_log(recipe.output / "training_log.jsonl", args.plot)}')
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe.output.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    def log(record: dict[str, Any]) -> None:
        with open(recipe.output / 'training_log.jsonl', 'a') as file:
            file.write(json.dumps({'time': round(time.time(), 1), **record}) + '\n')

    network = pretrained_network(recipe)
    if args.role in ('all', 'builder'):
        run_builder(recipe, network, progress, 0 if args.role == 'all' else args.lookahead)
    if args.role in ('all', 'trainer'):
        final = recipe.output / f'stark_{recipe.variant.variant}.pth.tar'
        train_stage1(recipe, network, log, progress, args.wait)
        train_stage2(recipe, network, log, progress)
        save_checkpoint(final, network.eval(), recipe.variant, epoch=recipe.stage1.epochs,
                        extra={'recipe': str(recipe.source.name)})
        progress(f'wrote {final}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
