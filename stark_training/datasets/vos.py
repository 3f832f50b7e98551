"""Video object segmentation datasets (DAVIS, YouTube-VOS layouts) as box sequences, one per object.

Layout: `<root>/JPEGImages/<resolution>/<video>/<frame>.jpg` and
`<root>/Annotations/<resolution>/<video>/<frame>.png` (DAVIS; YouTube-VOS has no resolution
level: pass resolution=None). resolution='auto' (the default) takes the resolution folder that
exists (480p where there are several; DAVIS ships 480p and Full-Resolution, ../shared/data/davis2016
has 288p). Masks are either single-object 0/255 greyscale (DAVIS-2016) or
palette PNGs whose indices are object ids (DAVIS-2017, YouTube-VOS). A frame's box is the extent of
the object's pixels; frames where the object has no pixel get a NaN box and visible=False. Only
frames that have a mask file are used (YouTube-VOS annotates every 5th frame).
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import cv2
import numpy as np

from .base import DatasetError, Sequence, SequenceDataset, read_lines, require_dir, sorted_frames

PREFERRED_RESOLUTION = '480p'
# DAVIS's resolution folder names: '480p', '288p', ... and 'Full-Resolution'.
RESOLUTION_NAME = re.compile(r'\d+p|Full-Resolution')


class VOS(SequenceDataset):
    """One Sequence per (video, object id), named '<video>' for single-object videos else '<video>_<id>'."""

    name = 'vos'

    def __init__(self, root: str | Path, resolution: str | None = 'auto', year: str | int | None = None,
                 imageset: str | None = None, videos: list[str] | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        if resolution == 'auto':
            resolution = find_resolution(self.root)
        self.resolution = resolution
        sub = (resolution,) if resolution else ()
        self.image_root = require_dir(self.root.joinpath('JPEGImages', *sub), 'JPEGImages/<resolution>')
        self.mask_root = require_dir(self.root.joinpath('Annotations', *sub), 'Annotations/<resolution>')
        if videos is None and imageset is not None:
            list_path = self.root / 'ImageSets' / str(year or '') / f'{imageset}.txt'
            videos = [line for line in read_lines(list_path) if line]
        if videos is None:
            videos = sorted(p.name for p in self.mask_root.iterdir() if p.is_dir())
        # YouTube-VOS lists each video's objects in meta.json: masks are then read only when a
        # sequence is first used; otherwise every video's masks are scanned now to find its objects.
        meta_path = self.root / 'meta.json'
        listed = youtube_vos_objects(meta_path) if meta_path.is_file() else {}
        self._boxes: dict[str, dict[int, np.ndarray]] = {}
        self._tracks: list[tuple[str, int]] = []
        for video in videos:
            if video in listed:
                ids = listed[video]
            else:
                self._boxes[video] = mask_boxes(self._frame_pairs(video)[1])
                ids = sorted(self._boxes[video])
            for object_id in ids:
                self._tracks.append((video, object_id))
                self._names.append(video if len(ids) == 1 else f'{video}_{object_id}')

    def _frame_pairs(self, video: str) -> tuple[list[Path], list[Path]]:
        """JPEG frames that have a mask PNG, and those PNGs, in frame order."""
        masks = sorted_frames(self.mask_root / video, ('.png',))
        image_dir = require_dir(self.image_root / video, f'the frames of {video}')
        frames = []
        for mask in masks:
            frame = image_dir / f'{mask.stem}.jpg'
            if not frame.is_file():
                raise DatasetError(f'{mask}: no frame {frame.name} in {image_dir}')
            frames.append(frame)
        return frames, masks

    def _load(self, index: int) -> Sequence:
        video, object_id = self._tracks[index]
        frames, masks = self._frame_pairs(video)
        if video not in self._boxes:
            self._boxes[video] = mask_boxes(masks)
        boxes = self._boxes[video].get(object_id, np.full((len(frames), 4), np.nan)).copy()
        visible = np.isfinite(boxes).all(axis=1)
        return Sequence(self._names[index], self.name, frames, boxes, visible,
                        attributes={'video': video, 'object_id': object_id})


def find_resolution(root: Path) -> str | None:
    """The resolution folder that both JPEGImages/ and Annotations/ hold (480p where there are
    several); None when JPEGImages/ holds the videos directly (YouTube-VOS)."""
    images = require_dir(root / 'JPEGImages', 'JPEGImages/<resolution>/<video>/')
    levels = sorted(p.name for p in images.iterdir() if p.is_dir() and RESOLUTION_NAME.fullmatch(p.name))
    if not levels:
        return None
    found = [name for name in levels if (root / 'Annotations' / name).is_dir()]
    if not found:
        raise DatasetError(f'{root / "Annotations"}: no {" or ".join(levels)} folder beside JPEGImages/{levels[0]}')
    if PREFERRED_RESOLUTION in found:
        return PREFERRED_RESOLUTION
    if len(found) > 1:
        raise DatasetError(f'{images}: several resolutions ({", ".join(found)}); name one (resolution=...)')
    return found[0]


def mask_boxes(masks: list[Path]) -> dict[int, np.ndarray]:
    """Per object id: (N, 4) xywh boxes of its pixels in each mask (NaN where it has none)."""
    per_frame = [object_boxes(read_object_ids(path)) for path in masks]
    ids = sorted({i for frame in per_frame for i in frame})
    result = {}
    for object_id in ids:
        boxes = np.full((len(masks), 4), np.nan)
        for t, frame in enumerate(per_frame):
            if object_id in frame:
                boxes[t] = frame[object_id]
        result[object_id] = boxes
    return result


def object_boxes(ids: np.ndarray) -> dict[int, tuple[float, float, float, float]]:
    """xywh extent of each non-zero id in an (H, W) id map (255 is DAVIS's 'void' and ignored in
    palette masks)."""
    boxes = {}
    present = np.flatnonzero(np.bincount(ids.ravel()))  # ids are small: cheaper than np.unique
    for object_id in present[present > 0]:
        mask = ids == object_id
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes[int(object_id)] = (float(cols[0]), float(rows[0]),
                                 float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
    return boxes


def read_object_ids(path: Path) -> np.ndarray:
    """(H, W) object ids of a mask PNG: palette indices, or 0/255 greyscale as 0/1."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f'{path}: missing or not a readable PNG mask')
    palette = png_palette(path)
    if palette is not None:
        # OpenCV expands palette PNGs to colour; map each colour back to its (first) index.
        bgr = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        codes = (bgr[..., 2].astype(np.int32) << 16) | (bgr[..., 1].astype(np.int32) << 8) | bgr[..., 0]
        palette_codes = np.array([(r << 16) | (g << 8) | b for r, g, b in palette], np.int32)
        unique_codes, first_index = np.unique(palette_codes, return_index=True)
        position = np.clip(np.searchsorted(unique_codes, codes), 0, len(unique_codes) - 1)
        if not (unique_codes[position] == codes).all():
            raise DatasetError(f'{path}: a pixel colour is not in the PNG palette')
        ids = first_index[position].astype(np.uint8)
        ids[ids == 255] = 0  # DAVIS marks ambiguous pixels 255 ('void')
        return ids
    if image.ndim != 2:
        raise DatasetError(f'{path}: colour mask without a palette; expected greyscale or palette PNG')
    if image.dtype != np.uint8:
        raise DatasetError(f'{path}: {image.dtype} mask; expected 8-bit greyscale or palette PNG')
    values = np.flatnonzero(np.bincount(image.ravel(), minlength=256))
    if set(values.tolist()) <= {0, 255}:
        return (image > 0).astype(np.uint8)  # DAVIS-2016: one object, 0/255
    return image


def png_palette(path: Path) -> list[tuple[int, int, int]] | None:
    """The PLTE colours of an indexed-colour PNG, or None when the PNG is not indexed."""
    data = path.read_bytes()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise DatasetError(f'{path}: not a PNG file')
    position, colour_type, palette = 8, None, None
    while position + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b'IHDR':
            colour_type = body[9]
        elif kind == b'PLTE':
            palette = [tuple(body[i:i + 3]) for i in range(0, len(body) - 2, 3)]
        elif kind == b'IDAT':
            break
        position += 12 + length
    return palette if colour_type == 3 else None


def youtube_vos_objects(meta_path: Path) -> dict[str, list[int]]:
    """Object ids per video from a YouTube-VOS meta.json ({'videos': {v: {'objects': {id: ..}}}})."""
    try:
        meta = json.loads(meta_path.read_text(encoding='utf-8'))
        return {video: sorted(int(k) for k in info['objects']) for video, info in meta['videos'].items()}
    except FileNotFoundError:
        raise DatasetError(f'{meta_path}: missing') from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f'{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})') from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f'{meta_path}: not a YouTube-VOS meta.json ({exc!r})') from None
