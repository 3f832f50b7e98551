"""The STARK trainer: config validation, losses, sampler layout, backbone initialisation, overfitting
real pairs, torchrun DDP equivalence, kill-and-resume exactness, stage 2, hostile resume files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_fixtures import shared_data
from training_fixtures import (REPO_ROOT, finish, start_stark_train, stark_train, subprocess_env, training_config,
                               write_config, write_variant)

from stark_model import create_tracker, load_model, read_checkpoint, save_checkpoint
from stark_model.box_ops import generalized_iou
from stark_model.checkpoint import CheckpointError
from stark_model.config import ConfigError, load_variant
from stark_model.network import build_network
from stark_training.config import config_from_dict, load_training_config
from stark_training.distributed import EpochBatchSampler
from stark_training.losses import box_loss, score_loss
from stark_training.trainer import Trainer, initialise_backbone, parameter_groups, set_trainable

CONFIG_DIR = REPO_ROOT / 'config' / 'training'


# --- configuration ---------------------------------------------------------------------------
def test_training_config_error_names_the_bad_key_and_file(tmp_path):
    data = training_config(tmp_path)
    data['train']['lrr'] = 1e-3
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError, match=r'train\.yaml: unknown key train\.lrr'):
        load_training_config(path)
    data = training_config(tmp_path)
    data['data']['train']['datasets'][0]['ratoi'] = 2
    with pytest.raises(ConfigError, match=r'unknown key data\.train\.datasets\[0\]\.ratoi'):
        load_training_config(write_config(tmp_path, data))
    data = training_config(tmp_path, batch_size='sixteen')
    with pytest.raises(ConfigError, match=r"train\.batch_size must be int, got 'sixteen'"):
        load_training_config(write_config(tmp_path, data))
    data = training_config(tmp_path)
    data['data']['processing'] = {'grayscale_probability': 0.1}
    with pytest.raises(ConfigError, match=r"data\.processing: unknown key 'grayscale_probability'"):
        load_training_config(write_config(tmp_path, data))
    data = training_config(tmp_path)
    data['data']['search'] = {'size': 120}
    with pytest.raises(ConfigError, match=r'data\.search\.size is 120, not a positive multiple of the backbone stride 16'):
        load_training_config(write_config(tmp_path, data))
    data = training_config(tmp_path)
    data['data']['template'] = {'size': 128}
    with pytest.raises(ConfigError, match=r'data\.template\.size is 128, but the tiny variant tracks with template '
                                          r'crops of 64 px'):
        load_training_config(write_config(tmp_path, data))


def test_a_model_trained_at_one_search_size_tracks_at_the_variants(tmp_path):
    """data.search.size trains on other search crops than the variant tracks with (the default model:
    256 px in training, 224 px in tracking): pairs and network follow the training size, and the
    checkpoint loads and tracks at the variant's."""
    from stark_training.config import processing_settings

    data = training_config(tmp_path, samples=2)
    data['data']['search'] = {'factor': 5.0, 'size': 160}
    config = config_from_dict(data)
    assert (config.search_size(), processing_settings(config).search_size) == (160, 160)
    result = Trainer(config, tmp_path / 'run', device='cpu', tensorboard=False).run()  # a 128 px net would fail
    assert result.position.global_step == 1
    model = load_model(result.epoch_checkpoint)
    assert model.variant.tracker.search_size == 128 and model.network.box_head.feature_size == 128 // 16
    tracker = create_tracker(model)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    tracker.initialize(frame, (100, 80, 40, 50), 't')
    assert tracker.track(frame)['t'].box is not None


def test_training_config_defaults_are_the_original_values(tmp_path):
    config = config_from_dict({'data': {'train': {'datasets': [{'name': 'coco', 'root': 'coco'}]}}})
    train, data = config.train, config.data
    assert (train.lr, train.weight_decay, train.backbone_multiplier, train.grad_clip_norm) == (1e-4, 1e-4, 0.1, 0.1)
    assert (train.epoch, train.lr_drop_epoch, train.scheduler.decay_rate, train.batch_size) == (500, 400, 0.1, 16)
    assert (train.giou_weight, train.l1_weight, data.train.samples_per_epoch, data.max_sample_interval) == \
        (2.0, 5.0, 60000, 200)
    assert (data.search.factor, data.search.center_jitter, data.search.scale_jitter, data.template.factor) == \
        (5.0, 4.5, 0.5, 2.0)
    assert config.num_templates() == 2  # st50 has the dynamic template
    stage2 = config_from_dict({'data': {'train': {'datasets': [{'name': 'coco', 'root': 'coco'}]}},
                               'train': {'stage': 2, 'lr': '1e-4'}})  # YAML 1.1 reads 1e-4 as a string
    assert (stage2.train.epoch, stage2.train.lr_drop_epoch, stage2.train.lr) == (50, 40, 1e-4)


@pytest.mark.parametrize('path', sorted(CONFIG_DIR.glob('*.yaml')), ids=lambda p: p.name)
def test_shipped_training_configs_validate(path):
    config = load_training_config(path)
    assert config.train.stage == (2 if 'st2' in path.name else 1)


def test_stark_train_help_lists_the_options():
    script = Path(sys.executable).parent / 'stark-train'
    command = [str(script)] if script.exists() else [sys.executable, '-m', 'stark_training.cli']
    result = subprocess.run([*command, '--help'], capture_output=True, text=True, timeout=60,
                            env=subprocess_env())
    assert result.returncode == 0, result.stderr
    for option in ('--config', '--output', '--resume', '--stage', '--stage1-checkpoint', '--pretrained-backbone',
                   '--from-scratch', '--device', 'torchrun'):
        assert option in result.stdout


# --- losses and sampler ----------------------------------------------------------------------
def test_box_loss_is_zero_on_the_target_and_clamps_the_ground_truth():
    target = torch.tensor([[0.2, 0.3, 0.6, 0.7]])
    perfect = torch.tensor([[[0.4, 0.5, 0.4, 0.4]]])  # cxcywh of the target
    assert box_loss(perfect, target).total.item() == pytest.approx(0.0, abs=1e-5)
    # A ground truth sticking out of the crop is clamped to [0, 1] before comparison.
    outside = torch.tensor([[-0.2, 0.3, 0.6, 1.4]])
    clamped = torch.tensor([[[0.3, 0.65, 0.6, 0.7]]])
    assert box_loss(clamped, outside).total.item() == pytest.approx(0.0, abs=1e-5)
    # Disjoint unit boxes: IoU 0, GIoU = -(enclosing - union) / enclosing.
    giou, iou = generalized_iou(torch.tensor([[0.0, 0.0, 0.2, 0.2]]), torch.tensor([[0.4, 0.0, 0.6, 0.2]]))
    assert iou.item() == 0 and giou.item() == pytest.approx(-(0.12 - 0.08) / 0.12, rel=1e-5)
    parts = box_loss(torch.tensor([[[0.1, 0.1, 0.2, 0.2]]]), torch.tensor([[0.4, 0.0, 0.6, 0.2]])).parts
    assert parts['loss'] == pytest.approx(5 * parts['l1'] + 2 * parts['giou'], rel=1e-6)


def test_score_loss_is_binary_cross_entropy_on_the_logit():
    logits, labels = torch.tensor([[[2.0]], [[-1.0]]]), torch.tensor([1.0, 1.0])
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), labels)
    result = score_loss(logits, labels)
    assert result.total.item() == pytest.approx(expected.item())
    assert result.parts['accuracy'] == 0.5


def test_sampler_gives_ranks_the_micro_batches_of_one_process_with_accumulation():
    single = EpochBatchSampler(40, 3, world_size=1, accumulation_steps=2, seed=5)
    ranks = [EpochBatchSampler(40, 3, world_size=2, rank=r, accumulation_steps=1, seed=5) for r in range(2)]
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        single_batches = list(single)
        assert len(single_batches) == 2 * single.steps_per_epoch == 12
        assert single_batches[0::2] == list(ranks[0]) and single_batches[1::2] == list(ranks[1])
        assert len({i for batch in single_batches for i in batch}) == 36  # no pair twice in an epoch
    single.set_epoch(1, start_step=4)
    assert list(single) == single_batches[8:]
    single.set_epoch(0)
    assert list(single) != single_batches  # a new permutation each epoch


# --- network set-up --------------------------------------------------------------------------
def test_backbone_starts_from_a_torchvision_file_or_from_scratch_only_when_asked(tmp_path, caplog):
    variant = load_variant(write_variant(tmp_path))
    reference = build_network(variant.model, variant.tracker.search_size).backbone[0].body.state_dict()
    # A torchvision resnet18 state dict: BN step counters, layer4 and fc, which the cut body lacks.
    torchvision_layout = {key: torch.randn_like(value) if value.is_floating_point() else value
                          for key, value in reference.items()}
    for key in [k for k in reference if k.endswith('running_var')]:
        torchvision_layout[key.replace('running_var', 'num_batches_tracked')] = torch.tensor(0)
    torchvision_layout.update({'layer4.0.conv1.weight': torch.zeros(512, 256, 3, 3),
                               'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)})
    weights = tmp_path / 'resnet18-imagenet.pth'
    torch.save(torchvision_layout, weights)

    data = training_config(tmp_path)
    data['model'] = {'variant': data['model']['variant'], 'pretrained_backbone': str(weights)}
    network = build_network(variant.model, variant.tracker.search_size)
    initialise_backbone(network, config_from_dict(data))
    for key, value in network.backbone[0].body.state_dict().items():
        assert torch.equal(value, torchvision_layout[key]), key

    data['model'] = {'variant': data['model']['variant']}
    with pytest.raises(ConfigError, match='--pretrained-backbone FILE'):
        initialise_backbone(network, config_from_dict(data))
    data['model']['from_scratch'] = True
    with caplog.at_level('WARNING', logger='stark_training'):
        initialise_backbone(network, config_from_dict(data))
    assert 'TRAINING FROM SCRATCH' in caplog.text


def test_parameter_groups_freeze_the_stem_and_scale_the_backbone_lr(tmp_path):
    variant = load_variant(write_variant(tmp_path))
    network = build_network(variant.model, variant.tracker.search_size)
    set_trainable(network, stage=1)
    body = network.backbone[0].body
    assert not any(p.requires_grad for p in [*body.conv1.parameters(), *body.layer1.parameters()])
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert not any(p.requires_grad for p in network.cls_head.parameters())
    groups = parameter_groups(network, 1e-4, 0.1)
    assert [group['lr'] for group in groups] == [1e-4, pytest.approx(1e-5)]
    assert {id(p) for p in groups[1]['params']} == {id(p) for p in network.backbone.parameters() if p.requires_grad}


# --- training runs ---------------------------------------------------------------------------
class Repeated(torch.utils.data.Dataset):
    """A fixed handful of pairs, repeated to `length` items."""

    def __init__(self, pairs: list[dict], length: int) -> None:
        self.pairs, self.length = pairs, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.pairs[index % len(self.pairs)]


@pytest.mark.slow
def test_overfit_stage1_on_a_handful_of_real_pairs_cuts_the_loss_2_5_fold_in_60_steps(tmp_path):
    """Four real COCO128 / DAVIS pairs (TrackingPairDataset on ../shared/data), batch 4, the tiny
    model from scratch at lr 2e-3: after 60 steps the mean loss of the last 10 steps is below 1/2.5
    of the first 10 (observed here: 2.59 -> 0.76, 3.4x) and the boxes overlap the targets (IoU)."""
    from stark_training.config import processing_settings
    from stark_training.datasets import open_dataset
    from stark_training.sampling import TrackingPairDataset

    config = config_from_dict(training_config(tmp_path, dropout=0.0, samples=240, batch_size=4, lr=2e-3,
                                              print_interval=20))
    coco = open_dataset('coco', shared_data('coco128'), split='train2017')
    davis = open_dataset('davis', shared_data('davis2016'), resolution='288p', year='2016', imageset='val',
                         videos=['camel', 'dog'])
    source = TrackingPairDataset([coco, davis], [1, 1], 4, processing_settings(config), stage=1,
                                 num_templates=2, seed=3)
    pairs = [source[i] for i in range(4)]
    assert pairs[0]['search_images'].shape == (3, 128, 128)
    result = Trainer(config, tmp_path / 'run', device='cpu', dataset=Repeated(pairs, 240), tensorboard=False).run()
    losses = [entry['loss'] for entry in result.history]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first / 2.5, f'loss went from {first:.3f} to {last:.3f}'
    assert sum(entry['iou'] for entry in result.history[-10:]) / 10 > 0.4


@pytest.mark.slow
def test_torchrun_ddp_two_processes_equal_one_process_with_the_same_batch(tmp_path):
    """torchrun --nproc_per_node=2 (Gloo, CPU), batch 2 per process, 3 steps, against one process
    with batch 2 and 2 accumulated micro-batches (the same pairs; the box head's BatchNorm normalises
    per micro-batch exactly as it does per process). Dropout 0; backbone BN is frozen. Tolerance:
    1e-6 absolute on every parameter (observed: all bit-identical). Not compared: the box head's
    BatchNorm running statistics, which DDP takes from rank 0 alone (as in the original)."""
    ddp_dir, single_dir = tmp_path / 'ddp', tmp_path / 'single'
    ddp_config = write_config(tmp_path, training_config(tmp_path, dropout=0.0, samples=12), 'ddp.yaml')
    single_config = write_config(tmp_path, training_config(tmp_path, dropout=0.0, samples=12,
                                                           accumulation_steps=2), 'single.yaml')
    ddp = start_stark_train('--config', ddp_config, '--output', ddp_dir, torchrun_processes=2)
    single = start_stark_train('--config', single_config, '--output', single_dir)  # meanwhile
    ddp_log, single_log = finish(ddp), finish(single)
    assert '2 process(es) x batch 2 x 1 micro-batch(es), 3 steps per epoch' in ddp_log
    assert ddp_log.count('ETA epoch') == 3  # one progress line per step, from rank 0 only
    assert '1 process(es) x batch 2 x 2 micro-batch(es), 3 steps per epoch' in single_log

    ddp_weights = load_model(ddp_dir / 'checkpoints' / 'STARKST_ep0001.pth.tar').network
    single_weights = load_model(single_dir / 'checkpoints' / 'STARKST_ep0001.pth.tar').network
    torch.manual_seed(42)  # the trainer's seed: the same initial weights
    start = build_network(ddp_weights.config, 128).state_dict()
    moved = 0
    for (name, a), (_, b) in zip(ddp_weights.named_parameters(), single_weights.named_parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), f'{name}: max difference {(a - b).abs().max():.3g}'
        moved += not torch.equal(a, start[name])
    assert moved > 50  # the steps did change the weights


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f'the run ended before writing {path}: {process.communicate()}'
        assert time.monotonic() < deadline, f'{path} did not appear within {timeout} s'
        time.sleep(0.02)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_ends_with_bit_identical_weights(tmp_path):
    """2 epochs of 4 steps with dropout (so the random generators matter), a resume checkpoint
    every 2 steps; the run is SIGKILLed as soon as the first one exists, then resumed: its final
    weights and buffers equal (torch.equal) those of a run that was never interrupted."""
    config = write_config(tmp_path, training_config(tmp_path, dropout=0.1, samples=8, epoch=2,
                                                    checkpoint_interval=2))
    whole = start_stark_train('--config', config, '--output', tmp_path / 'whole')  # runs meanwhile
    process = start_stark_train('--config', config, '--output', tmp_path / 'killed')
    resume_file = tmp_path / 'killed' / 'checkpoints' / 'last.pth.tar'
    try:
        _wait_for(resume_file, process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    state = read_checkpoint(resume_file).extra['training_state']
    assert state['epoch'] == 0 and 0 < state['step_in_epoch'] < 4, 'the kill did not land mid-epoch'

    resumed = stark_train('--config', config, '--output', tmp_path / 'killed', '--resume')
    assert f'resumed from {resume_file} at epoch 1, step {state["step_in_epoch"]}' in resumed
    assert 'ETA epoch' in resumed
    finish(whole)
    whole = read_checkpoint(tmp_path / 'whole' / 'checkpoints' / 'STARKST_ep0002.pth.tar').state_dict
    again = read_checkpoint(tmp_path / 'killed' / 'checkpoints' / 'STARKST_ep0002.pth.tar').state_dict
    assert whole.keys() == again.keys()
    different = [key for key in whole if not torch.equal(whole[key], again[key])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


def test_resume_refuses_to_overwrite_a_run_or_to_read_a_weights_only_file(tmp_path):
    config = config_from_dict(training_config(tmp_path))
    (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
    (tmp_path / 'run' / 'checkpoints' / 'last.pth.tar').write_bytes(b'')
    with pytest.raises(FileExistsError, match='pass --resume'):
        Trainer(config, tmp_path / 'run', device='cpu', tensorboard=False).run()
    variant = config.variant()
    weights_only = save_checkpoint(tmp_path / 'weights.pth.tar', build_network(variant.model, 128), variant, 1)
    with pytest.raises(CheckpointError, match='no training state'):
        Trainer(config, tmp_path / 'other', device='cpu', resume=weights_only, tensorboard=False).run()


@pytest.mark.slow
def test_stage2_from_a_stage1_checkpoint_changes_only_the_score_head(tmp_path):
    """Two stage-2 steps (half the pairs negative): every parameter and buffer outside the score
    head is unchanged, every score-head parameter moved, and the result loads with load_model."""
    data = training_config(tmp_path, samples=4, stage=2, epoch=1, lr=1e-3)
    config = config_from_dict(data)
    variant = config.variant()
    torch.manual_seed(0)
    stage1 = save_checkpoint(tmp_path / 'STARKST_ep0500.pth.tar', build_network(variant.model, 128), variant, 500)
    data['model'] = {'variant': data['model']['variant'], 'stage1_checkpoint': str(stage1)}
    result = Trainer(config_from_dict(data), tmp_path / 'st2', device='cpu', tensorboard=False).run()
    assert result.position.global_step == 2
    before = read_checkpoint(stage1).state_dict
    after = load_model(result.epoch_checkpoint)
    assert after.variant.variant == 'tiny'
    for key, value in after.network.state_dict().items():
        if key.startswith('cls_head.'):
            assert not torch.equal(value, before[key]), f'{key} did not train'
        else:
            assert torch.equal(value, before[key]), f'{key} changed in stage 2'
    with pytest.raises(ConfigError, match='--stage1-checkpoint'):
        data['model'] = {'variant': data['model']['variant']}
        Trainer(config_from_dict(data), tmp_path / 'st2b', device='cpu', tensorboard=False).run()


def test_resume_from_a_torchscript_bomb_refuses_it_without_running_it(tmp_path):
    from hostile_files import write_torchscript_bomb

    marker = tmp_path / 'marker'
    write_torchscript_bomb(tmp_path / 'run' / 'checkpoints' / 'last.pth.tar', marker)
    config = config_from_dict(training_config(tmp_path))
    with pytest.raises(CheckpointError):
        Trainer(config, tmp_path / 'run', device='cpu', resume=True, tensorboard=False).run()
    assert not marker.exists()


@pytest.mark.slow
def test_tensorboard_scalars_and_validation_losses_are_written(tmp_path):
    pytest.importorskip('tensorboard', reason='the train extra (tensorboard) is not installed')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = training_config(tmp_path, samples=4, epoch=2, val_epoch_interval=2)
    data['data']['val'] = {'datasets': [{'name': 'synthetic', 'options': {'num_sequences': 2, 'seed': 100}}],
                           'samples_per_epoch': 4}
    Trainer(config_from_dict(data), tmp_path / 'run', device='cpu').run()
    events = EventAccumulator(str(tmp_path / 'run' / 'tensorboard'))
    events.Reload()
    tags = events.Tags()['scalars']
    assert {'train/loss', 'train/giou', 'train/l1', 'train/iou', 'train/lr', 'val/loss', 'val/iou'} <= set(tags)
    assert [event.step for event in events.Scalars('train/loss')] == [1, 2, 3, 4]
    assert [event.step for event in events.Scalars('val/loss')] == [4]  # after epoch 2 only


class _Payload:
    """Pickles as a call to os.system: what a hostile resume file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class _Stranger:
    """An arbitrary class: the safe loader gives an inert placeholder, which a resume state refuses."""


@pytest.mark.parametrize('smuggled', ['payload', 'object'])
def test_resume_refuses_a_state_with_pickled_objects_without_running_them(tmp_path, smuggled):
    config = config_from_dict(training_config(tmp_path))
    variant = config.variant()
    marker = tmp_path / 'marker'
    state = {'format': 1, 'stage': 1, 'extra': _Payload(marker) if smuggled == 'payload' else _Stranger()}
    path = save_checkpoint(tmp_path / 'run' / 'checkpoints' / 'last.pth.tar', build_network(variant.model, 128),
                           variant, 0, {'training_state': state})
    expected = 'could run code' if smuggled == 'payload' else r"training state\['extra'\] holds a _Stranger"
    with pytest.raises(CheckpointError, match=expected):
        Trainer(config, tmp_path / 'run', device='cpu', resume=True, tensorboard=False).run()
    assert not marker.exists()
    assert path.exists()


def test_stark_train_reports_a_bad_config_key_and_exits_2(tmp_path, caplog):
    from stark_training.cli import main

    data = training_config(tmp_path)
    data['train']['bacth_size'] = 4
    path = write_config(tmp_path, data)
    with caplog.at_level('ERROR', logger='stark_training'):
        assert main(['--config', str(path), '--output', str(tmp_path / 'run'), '--device', 'cpu']) == 2
    assert f'{path}: unknown key train.bacth_size' in caplog.text
    assert not (tmp_path / 'run').exists()


def test_bf16_autocast_on_cpu_trains_fp32_weights(tmp_path, caplog):
    config = config_from_dict(training_config(tmp_path, samples=2, amp='bf16', lr=1e-3))
    with caplog.at_level('INFO', logger='stark_training'):
        result = Trainer(config, tmp_path / 'run', device='cpu', tensorboard=False).run()
    assert 'torch.bfloat16' in caplog.text
    assert len(result.history) == 1 and 0 < result.history[0]['loss'] < 100
    trained = read_checkpoint(result.epoch_checkpoint).state_dict
    torch.manual_seed(42)  # the trainer's seed: the initial weights
    initial = build_network(config.variant().model, 128).state_dict()
    assert all(value.dtype != torch.bfloat16 for value in trained.values())
    assert not torch.equal(trained['bottleneck.weight'], initial['bottleneck.weight'])
