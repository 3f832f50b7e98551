"""Time per crop_square call (`python -m stark_model.benchmark_crops`), as a markdown table.

Frames of 640x480 to 3840x2160 with targets from a small one to the full frame, search (5.0, 320)
and template (2.0, 128) crops; median over --repeats calls after one warm-up.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import cv2
import numpy as np

from .preprocessing import DIRECT_CROP_PIXELS, crop_square

FRAMES = [(480, 640), (1080, 1920), (2160, 3840)]
CROPS = {'search': (5.0, 320), 'template': (2.0, 128)}


def median_ms(image: np.ndarray, box: tuple[float, float, float, float], factor: float, size: int,
              repeats: int) -> float:
    """Median wall time of one crop_square call, in milliseconds."""
    crop_square(image, box, factor, size)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        crop_square(image, box, factor, size)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=30)
    args = parser.parse_args(argv)
    print(f'{platform.processor() or platform.machine()}, OpenCV {cv2.__version__}, numpy {np.__version__}, '
          f'median of {args.repeats}\n')
    print('| frame | target | crop | square side px | path | ms per crop |')
    print('|---|---|---|---|---|---|')
    rng = np.random.default_rng(0)
    for height, width in FRAMES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        targets = {'10 % of short side': 0.1 * height, '30 % of short side': 0.3 * height, 'full frame': None}
        for name, side in targets.items():
            box = ((0.0, 0.0, float(width), float(height)) if side is None
                   else ((width - side) / 2, (height - side) / 2, side, side))
            for crop, (factor, size) in CROPS.items():
                square = math.ceil(math.sqrt(box[2] * box[3]) * factor)
                path = 'direct' if square * square <= DIRECT_CROP_PIXELS else 'gathered'
                ms = median_ms(image, box, factor, size, args.repeats)
                print(f'| {width}x{height} | {name} | {crop} | {square} | {path} | {ms:.2f} |')


if __name__ == '__main__':
    main()
