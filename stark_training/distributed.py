"""Process-group set-up (torchrun or a single process) and the epoch sampler that splits pairs
between processes and gradient-accumulation micro-batches.

The sampler plays DistributedSampler's part (a seeded permutation per epoch, set_epoch, an equal
share per rank, the remainder dropped) with two additions that exact resumption and the DDP
equivalence need: it can start at a step inside an epoch, and it lays out micro-batches so that N
processes with accumulation 1 see the same micro-batches as one process with accumulation N
(micro-batch k of a step comes from the stream permutation[k::N] in both).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

LOG = logging.getLogger('stark_training')


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process sits: rank among world_size processes, its device, and whether a
    process group was initialised (torchrun) or it runs alone."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' (this process's local GPU) or 'cuda:N'."""
    if requested == 'auto':
        requested = 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested.startswith('cuda'):
        if not torch.cuda.is_available():
            raise RuntimeError(f'device {requested!r} was asked for, but this PyTorch sees no CUDA GPU')
        return torch.device(f'cuda:{local_rank}') if requested == 'cuda' else torch.device(requested)
    if requested != 'cpu':
        raise ValueError(f'device must be auto, cpu, cuda or cuda:N, got {requested!r}')
    return torch.device('cpu')


def init_processes(requested_device: str = 'auto') -> ProcessInfo:
    """Join the process group torchrun describes (env:// rendezvous; NCCL on CUDA, Gloo on CPU),
    or run as the only process when started without torchrun."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    device = resolve_device(requested_device, local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world_size == 1:
        return ProcessInfo(0, 1, 0, device, False)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', init_method='env://')
    return ProcessInfo(rank, world_size, local_rank, device, True)


def close_processes(info: ProcessInfo) -> None:
    """Leave the process group (a no-op alone)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of pair indices) for one epoch, step by step.

    Each step uses world_size * accumulation_steps * batch_size pairs; the steps that do not fit
    in the epoch's pairs are dropped (as drop_last). `start_step` skips steps already trained.
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 accumulation_steps: int = 1, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.accumulation_steps = accumulation_steps
        self.seed = seed
        self.epoch = 0
        self.start_step = 0
        self.streams = world_size * accumulation_steps
        self.steps_per_epoch = num_samples // (self.streams * batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f'{num_samples} pairs per epoch do not fill one step of {world_size} process(es) '
                             f'x {accumulation_steps} micro-batch(es) x batch {batch_size}')

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Choose the epoch (its permutation) and the first step to yield."""
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation_steps

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        first = self.rank * self.accumulation_steps
        mine = [order[stream::self.streams] for stream in range(first, first + self.accumulation_steps)]
        for step in range(self.start_step, self.steps_per_epoch):
            for stream in mine:
                yield stream[step * self.batch_size:(step + 1) * self.batch_size]
