"""Result files as the benchmarks' toolkits and servers take them.

| layout | files per sequence | used by |
|---|---|---|
| `ope` | `<seq>.txt` (one `x,y,w,h` line per frame) and `times/<seq>_time.txt` (seconds per frame) | LaSOT, OTB, UAV123, NfS toolkits (got10k toolkit layout), generic folders |
| `got10k` | `<seq>/<seq>_001.txt` (boxes of run 1) and `<seq>/<seq>_time.txt` | GOT-10k server (zip of the folders) and its val toolkit |
| `trackingnet` | `<seq>.txt` | TrackingNet server (zip of the `.txt` files at the archive root) |

Boxes are written comma-separated with 3 decimals, as the got10k toolkit writes them. Every file is
written to a temporary name and renamed, and the box file last, so a box file that exists is a
complete result (the runner's resume test).
"""
from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import numpy as np

LAYOUTS = ('ope', 'got10k', 'trackingnet')
# Datasets whose server or toolkit expects a layout other than 'ope'.
DATASET_LAYOUTS = {'got10k': 'got10k', 'trackingnet': 'trackingnet'}


class FormatError(ValueError):
    """A result file that cannot be read back (names the file and line)."""


def layout_for(dataset: str) -> str:
    """The result layout the benchmark of `dataset` expects."""
    return DATASET_LAYOUTS.get(dataset, 'ope')


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., 'x') rather than mkstemp: the file gets the umask's permissions, not 0600.
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial')
    try:
        with open(temporary, 'x') as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def boxes_text(boxes: np.ndarray) -> str:
    """One 'x,y,w,h' line per box, 3 decimals."""
    return ''.join(','.join(f'{v:.3f}' for v in box) + '\n' for box in np.asarray(boxes, np.float64))


def times_text(times: np.ndarray) -> str:
    """One time in seconds per line, 8 decimals."""
    return ''.join(f'{t:.8f}\n' for t in np.asarray(times, np.float64))


def result_paths(folder: Path, layout: str, sequence: str) -> tuple[Path, Path | None]:
    """(box file, time file or None) of a sequence in a result folder of `layout`."""
    folder = Path(folder)
    if layout == 'ope':
        return folder / f'{sequence}.txt', folder / 'times' / f'{sequence}_time.txt'
    if layout == 'got10k':
        return folder / sequence / f'{sequence}_001.txt', folder / sequence / f'{sequence}_time.txt'
    if layout == 'trackingnet':
        return folder / f'{sequence}.txt', None
    raise ValueError(f'unknown result layout {layout!r} (known: {", ".join(LAYOUTS)})')


def write_result(folder: Path, layout: str, sequence: str, boxes: np.ndarray, times: np.ndarray) -> Path:
    """Write one sequence's boxes (and times, where the layout has them); returns the box file."""
    box_path, time_path = result_paths(folder, layout, sequence)
    if time_path is not None:
        write_atomically(time_path, times_text(times))
    write_atomically(box_path, boxes_text(boxes))
    return box_path


def is_finished(folder: Path, layout: str, sequence: str) -> bool:
    """Whether the sequence's box file exists (it is written last and atomically)."""
    return result_paths(folder, layout, sequence)[0].is_file()


def read_result(folder: Path, layout: str, sequence: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(boxes (N, 4), times (N,) or None) of a sequence; FormatError naming file and line."""
    box_path, time_path = result_paths(folder, layout, sequence)
    boxes = _read_rows(box_path, 4)
    times = _read_rows(time_path, 1)[:, 0] if time_path is not None and time_path.is_file() else None
    return boxes, times


def _read_rows(path: Path, columns: int) -> np.ndarray:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise FormatError(f'cannot read {path}: {error.strerror}') from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.replace('\t', ',').replace(' ', ',').split(',')
        fields = [f for f in fields if f]
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise FormatError(f'{path}:{number}: not a number in {line!r}') from None
        if len(values) < columns:
            raise FormatError(f'{path}:{number}: expected {columns} values, got {len(values)}: {line!r}')
        rows.append(values[:columns])
    return np.asarray(rows, np.float64).reshape(-1, columns)


def pack_submission(folder: Path, layout: str, sequences: list[str], archive: Path) -> Path:
    """Zip a finished GOT-10k or TrackingNet result folder as its server takes it: GOT-10k folders
    `<seq>/...` or TrackingNet `<seq>.txt` at the archive root. Every sequence must be finished."""
    if layout not in ('got10k', 'trackingnet'):
        raise ValueError(f'layout {layout!r} has no server submission (got10k and trackingnet do)')
    missing = [s for s in sequences if not is_finished(folder, layout, s)]
    if missing:
        raise FileNotFoundError(f'{len(missing)} sequences have no result in {folder} '
                                f'(first: {missing[0]}); run them before packing')
    archive.parent.mkdir(parents=True, exist_ok=True)
    temporary = archive.with_name(f'.{archive.name}.partial')
    with zipfile.ZipFile(temporary, 'w', zipfile.ZIP_DEFLATED) as bundle:
        for sequence in sequences:
            box_path, time_path = result_paths(folder, layout, sequence)
            for path in (box_path, time_path):
                if path is not None:
                    bundle.write(path, path.relative_to(folder).as_posix())
    os.replace(temporary, archive)
    return archive
