"""Training speed on this machine: pairs per second through a whole stage-1 training step.

    python -m stark_training.benchmark [--variants st50 lite] [--batch N] [--steps N] [--device auto]
                                       [--data]

A step is what the trainer does per batch: forward over two templates and the search crop (at the
variant's crop sizes), the 5*L1 + 2*GIoU loss, backward, gradient clipping and the AdamW update,
with the trainer's frozen layers and parameter groups; on CUDA under AMP as train.amp 'auto' picks
it (bf16, else fp16 with a gradient scaler). Inputs are random tensors, so the figure is the
network's training throughput without data loading; --data also times TrackingPairDataset
(the CPU side, pairs per second per worker process) on synthetic videos.
A benchmark, not a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from stark_model.config import load_variant
from stark_model.network import build_network
from stark_model.transformer import fused_attention

from .losses import box_loss
from .trainer import autocast_dtype, parameter_groups, set_trainable


def machine_name(device: torch.device) -> str:
    """CPU model and core count, or the GPU's name, plus the torch version."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}'
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            names = [line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name')]
        model = names[0] if names else model
    except OSError:
        pass
    import os
    return f'{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}'


def training_step_rate(variant_name: str, device: torch.device, batch: int, steps: int, amp: str) -> tuple[float, str]:
    """Pairs per second through full stage-1 training steps, and the precision used."""
    variant = load_variant(variant_name)
    network = build_network(variant.model, variant.tracker.search_size).to(device)
    set_trainable(network, 1)
    network.train()
    optimizer = torch.optim.AdamW(parameter_groups(network, 1e-4, 0.1), lr=1e-4, weight_decay=1e-4)
    dtype = autocast_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    t_size, s_size = variant.tracker.template_size, variant.tracker.search_size
    templates = [(torch.randn(batch, 3, t_size, t_size, device=device),
                  torch.zeros(batch, t_size, t_size, dtype=torch.bool, device=device)) for _ in range(2)]
    search = (torch.randn(batch, 3, s_size, s_size, device=device),
              torch.zeros(batch, s_size, s_size, dtype=torch.bool, device=device))
    target = torch.tensor([[0.4, 0.4, 0.6, 0.6]], device=device).repeat(batch, 1)
    trainable = [p for p in network.parameters() if p.requires_grad]

    def step() -> None:
        precision = contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype)
        with precision, fused_attention():
            output = network(templates=templates, search=search)
        scaler.scale(box_loss(output.boxes, target).total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 0.1)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    step()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - start), str(dtype or torch.float32).replace('torch.', '')


def data_rate(variant_name: str, samples: int) -> float:
    """Pairs per second that one process's TrackingPairDataset produces (synthetic videos)."""
    from .datasets import open_dataset
    from .processing import ProcessingSettings
    from .sampling import TrackingPairDataset

    tracker = load_variant(variant_name).tracker
    settings = ProcessingSettings(template_size=tracker.template_size, search_size=tracker.search_size)
    dataset = TrackingPairDataset([open_dataset('synthetic', num_sequences=4)], [1], samples, settings,
                                  stage=1, num_templates=2)
    dataset[0]
    start = time.perf_counter()
    for index in range(1, samples):
        dataset[index]
    return (samples - 1) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Print pairs/s per variant for this machine."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', nargs='+', default=['st50', 'lite'])
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--batch', type=int, help='pairs per step (default: 16 on CUDA, 2 on CPU)')
    parser.add_argument('--steps', type=int, help='timed steps (default: 20 on CUDA, 3 on CPU)')
    parser.add_argument('--amp', default='auto', choices=('auto', 'off', 'bf16', 'fp16'))
    parser.add_argument('--data', action='store_true', help='also time the pair sampling and processing')
    args = parser.parse_args(argv)
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                          else ('cpu' if args.device == 'auto' else args.device))
    batch = args.batch or (16 if device.type == 'cuda' else 2)
    steps = args.steps or (20 if device.type == 'cuda' else 3)
    print(f'STARK training speed on {machine_name(device)}; device {device}, batch {batch}, {steps} timed steps')
    print('| variant | precision | pairs/s (training step) |')
    print('|---|---|---|')
    for name in args.variants:
        rate, precision = training_step_rate(name, device, batch, steps, args.amp)
        print(f'| {name} | {precision} | {rate:.2f} |', flush=True)
    if args.data:
        for name in args.variants:
            print(f'data: {name} crops, TrackingPairDataset on synthetic videos: '
                  f'{data_rate(name, 40):.1f} pairs/s per process', flush=True)


if __name__ == '__main__':
    main()
