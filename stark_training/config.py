"""Training configuration as YAML: model, data and optimisation, with the original STARK's defaults.

Sections and keys follow the original's yaml (MODEL / DATA / TRAIN, lower-cased). Every key is
checked: an unknown key, a missing required key or a value of the wrong type raises ConfigError
naming the file and the dotted key. Defaults are the original's: AdamW lr 1e-4, weight decay
1e-4, backbone lr x0.1, gradient clipping 0.1, step decay x0.1, 16 pairs per GPU, 60000 pairs
per epoch, 500 epochs with the drop at 400 (stage 1) or 50 with the drop at 40 (stage 2).
Relative dataset roots and checkpoint paths are resolved against the YAML file's folder.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from stark_model.config import STRIDE, ConfigError, VariantConfig, load_variant, read_yaml

AMP_MODES = ('auto', 'off', 'bf16', 'fp16')
FEATURE_CACHE_RUNTIMES = ('onnxruntime', 'pytorch')  # what runs the frozen backbone on the crops
# Stage-dependent defaults of train.epoch and train.lr_drop_epoch (stark_st1 vs stark_st2).
STAGE_DEFAULTS = {1: {'epoch': 500, 'lr_drop_epoch': 400}, 2: {'epoch': 50, 'lr_drop_epoch': 40}}


@dataclass(frozen=True)
class DatasetEntry:
    """One training source: a reader name for stark_training.datasets.open_dataset, its root, its
    sampling weight, and reader options (split=..., etc.)."""

    name: str
    root: str | None = None  # None only for readers without files (synthetic)
    ratio: float = 1.0
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CropSettings:
    """DATA.TEMPLATE / DATA.SEARCH: crop factor and size, jitter, and crops per pair (None: from the
    model variant: its crop sizes; 2 templates for ST (dynamic template), 1 for S)."""

    factor: float
    size: int | None = None
    center_jitter: float = 0.0
    scale_jitter: float = 0.0
    number: int | None = None


@dataclass(frozen=True)
class TrainSplit:
    """DATA.TRAIN: the sources, their ratios and the pairs drawn per epoch."""

    datasets: tuple[DatasetEntry, ...]
    samples_per_epoch: int = 60000


@dataclass(frozen=True)
class ValSplit:
    """DATA.VAL: sources and pairs of the validation loss (the original: GOT-10k votval, 10000)."""

    datasets: tuple[DatasetEntry, ...]
    samples_per_epoch: int = 10000


@dataclass(frozen=True)
class FeatureCacheSettings:
    """DATA.FEATURE_CACHE (ours): train with the whole backbone frozen from its cached features;
    epoch e reuses the pairs of epoch e % chunks (0: off). See stark_training.feature_cache."""

    chunks: int = 0
    runtime: str = 'onnxruntime'  # one of FEATURE_CACHE_RUNTIMES
    folder: str | None = None     # None: <output>/feature_cache


@dataclass(frozen=True)
class DataConfig:
    """DATA: sources plus sampling/processing. `processing` holds further ProcessingSettings fields
    (augmentation probabilities, ...) by name; absent ones keep the original values."""

    train: TrainSplit
    val: ValSplit | None = None
    max_sample_interval: int = 200
    template: CropSettings = CropSettings(factor=2.0)
    search: CropSettings = CropSettings(factor=5.0, center_jitter=4.5, scale_jitter=0.5, number=1)
    sampler_mode: str | None = None  # causal / trident / trident_pro; None: causal (S), trident_pro (ST)
    seed: int = 0
    processing: dict = field(default_factory=dict)
    feature_cache: FeatureCacheSettings = FeatureCacheSettings()


@dataclass(frozen=True)
class ModelSection:
    """MODEL: the variant (name or YAML path) and where the starting weights come from."""

    variant: str = 'st50'
    pretrained_backbone: str | None = None  # local file: torchvision ImageNet ResNet, or NanoTrack v2's backbone .onnx
    from_scratch: bool = False               # random backbone; only when asked
    stage1_checkpoint: str | None = None     # stage 2 starts here
    init_checkpoint: str | None = None       # stage 1 (ours): start from these weights, e.g. to fine-tune


@dataclass(frozen=True)
class SchedulerConfig:
    """TRAIN.SCHEDULER: step decay by `decay_rate` every lr_drop_epoch epochs."""

    type: str = 'step'
    decay_rate: float = 0.1


@dataclass(frozen=True)
class TrainSection:
    """TRAIN: optimisation, loss weights, precision, logging and checkpointing."""

    stage: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    backbone_multiplier: float = 0.1
    grad_clip_norm: float = 0.1
    epoch: int | None = None          # None: 500 (stage 1) / 50 (stage 2)
    lr_drop_epoch: int | None = None  # None: 400 (stage 1) / 40 (stage 2)
    scheduler: SchedulerConfig = SchedulerConfig()
    batch_size: int = 16              # per process (per GPU)
    accumulation_steps: int = 1       # micro-batches per optimiser step
    num_worker: int = 8
    optimizer: str = 'adamw'
    giou_weight: float = 2.0
    l1_weight: float = 5.0
    cls_weight: float = 1.0
    amp: str = 'auto'                 # auto: bf16 (or fp16) on CUDA, fp32 on CPU
    val_epoch_interval: int = 20      # epochs between validation losses (with data.val)
    print_interval: int = 50          # steps between progress lines
    checkpoint_interval: int = 250    # steps between mid-epoch resume checkpoints (0: epoch ends only)
    seed: int = 42
    # Ours, beyond the original: the modules that train (parameter-name prefixes; None: the
    # stage's, see trainer.set_trainable), and a box loss on stage 2's positive pairs (0: off).
    trainable: tuple[str, ...] | None = None
    stage2_box_weight: float = 0.0


@dataclass(frozen=True)
class TrainingConfig:
    """A whole training run; `source` is the YAML file it came from (for messages and paths)."""

    model: ModelSection
    data: DataConfig
    train: TrainSection
    source: str = '<mapping>'

    def variant(self) -> VariantConfig:
        """The model variant this run trains."""
        return load_variant(self.model.variant)

    def search_size(self) -> int:
        """Search crop size of the training pairs: DATA.SEARCH.SIZE, else the variant's tracking size.
        The network has no size-bound weights (sine positions, corner grid from the size), so a
        model may be trained at one size and tracked at another."""
        return self.data.search.size or self.variant().tracker.search_size

    def num_templates(self) -> int:
        """Templates per training pair: DATA.TEMPLATE.NUMBER, else 2 for ST variants, 1 for S."""
        if self.data.template.number is not None:
            return self.data.template.number
        return 2 if self.variant().tracker.dynamic_template else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data (stored in checkpoints next to the weights)."""
        data = dataclasses.asdict(self)
        data.pop('source')
        return data


def _type_name(expected: Any) -> str:
    return getattr(expected, '__name__', str(expected))


def _convert(value: Any, expected: Any, key: str, source: str) -> Any:
    """Check `value` against a field annotation; build nested sections; ConfigError naming `key`."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _convert(value, inner, key, source)
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(f'{source}: {key} must be a non-empty list, got {value!r}')
        item_type = typing.get_args(expected)[0]
        return tuple(_convert(item, item_type, f'{key}[{index}]', source) for index, item in enumerate(value))
    if dataclasses.is_dataclass(expected):
        return build_section(expected, value, key, source)
    if expected is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f'{source}: {key} must be a mapping, got {value!r}')
        return dict(value)
    if expected is float and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what Python reads as a number.
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f'{source}: {key} must be a finite number, got {value!r}')
            return number
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f'{source}: {key} must be {_type_name(expected)}, got {value!r}')
    return value


def build_section(cls: type, data: Any, where: str, source: str) -> Any:
    """A config dataclass from a mapping, every key checked (unknown, missing, wrong type)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f'{source}: {where or "the top level"} must be a mapping, got {type(data).__name__}')
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != 'source'}
    prefix = f'{where}.' if where else ''
    for key in data:
        if key not in fields:
            raise ConfigError(f'{source}: unknown key {prefix}{key} (allowed here: {", ".join(fields)})')
    values = {}
    for name, f in fields.items():
        if name in data:
            value = data[name]
            if dataclasses.is_dataclass(f.default) and isinstance(value, Mapping):
                # A partly given section keeps the defaults of the keys it leaves out.
                value = {**dataclasses.asdict(f.default), **value}
            values[name] = _convert(value, hints[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f'{source}: missing key {prefix}{name}')
    return cls(**values)


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved))


def _check(config: TrainingConfig) -> None:
    """Cross-field rules, each error naming the key."""
    source, train, data = config.source, config.train, config.data
    if train.stage not in (1, 2):
        raise ConfigError(f'{source}: train.stage must be 1 or 2, got {train.stage}')
    if train.amp not in AMP_MODES:
        raise ConfigError(f'{source}: train.amp must be one of {", ".join(AMP_MODES)}, got {train.amp!r}')
    if train.optimizer.lower() != 'adamw':
        raise ConfigError(f'{source}: train.optimizer: only adamw (the original) is implemented, '
                          f'got {train.optimizer!r}')
    if train.scheduler.type.lower() != 'step':
        raise ConfigError(f'{source}: train.scheduler.type: only step (the original) is implemented, '
                          f'got {train.scheduler.type!r}')
    for key in ('batch_size', 'accumulation_steps', 'epoch', 'lr_drop_epoch', 'print_interval', 'val_epoch_interval'):
        if getattr(train, key) < 1:
            raise ConfigError(f'{source}: train.{key} must be at least 1, got {getattr(train, key)}')
    for key in ('num_worker', 'checkpoint_interval'):
        if getattr(train, key) < 0:
            raise ConfigError(f'{source}: train.{key} must not be negative, got {getattr(train, key)}')
    for key in ('lr', 'weight_decay', 'backbone_multiplier', 'grad_clip_norm'):
        if getattr(train, key) < 0:
            raise ConfigError(f'{source}: train.{key} must not be negative, got {getattr(train, key)}')
    for name, split in (('train', data.train), ('val', data.val)):
        if split is None:
            continue
        if split.samples_per_epoch < 1:
            raise ConfigError(f'{source}: data.{name}.samples_per_epoch must be at least 1')
        for index, entry in enumerate(split.datasets):
            if entry.ratio <= 0:
                raise ConfigError(f'{source}: data.{name}.datasets[{index}].ratio must be positive, got {entry.ratio}')
    cache = data.feature_cache
    if cache.chunks < 0:
        raise ConfigError(f'{source}: data.feature_cache.chunks must not be negative, got {cache.chunks}')
    if cache.runtime not in FEATURE_CACHE_RUNTIMES:
        raise ConfigError(f'{source}: data.feature_cache.runtime must be one of '
                          f'{", ".join(FEATURE_CACHE_RUNTIMES)}, got {cache.runtime!r}')
    if cache.chunks and train.trainable and any(name.startswith('backbone') for name in train.trainable):
        raise ConfigError(f'{source}: train.trainable names the backbone, which data.feature_cache keeps frozen')
    if train.stage2_box_weight < 0:
        raise ConfigError(f'{source}: train.stage2_box_weight must not be negative, got {train.stage2_box_weight}')
    if config.model.init_checkpoint and (config.model.pretrained_backbone or config.model.from_scratch):
        raise ConfigError(f'{source}: model.init_checkpoint holds the backbone weights too: leave out '
                          'model.pretrained_backbone and model.from_scratch')
    if config.model.pretrained_backbone and config.model.from_scratch:
        raise ConfigError(f'{source}: model.pretrained_backbone and model.from_scratch exclude each other')
    try:
        variant = config.variant()
    except ConfigError as error:
        raise ConfigError(f'{source}: model.variant: {error}') from None
    if data.template.size not in (None, variant.tracker.template_size):
        # The match prior reads fixed cells of the template grid, so templates keep the tracking size.
        raise ConfigError(f'{source}: data.template.size is {data.template.size}, but the {variant.variant} '
                          f'variant tracks with template crops of {variant.tracker.template_size} px '
                          '(leave the key out to use it)')
    if data.search.size is not None and (data.search.size <= 0 or data.search.size % STRIDE):
        raise ConfigError(f'{source}: data.search.size is {data.search.size}, not a positive multiple of the '
                          f'backbone stride {STRIDE}')
    if data.search.number not in (None, 1):
        raise ConfigError(f'{source}: data.search.number must be 1 (one search region per pair)')
    if data.template.number not in (None, 1, 2):
        raise ConfigError(f'{source}: data.template.number must be 1 (STARK-S) or 2 (STARK-ST)')
    if data.sampler_mode not in (None, 'causal', 'trident', 'trident_pro'):
        raise ConfigError(f'{source}: data.sampler_mode must be causal, trident or trident_pro, '
                          f'got {data.sampler_mode!r}')
    try:
        processing_settings(config)
    except ValueError as error:
        raise ConfigError(f'{source}: {error}') from None
    if train.stage == 2 and not variant.model.score_head:
        raise ConfigError(f'{source}: train.stage 2 trains the score head, which the {variant.variant} '
                          'variant does not have (model.variant must be an ST variant)')


def processing_settings(config: TrainingConfig) -> Any:
    """The sampling/processing settings of this run (stark_training.processing.ProcessingSettings)."""
    from .processing import ProcessingSettings

    variant = config.variant()
    derived: dict[str, Any] = {'max_gap': config.data.max_sample_interval}
    for crop, size in (('template', variant.tracker.template_size), ('search', config.search_size())):
        settings = getattr(config.data, crop)
        derived.update({f'{crop}_factor': settings.factor, f'{crop}_size': size,
                        f'{crop}_center_jitter': settings.center_jitter,
                        f'{crop}_scale_jitter': settings.scale_jitter})
    clashing = sorted(set(config.data.processing) & set(derived))
    if clashing:
        raise ValueError(f'data.processing.{clashing[0]} is set by data.template / data.search / '
                         'data.max_sample_interval; set it there')
    return ProcessingSettings.from_mapping({**config.data.processing, **derived}, where='data.processing')


def config_from_dict(raw: Any, source: str = '<mapping>', base: Path | None = None) -> TrainingConfig:
    """Validate a parsed training YAML; relative paths resolve against `base` (default: cwd)."""
    base = Path.cwd() if base is None else base
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{source}: a training config is a mapping with model, data and train sections')
    unknown = sorted(set(raw) - {'model', 'data', 'train'})
    if unknown:
        raise ConfigError(f'{source}: unknown key {unknown[0]} (allowed: model, data, train)')
    if 'data' not in raw:
        raise ConfigError(f'{source}: missing key data')
    model = build_section(ModelSection, raw.get('model'), 'model', source)
    data = build_section(DataConfig, raw['data'], 'data', source)
    train = build_section(TrainSection, raw.get('train'), 'train', source)
    stage_defaults = STAGE_DEFAULTS.get(train.stage, STAGE_DEFAULTS[1])
    train = dataclasses.replace(train, **{key: value for key, value in stage_defaults.items()
                                          if getattr(train, key) is None})
    variant_path = Path(model.variant)
    if variant_path.suffix in ('.yaml', '.yml') and not variant_path.is_absolute():
        model = dataclasses.replace(model, variant=str(base / variant_path))
    model = dataclasses.replace(model, pretrained_backbone=_resolve(model.pretrained_backbone, base),
                                stage1_checkpoint=_resolve(model.stage1_checkpoint, base),
                                init_checkpoint=_resolve(model.init_checkpoint, base))
    def resolved(split: Any) -> Any:
        return dataclasses.replace(split, datasets=tuple(dataclasses.replace(entry, root=_resolve(entry.root, base))
                                                         for entry in split.datasets))

    data = dataclasses.replace(data, train=resolved(data.train), val=resolved(data.val) if data.val else None,
                               feature_cache=dataclasses.replace(
                                   data.feature_cache, folder=_resolve(data.feature_cache.folder, base)))
    config = TrainingConfig(model, data, train, source)
    _check(config)
    return config


def load_training_config(path: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
                         ) -> TrainingConfig:
    """Read and validate a training YAML file; `overrides` ({'train': {'stage': 2}, ...}) replace
    its values before validation (so stage-dependent defaults follow an overridden stage)."""
    path = Path(path)
    raw = read_yaml(path, 'training config')
    if overrides and isinstance(raw, Mapping):
        raw = dict(raw)
        for section, values in overrides.items():
            current = raw.get(section)
            raw[section] = {**(current if isinstance(current, Mapping) else {}), **values}
    return config_from_dict(raw, str(path), path.resolve().parent)
