"""Model variants as YAML: the network's shape and the test-time tracker's parameters.

Variant files live in config/models/ (installed inside this package as model_configs/). Every key
is checked: an unknown or missing key, or a value of the wrong type, raises ConfigError naming
the file and the key.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

BACKBONES = ('resnet18', 'resnet50', 'resnet101', 'efficientnet_lite0', 'nanotrack_v2')  # backbones.BACKBONES


class ConfigError(ValueError):
    """A configuration file or mapping is invalid; the message names the source and the key."""


# Output stride of every backbone in the registry: crop sizes are multiples of it.
STRIDE = 16


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a STARK network."""

    backbone: str
    hidden_dim: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    feedforward_dim: int
    dropout: float
    num_queries: int
    head_channels: int
    score_head: bool
    # Ours (off in the original variants): add to every search token its cosine similarities to the
    # target's cells of the first template (the centre half of the template crop), projected to
    # the hidden size, before the encoder: template matching handed to the transformer.
    match_prior: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f'model.backbone: {self.backbone!r} is not one of {", ".join(BACKBONES)}')
        if self.hidden_dim % self.heads:
            raise ConfigError(f'model.hidden_dim ({self.hidden_dim}) must be divisible by '
                              f'model.heads ({self.heads})')
        if self.hidden_dim % 2:
            raise ConfigError('model.hidden_dim must be even (half of it encodes y, half x)')
        if self.head_channels % 8:
            raise ConfigError('model.head_channels must be divisible by 8 (the corner head halves it 3 times)')
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f'model.dropout: {self.dropout} is not in [0, 1)')
        for name in ('encoder_layers', 'decoder_layers', 'num_queries', 'feedforward_dim'):
            if getattr(self, name) < 1:
                raise ConfigError(f'model.{name} must be at least 1')


@dataclass(frozen=True)
class TrackerConfig:
    """Test-time parameters of the STARK tracker (crop factors and sizes, template update)."""

    template_factor: float
    template_size: int
    search_factor: float
    search_size: int
    dynamic_template: bool
    update_threshold: float = 0.5
    update_intervals: Mapping[str, int] = field(default_factory=lambda: {'default': 200})
    # Ours, not the original's (0 = off, which keeps S50/ST50/ST101 bit-exact): weight of a cosine-window
    # motion prior on the corner heat maps (heads.windowed_corners).
    corner_window: float = 0.0
    # What backend 'auto' runs on a CPU in fp32 (ours): 'onnxruntime' where it is measured faster
    # for the variant; 'pytorch' keeps the original's bits.
    cpu_backend: str = 'pytorch'
    # Ours (1 = off, the original): share of the predicted size change taken each frame.
    size_update_rate: float = 1.0

    def __post_init__(self) -> None:
        for name in ('template_size', 'search_size'):
            if getattr(self, name) % STRIDE:
                raise ConfigError(f'tracker.{name} must be a multiple of the backbone stride {STRIDE}')
        for name in ('template_factor', 'search_factor'):
            if getattr(self, name) <= 0:
                raise ConfigError(f'tracker.{name} must be positive')
        if not (math.isfinite(self.corner_window) and self.corner_window >= 0):
            raise ConfigError(f'tracker.corner_window must be a finite number >= 0, got {self.corner_window!r}')
        if not (math.isfinite(self.size_update_rate) and 0.0 < self.size_update_rate <= 1.0):
            raise ConfigError(f'tracker.size_update_rate must be in (0, 1], got {self.size_update_rate!r}')
        if self.cpu_backend not in ('pytorch', 'onnxruntime'):
            raise ConfigError(f'tracker.cpu_backend: {self.cpu_backend!r} is not one of pytorch, onnxruntime')
        if 'default' not in self.update_intervals:
            raise ConfigError('tracker.update_intervals needs a "default" entry')
        for dataset, interval in self.update_intervals.items():
            if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                raise ConfigError(f'tracker.update_intervals.{dataset}: {interval!r} is not a positive integer')

    def update_interval(self, dataset: str = 'default') -> int:
        """Frames between dynamic-template updates for a benchmark (any other name: 'default')."""
        return self.update_intervals.get(dataset.lower(), self.update_intervals['default'])


@dataclass(frozen=True)
class VariantConfig:
    """A named model variant: network shape plus tracker parameters."""

    variant: str
    model: ModelConfig
    tracker: TrackerConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain data (embedded in our checkpoints), readable back with variant_from_dict."""
        data = dataclasses.asdict(self)
        data['tracker']['update_intervals'] = dict(self.tracker.update_intervals)
        return data


def _check_keys(data: Any, cls: type, where: str, source: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f'{source}: {where or "the top level"} must be a mapping, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f'{where}.' if where else ''
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{source}: unknown key {prefix}{unknown[0]} (allowed: {", ".join(fields)})')
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f'{source}: missing key {prefix}{missing[0]}')
    return dict(data)


def _typed(value: Any, expected: type, key: str, source: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f'{source}: {key} must be {expected.__name__}, got {value!r}')
    return value


def _build(cls: type, data: Any, where: str, source: str) -> Any:
    values = _check_keys(data, cls, where, source)
    types = {'int': int, 'float': float, 'bool': bool, 'str': str}
    for f in dataclasses.fields(cls):
        if f.name in values and f.type in types:
            values[f.name] = _typed(values[f.name], types[f.type], f'{where}.{f.name}', source)
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f'{source}: {error}') from None


def variant_from_dict(data: Any, source: str = '<mapping>') -> VariantConfig:
    """Validate plain data (a parsed YAML file or a checkpoint's embedded config)."""
    top = _check_keys(data, VariantConfig, '', source)
    intervals = top['tracker'].get('update_intervals') if isinstance(top['tracker'], Mapping) else None
    if intervals is not None and not isinstance(intervals, Mapping):
        raise ConfigError(f'{source}: tracker.update_intervals must be a mapping of dataset: frames')
    return VariantConfig(
        variant=_typed(top['variant'], str, 'variant', source),
        model=_build(ModelConfig, top['model'], 'model', source),
        tracker=_build(TrackerConfig, top['tracker'], 'tracker', source),
    )


def variant_dir() -> Path:
    """Folder of the variant YAMLs: inside the installed package, else config/models of a checkout."""
    installed = Path(__file__).parent / 'model_configs'
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / 'config' / 'models'


def available_variants() -> list[str]:
    """Names accepted by load_variant (file stem without the 'stark_' prefix)."""
    return sorted(path.stem.removeprefix('stark_') for path in variant_dir().glob('stark_*.yaml'))


def load_variant(name_or_path: str | Path) -> VariantConfig:
    """A variant by name ('s50', 'st50', 'st101', 'lite') or from a YAML file path."""
    path = Path(name_or_path)
    if path.suffix not in ('.yaml', '.yml'):
        path = variant_dir() / f'stark_{str(name_or_path).lower()}.yaml'
        if not path.is_file():
            raise ConfigError(f'unknown model variant {str(name_or_path)!r}; '
                              f'available: {", ".join(available_variants())} or a path to a YAML file')
    return variant_from_dict(read_yaml(path, 'model config'), str(path))


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content; ConfigError naming the file (`what` says which kind) when unreadable."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f'cannot read {what} {path}: {error.strerror}') from None
    except yaml.YAMLError as error:
        raise ConfigError(f'{path}: not valid YAML: {error}') from None
