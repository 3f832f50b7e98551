"""The ONNX graphs of a network, exported once and kept in the artefact cache (keyed by weights)."""
from __future__ import annotations

from typing import Callable

from ..config import TrackerConfig
from ..export import EXPORT_FORMAT, OPSET, export_onnx, model_fingerprint
from ..network import StarkNetwork
from .cache import ArtifactCache

GRAPHS = ('encode_template', 'encode_search', 'decode')


def model_label(network: StarkNetwork) -> str:
    """Cache-entry prefix that tells models apart (so two models do not evict each other)."""
    cfg = network.config
    return f'{cfg.backbone}-{cfg.hidden_dim}-{"st" if cfg.score_head else "s"}'


def checked_onnx(data: bytes) -> bytes:
    """The bytes if they parse as an ONNX model (so that a corrupt cache file is rebuilt)."""
    import onnx
    onnx.load_model_from_string(data)
    return data


def cached_onnx(network: StarkNetwork, config: TrackerConfig, cache: ArtifactCache,
                load: Callable[[bytes], object] = checked_onnx) -> dict[str, object]:
    """{graph name: load(onnx bytes)}; exports all three graphs when any is missing or unloadable."""
    fingerprint = model_fingerprint(network, config)
    exported: dict[str, bytes] = {}

    def build(name: str) -> Callable[[], bytes]:
        def run() -> bytes:
            if not exported:
                exported.update(export_onnx(network, config).graphs)
            return exported[name]
        return run

    return {name: cache.load_or_build(f'{model_label(network)}-{name}',
                                      {'model': fingerprint, 'graph': name, 'opset': str(OPSET),
                                       'format': str(EXPORT_FORMAT)}, build(name), load)
            for name in GRAPHS}
