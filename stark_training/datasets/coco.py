"""COCO-style detection annotations as one-frame sequences, one per object (for template/search pairs
cut from the same image, as the original training does with COCO 2017).

Layout: `<root>/annotations/instances_<split>.json` and `<root>/images/<split>/<file_name>`.
Crowd annotations are skipped, as the original does. The original STARK reader also flags boxes
whose width or height is not above 50 px as invalid, meaning to avoid tiny targets, but its sampler
ignores that flag for image datasets, so in practice it still trained on them. Here they are
skipped (`min_size=50`, the stated intent); `min_size=0` keeps every non-empty box, which is what
the original effectively sampled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .base import DatasetError, Sequence, SequenceDataset, require_dir


class COCO(SequenceDataset):
    """Objects of a COCO-format split, each a one-frame Sequence named '<image id>_<annotation id>'."""

    name = 'coco'
    is_video = False

    def __init__(self, root: str | Path, split: str = 'train2017', min_size: float = 50.0) -> None:
        super().__init__()
        self.root = Path(root)
        self.split = split
        self.min_size = min_size
        self.image_dir = require_dir(self.root / 'images' / split, f'the {split} images')
        self.annotation_path = self.root / 'annotations' / f'instances_{split}.json'
        images, annotations, categories = _load_instances(self.annotation_path)
        self._objects: list[tuple[dict, dict]] = []
        for position, ann in enumerate(annotations):
            where = f'{self.annotation_path}: annotations[{position}]'
            image = images.get(ann.get('image_id'))
            if image is None:
                raise DatasetError(f'{where} refers to image_id {ann.get("image_id")!r}, which is not in "images"')
            box = _checked_box(ann, where)
            if ann.get('iscrowd', 0) or box[2] <= min_size or box[3] <= min_size:
                continue
            self._objects.append((ann, image))
        self._categories = categories
        self._names = [f'{img["id"]}_{ann["id"]}' for ann, img in self._objects]

    def _load(self, index: int) -> Sequence:
        ann, image = self._objects[index]
        return Sequence(
            name=self._names[index], dataset=self.name,
            frames=[self.image_dir / image['file_name']],
            boxes=np.asarray([ann['bbox']], np.float64), visible=np.ones(1, bool),
            attributes={'image_id': image['id'], 'annotation_id': ann['id'],
                        'category_id': ann.get('category_id'),
                        'category': self._categories.get(ann.get('category_id'), ''),
                        'image_size': (image.get('width'), image.get('height'))})


def _load_instances(path: Path) -> tuple[dict, list, dict]:
    """images by id, annotations, category names by id; DatasetError naming file (and line)."""
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing (COCO instances annotations expected)') from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f'{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})') from None
    if not isinstance(data, dict):
        raise DatasetError(f'{path}: top level is {type(data).__name__}, expected an object')
    for key in ('images', 'annotations'):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'{path}: "{key}" is missing or not a list')
    images = {}
    for position, image in enumerate(data['images']):
        missing = [k for k in ('id', 'file_name') if k not in image]
        if missing:
            raise DatasetError(f'{path}: images[{position}] lacks {", ".join(missing)}')
        images[image['id']] = image
    categories = {c.get('id'): c.get('name', '') for c in data.get('categories', []) if isinstance(c, dict)}
    return images, data['annotations'], categories


def _checked_box(ann: dict, where: str) -> list[float]:
    """The annotation's xywh bbox as floats, else DatasetError saying what is wrong."""
    for key in ('id', 'bbox'):
        if key not in ann:
            raise DatasetError(f'{where} lacks "{key}"')
    box = ann['bbox']
    if not isinstance(box, list) or len(box) != 4:
        raise DatasetError(f'{where} (id {ann["id"]}): bbox {box!r} is not [x, y, w, h]')
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise DatasetError(f'{where} (id {ann["id"]}): bbox {box!r} has a non-number') from None
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f'{where} (id {ann["id"]}): bbox {box!r} is not finite')
    return values
