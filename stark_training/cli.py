"""`stark-train`: train STARK (stage 1 or 2) from a YAML config, alone or under torchrun."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

EPILOG = """examples:
  stark-train --config config/training/stark_st1_baseline.yaml --output runs/st1 \\
      --pretrained-backbone ~/weights/resnet50-0676ba61.pth
  torchrun --nproc_per_node=8 -m stark_training.cli --config ... --output runs/st1 ...
  stark-train --config ... --output runs/st1 --resume
  stark-train --config config/training/stark_st2_baseline.yaml --output runs/st2 \\
      --stage1-checkpoint runs/st1/checkpoints/STARKST_ep0500.pth.tar
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see --help)."""
    parser = argparse.ArgumentParser(
        prog='stark-train', description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='training YAML (see config/training/)')
    parser.add_argument('--output', required=True, help='run folder: checkpoints/, tensorboard/')
    parser.add_argument('--resume', nargs='?', const=True, default=False, metavar='CHECKPOINT',
                        help='continue the run in --output (its checkpoints/last.pth.tar), or from CHECKPOINT')
    parser.add_argument('--stage', type=int, choices=(1, 2), help='override train.stage')
    parser.add_argument('--stage1-checkpoint', help='stage 2: the stage-1 checkpoint to start from')
    start = parser.add_mutually_exclusive_group()
    start.add_argument('--pretrained-backbone', metavar='FILE',
                       help='stage 1: local ImageNet ResNet weights in torchvision layout (never downloaded)')
    start.add_argument('--from-scratch', action='store_true',
                       help='stage 1: random backbone weights (much worse trackers; only when asked)')
    parser.add_argument('--device', default='auto', help='auto (default), cpu, cuda or cuda:N')
    parser.add_argument('--no-tensorboard', action='store_true', help='write no TensorBoard scalars')
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Command-line values that replace the config's (paths made absolute)."""
    model: dict[str, Any] = {}
    if args.pretrained_backbone:
        model.update(pretrained_backbone=os.path.abspath(args.pretrained_backbone), from_scratch=False)
    if args.from_scratch:
        model.update(pretrained_backbone=None, from_scratch=True)
    if args.stage1_checkpoint:
        model['stage1_checkpoint'] = os.path.abspath(args.stage1_checkpoint)
    train = {'stage': args.stage} if args.stage is not None else {}
    return {section: values for section, values in (('model', model), ('train', train)) if values}


def main(argv: list[str] | None = None) -> int:
    """Entry point of stark-train."""
    args = parse_args(argv)
    rank = int(os.environ.get('RANK', '0'))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
    # Imported after argument parsing, so that --help answers without loading torch.
    from stark_model.checkpoint import CheckpointError
    from stark_model.config import ConfigError

    from .config import load_training_config
    from .losses import NonFiniteLossError
    from .trainer import Trainer

    try:
        config = load_training_config(args.config, overrides(args))
        resume = args.resume if args.resume is True or not args.resume else os.path.abspath(args.resume)
        result = Trainer(config, args.output, device=args.device, resume=resume,
                         tensorboard=not args.no_tensorboard).run()
    except (ConfigError, CheckpointError, FileNotFoundError, FileExistsError, ValueError,
            NonFiniteLossError) as error:
        logging.getLogger('stark_training').error('%s', error)
        return 2
    if rank == 0:
        logging.getLogger('stark_training').info('done: %s', result.epoch_checkpoint or result.resume_checkpoint)
    return 0


if __name__ == '__main__':
    sys.exit(main())
