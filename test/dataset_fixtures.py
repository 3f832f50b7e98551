"""Helpers for dataset tests: tiny real image files and access to ../shared/data."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
SHARED_DATA = SHARED / 'data'


def require_shared(path: Path, present: Callable[[Path], bool] = Path.is_dir) -> Path:
    """`path` under ../shared: skipped where absent, a failure under CI=true (CI lays ../shared out)."""
    if not present(path):
        if os.environ.get('CI') == 'true':
            pytest.fail(f'{path} is missing, and CI=true requires it')
        pytest.skip(f'{path} is absent (a user clone without ../shared)')
    return path


def shared_data(name: str) -> Path:
    """../shared/data/<name>: skipped where absent, a failure under CI=true."""
    return require_shared(SHARED_DATA / name)


def write_jpeg(path: Path, width: int = 64, height: int = 48, value: int = 128) -> Path:
    """A small real JPEG file (a flat grey image with a brighter square)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), value, np.uint8)
    image[height // 4:height // 2, width // 4:width // 2] = 250
    assert cv2.imwrite(str(path), image)
    return path


def write_frames(folder: Path, names: list[str], width: int = 64, height: int = 48) -> list[Path]:
    """JPEG frames with the given file names in `folder`."""
    return [write_jpeg(folder / name, width, height) for name in names]


def write_palette_png(path: Path, ids: np.ndarray, palette: list[tuple[int, int, int]]) -> Path:
    """An indexed-colour (palette) PNG whose pixel indices are `ids`, as DAVIS-2017/YouTube-VOS masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = ids.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

    raw = b''.join(b'\x00' + ids[row].astype(np.uint8).tobytes() for row in range(height))
    data = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 3, 0, 0, 0))
            + chunk(b'PLTE', bytes(v for colour in palette for v in colour)) + chunk(b'IDAT', zlib.compress(raw))
            + chunk(b'IEND', b''))
    path.write_bytes(data)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    """A text file with one entry per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{line}\n' for line in lines))
    return path
