"""crop_square against the original's crop arithmetic, byte for byte, for every square the original
tracker can meet (its box is clipped to the frame: a side up to factor x the frame's long side),
at a memory cost bounded by the output and frame sizes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from stark_model.preprocessing import DIRECT_CROP_PIXELS, crop_square, linear_taps

FRAMES = [(480, 640), (720, 1280), (1080, 1920), (2160, 3840)]
CROPS = {'search': (5.0, 320), 'template': (2.0, 128)}


def original_sample_target(image: np.ndarray, box, factor: float, output_size: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """The original's sample_target as ../shared/reference/STARK_FACTS.md describes it: the whole
    zero-padded square (Python round, the `+ 1` of the right/bottom pad), cv2.copyMakeBorder and
    cv2.resize of the image and of a float64 mask, then `astype(bool)`."""
    x, y, w, h = box
    crop_sz = math.ceil(math.sqrt(w * h) * factor)
    x1 = round(x + 0.5 * w - crop_sz * 0.5)
    y1 = round(y + 0.5 * h - crop_sz * 0.5)
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    height, width = image.shape[:2]
    x1_pad, x2_pad = max(0, -x1), max(x2 - width + 1, 0)
    y1_pad, y2_pad = max(0, -y1), max(y2 - height + 1, 0)
    im_crop = image[y1 + y1_pad:y2 - y2_pad, x1 + x1_pad:x2 - x2_pad, :]
    im_crop_padded = cv2.copyMakeBorder(im_crop, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
    att_mask = np.ones((crop_sz, crop_sz))
    end_x, end_y = -x2_pad or None, -y2_pad or None
    att_mask[y1_pad:end_y, x1_pad:end_x] = 0
    resized = cv2.resize(im_crop_padded, (output_size, output_size))
    resized_mask = cv2.resize(att_mask, (output_size, output_size)).astype(bool)
    return resized, resized_mask


def target_boxes(height: int, width: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Square targets of 30 % and 60 % of the short side, centred and at the top-left and
    bottom-right edges, and the full frame (the largest box the original's clip leaves)."""
    boxes = []
    for share in (0.3, 0.6):
        side = share * min(height, width)
        boxes += [(f'{share:.0%} centred', ((width - side) / 2, (height - side) / 2, side, side)),
                  (f'{share:.0%} top-left', (0.0, 0.0, side, side)),
                  (f'{share:.0%} bottom-right', (width - side, height - side, side, side))]
    return boxes + [('full frame', (0.0, 0.0, float(width), float(height)))]


@pytest.fixture(scope='module')
def frames() -> dict[tuple[int, int], np.ndarray]:
    rng = np.random.default_rng(17)
    return {shape: rng.integers(0, 256, shape + (3,), dtype=np.uint8) for shape in FRAMES}


@pytest.mark.parametrize('crop', CROPS)
@pytest.mark.parametrize('shape', FRAMES, ids=[f'{w}x{h}' for h, w in FRAMES])
def test_crop_square_is_the_originals_byte_for_byte(frames, shape, crop):
    # The reference builds the whole square: 2.3 GB and most of this test's time for the 4K
    # full-frame search crop.
    image = frames[shape]
    factor, size = CROPS[crop]
    sides = []
    for name, box in target_boxes(*shape):
        expected_image, expected_mask = original_sample_target(image, box, factor, size)
        result = crop_square(image, box, factor, size)
        np.testing.assert_array_equal(result.image, expected_image, err_msg=f'{name} image')
        np.testing.assert_array_equal(result.mask, expected_mask, err_msg=f'{name} mask')
        sides.append(math.ceil(math.sqrt(box[2] * box[3]) * factor))
    if crop == 'search':
        assert max(sides) ** 2 > DIRECT_CROP_PIXELS, 'the large squares take the gathered path'


@pytest.mark.parametrize('side, output', [(640, 320), (256, 128), (320, 320), (64, 320), (15, 219),
                                          (858, 198), (2070, 320), (4578, 310), (10665, 241)])
def test_crops_at_tie_breaking_sizes_are_the_originals(side, output):
    """Sizes where OpenCV takes a shortcut (2x: area averaging; 1x: a copy) or where a sample
    position falls a hair off a whole pixel, so its rounding decides the mask; the square is
    placed so that the image starts and ends inside it."""
    rng = np.random.default_rng(side * 1000 + output)
    height, width = max(1, side // 3), max(1, side // 2)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    left, top = -(side // 4), -(side // 3)
    box = (left + side / 2 - 0.5, top + side / 2 - 0.5, 1.0, 1.0)
    factor = side  # sqrt(1 * 1) * side: exactly this side
    expected_image, expected_mask = original_sample_target(image, box, factor, output)
    result = crop_square(image, box, factor, output)
    np.testing.assert_array_equal(result.image, expected_image)
    np.testing.assert_array_equal(result.mask, expected_mask)


def test_taps_match_opencv_on_lines_of_many_sides():
    """linear_taps against cv2.resize of lines (cheap at any side): uint8 values in both
    directions, and which taps a float64 mask weighs (alternating 0/1 lines: every tap shows)."""
    rng = np.random.default_rng(3)
    sides = list(range(1, 300)) + sorted(rng.integers(300, 19201, 300).tolist()) + [19200]
    for side in sides:
        for output in (128, 320):
            lines = rng.integers(0, 256, (4, side, 3), dtype=np.uint8)
            for columns in (True, False):
                taps = linear_taps(side, output, columns, uint8=True)
                weights = taps.fixed_point_weights()
                values = lines.astype(np.int32)
                if columns:  # a 4-row image: rows are copied (weight 2048), columns resized
                    horizontal = (values[:, taps.first] * weights[None, :, 0, None]
                                  + values[:, taps.second] * weights[None, :, 1, None]) >> 4
                    expected = ((2048 * horizontal) >> 16) + 2 >> 2
                    actual = cv2.resize(lines, (output, 4))
                else:  # a 4-column image: columns copied, rows resized
                    horizontal = (values * 2048) >> 4
                    expected = ((((weights[None, :, 0, None] * horizontal[:, taps.first]) >> 16)
                                 + ((weights[None, :, 1, None] * horizontal[:, taps.second]) >> 16) + 2)
                                >> 2)
                    actual = cv2.resize(lines.transpose(1, 0, 2).copy(), (4, output)).transpose(1, 0, 2)
                np.testing.assert_array_equal(expected, actual, err_msg=f'{side} -> {output}, columns={columns}')
                alternating = ((np.arange(side) + side) % 2).astype(np.float64)
                taps = linear_taps(side, output, columns, uint8=False)
                weighed = (alternating[taps.first] != 0) | ((taps.fraction != 0) & (alternating[taps.second] != 0))
                pair = np.stack([alternating, alternating], axis=0 if columns else 1)
                resized = cv2.resize(pair, (output, 2) if columns else (2, output))
                np.testing.assert_array_equal(weighed, (resized[0] if columns else resized[:, 0]) != 0,
                                              err_msg=f'mask {side} -> {output}, columns={columns}')


MEMORY_PROBE = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    from stark_model.preprocessing import crop_square

    def status_kib(field):
        with open('/proc/self/status') as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ':'))

    # Random bytes without temporaries, so that nothing but the crops raises the peak below.
    image = np.frombuffer(os.urandom(2160 * 3840 * 3), np.uint8).reshape(2160, 3840, 3)
    for warm_up in ((10, 10, 20, 20), (100, 100, 300, 300)):  # both paths' code paged in
        crop_square(image, warm_up, 5.0, 320)
    extra = []
    for box, factor, size in json.loads(sys.argv[1]):
        # VmHWM is this process's peak resident size (OpenCV's allocations included); writing 5
        # to clear_refs resets it to the current size, so the peak minus the size before is what
        # the crop added at its peak.
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        before = status_kib('VmRSS')
        crop_square(image, box, factor, size)
        extra.append((status_kib('VmHWM') - before) / 1024)
    print(json.dumps(extra))
''')
MEMORY_CASES = [((0, 0, 3840, 2160), 5.0, 320), ((0, 0, 3840, 2160), 2.0, 128),
                ((-5000, -3000, 16 * 3840, 16 * 2160), 5.0, 320)]


@pytest.mark.skipif(not os.path.exists('/proc/self/clear_refs'), reason='measures with Linux /proc')
def test_peak_memory_of_a_4k_crop_stays_small():
    """Peak resident memory each crop adds on a 3840x2160 frame, in a fresh process: the
    full-frame target's search and template crops, and the largest box validate_box accepts. The
    original's way the full-frame search crop would build a 14,400 px square: 0.6 GB of image and
    1.7 GB of float mask."""
    # Every large block straight from (and back to) the system, so that memory freed by one crop is
    # not resident before the next.
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')
    output = subprocess.run([sys.executable, '-c', MEMORY_PROBE, json.dumps(MEMORY_CASES)],
                            check=True, capture_output=True, text=True, env=environment).stdout
    for (box, factor, size), extra_mib in zip(MEMORY_CASES, json.loads(output)):
        print(f'{box} x{factor} -> {size}: peak at most +{extra_mib:.1f} MiB')
        assert extra_mib < 64, (box, factor, size)
