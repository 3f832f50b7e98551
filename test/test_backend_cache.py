"""The artefact cache and the TensorRT engine-cache logic, without TensorRT (builder injected)."""
from __future__ import annotations

import json

import pytest

from stark_model.backends.cache import ArtifactCache, key_hash
from stark_model.backends.tensorrt_backend import cached_engine, engine_key

ONNX = b'onnx graph bytes'


class FakeTensorRT:
    """Stands in for TensorRT's builder and runtime: an 'engine' is b'engine:' + the ONNX bytes."""

    def __init__(self) -> None:
        self.builds = 0

    def build(self, onnx_data: bytes) -> bytes:
        self.builds += 1
        return b'engine:' + onnx_data

    @staticmethod
    def deserialize(data: bytes):
        # TensorRT's deserialize_cuda_engine returns None for bytes it cannot use.
        return ('engine', data) if data.startswith(b'engine:') else None


def key(**changes) -> dict[str, str]:
    parts = dict(onnx_data=ONNX, gpu_name='NVIDIA H100', capability='9.0', tensorrt_version='10.9.0',
                 precision='fp16', max_targets=64)
    parts.update(changes)
    return engine_key(**parts)


def get(cache: ArtifactCache, trt: FakeTensorRT, engine_key_: dict[str, str], onnx: bytes = ONNX):
    return cached_engine(cache, 'lite-decode-trt', onnx, engine_key_, trt.build, trt.deserialize)


def test_engine_built_once_then_loaded_from_disk(tmp_path):
    trt = FakeTensorRT()
    first = get(ArtifactCache(tmp_path), trt, key())
    second = get(ArtifactCache(tmp_path), trt, key())  # a new process: a fresh cache object
    assert first == second == ('engine', b'engine:' + ONNX)
    assert trt.builds == 1
    sidecar = json.loads(next(tmp_path.glob('*.json')).read_text())
    assert sidecar['gpu'] == 'NVIDIA H100' and sidecar['tensorrt'] == '10.9.0'


@pytest.mark.parametrize('change', [dict(gpu_name='NVIDIA A100'), dict(capability='8.0'),
                                    dict(tensorrt_version='10.10.0'), dict(precision='fp32'),
                                    dict(max_targets=16), dict(onnx_data=b'retrained weights')])
def test_any_key_change_rebuilds_and_replaces_the_stale_engine(tmp_path, change):
    trt = FakeTensorRT()
    get(ArtifactCache(tmp_path), trt, key())
    onnx = change.get('onnx_data', ONNX)
    assert get(ArtifactCache(tmp_path), trt, key(**change), onnx) == ('engine', b'engine:' + onnx)
    assert trt.builds == 2
    assert len(list(tmp_path.glob('*.bin'))) == 1, 'the stale engine was removed'


@pytest.mark.parametrize('corruption', [b'', b'garbage', b'engine'])
def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, corruption):
    trt = FakeTensorRT()
    cache = ArtifactCache(tmp_path)
    get(cache, trt, key())
    cache.path('lite-decode-trt', key()).write_bytes(corruption)
    with pytest.warns(RuntimeWarning, match='cannot be loaded.*rebuilding'):
        assert get(cache, trt, key()) == ('engine', b'engine:' + ONNX)
    assert trt.builds == 2
    assert cache.path('lite-decode-trt', key()).read_bytes() == b'engine:' + ONNX


def test_failed_build_leaves_no_cache_file(tmp_path):
    def failing_build(_: bytes) -> bytes:
        raise RuntimeError('builder ran out of memory')
    with pytest.raises(RuntimeError, match='out of memory'):
        cached_engine(ArtifactCache(tmp_path), 'x', ONNX, key(), failing_build, FakeTensorRT.deserialize)
    assert not list(tmp_path.glob('*.bin'))


def test_key_hash_ignores_order_and_names_differ_by_key():
    assert key_hash({'a': '1', 'b': '2'}) == key_hash({'b': '2', 'a': '1'})
    cache = ArtifactCache('/nowhere')
    assert cache.path('n', key()) != cache.path('n', key(gpu_name='other'))


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('STARK_CACHE_DIR', str(tmp_path / 'c'))
    assert ArtifactCache().directory == tmp_path / 'c'
    monkeypatch.delenv('STARK_CACHE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert ArtifactCache().directory == tmp_path / 'x' / 'stark_ros'
