"""Crops and boxes at the extremes: boxes far larger than the image cost bounded memory and still
crop correctly, absurd boxes are refused with a message, and tracked boxes stay inside images of
any size, down to 1x1."""
from __future__ import annotations

import math
import tracemalloc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from stark_model import TrackerError, create_tracker, load_model
from stark_model.box_ops import MAX_BOX_TO_IMAGE, clip_box, validate_box
from stark_model.config import load_variant
from stark_model.network import Tokens
from stark_model.preprocessing import DIRECT_CROP_PIXELS, crop_padding, crop_square, crop_window
from stark_model.tracker import StarkTracker


def full_square_crop(image: np.ndarray, box, factor: float, output_size: int):
    """The original's crop built the slow way: the whole zero-padded square, then cv2.resize of it
    and of a float mask; (image, mask float values)."""
    left, top, side = crop_window(box, factor)
    height, width = image.shape[:2]
    pad_left, pad_top, pad_right, pad_bottom = crop_padding((left, top, side), width, height)
    square = np.zeros((side, side, 3), np.uint8)
    mask = np.ones((side, side), np.float64)
    visible = image[top + pad_top:top + side - pad_bottom, left + pad_left:left + side - pad_right]
    square[pad_top:side - pad_bottom, pad_left:side - pad_right] = visible
    mask[pad_top:side - pad_bottom, pad_left:side - pad_right] = 0
    return cv2.resize(square, (output_size, output_size)), cv2.resize(mask, (output_size, output_size))


# ----------------------------------------------------------------------------------------------
# Boxes far larger than the image


@pytest.mark.parametrize('box', [(-1000, -1000, 2100, 2100),   # centred, the image inside the crop
                                 (-600, -900, 1300, 1500),     # the image near a corner of the crop
                                 (550, 550, 1100, 1100)])      # image at the top-left of the crop
def test_square_far_larger_than_the_image_is_still_the_full_resize(box):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    side = crop_window(box, 2.0)[2]
    assert side * side > DIRECT_CROP_PIXELS, 'the case must take the gathered path'
    crop = crop_square(image, box, 2.0, 320)
    expected_image, expected_mask = full_square_crop(image, box, 2.0, 320)
    assert crop.resize_factor == 320 / side
    assert not crop.mask.all(), 'the image is visible in these crops'
    np.testing.assert_array_equal(crop.mask, expected_mask != 0)
    np.testing.assert_array_equal(crop.image, expected_image)


def test_large_box_on_a_large_frame_is_still_cut_exactly():
    # 1080p with a 500x400 target: a 2237 px square (2.4 times the frame's area) is ordinary.
    image = np.random.default_rng(4).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    box = (1500, 800, 500, 400)
    assert crop_window(box, 5.0)[2] == 2237
    crop = crop_square(image, box, 5.0, 320)
    expected_image, expected_mask = full_square_crop(image, box, 5.0, 320)
    np.testing.assert_array_equal(crop.image, expected_image)
    np.testing.assert_array_equal(crop.mask, expected_mask != 0)


@pytest.mark.parametrize('box', [(-5e8 + 320, -5e8 + 240, 1e9, 1e9), (0, 0, 1e9, 1e9), (300, 200, 3000, 3000),
                                 (-1e12, 5, 2e12, 1)])
def test_huge_boxes_crop_without_error(box):
    image = np.full((480, 640, 3), 200, np.uint8)
    crop = crop_square(image, box, 5.0, 320)
    side = math.ceil(math.sqrt(box[2] * box[3]) * 5.0)
    assert crop.image.shape == (320, 320, 3) and crop.mask.shape == (320, 320)
    assert crop.resize_factor == pytest.approx(320 / side)
    assert (crop.image[~crop.mask] == 200).all(), 'every unpadded pixel shows the image'


@pytest.mark.parametrize('name,frame,box,factor,size,bound_mib', [
    ('3000 px box, search crop', (480, 640), (-1000, -1000, 3000, 3000), 5.0, 320, 12),
    ('3000 px box, template crop', (480, 640), (-1000, -1000, 3000, 3000), 2.0, 128, 4),
    ('1e9 box', (480, 640), (-5e8, -5e8, 1e9, 1e9), 5.0, 320, 12),
    ('largest square resized directly', (480, 640), (0, 0, 204, 204), 5.0, 320, 13),  # 1020 px
    ('1080p, full-frame target', (1080, 1920), (0, 0, 1920, 1080), 5.0, 320, 16),  # 7200 px
    ('1080p, 3000 px box', (1080, 1920), (-500, -900, 3000, 3000), 5.0, 320, 16),
])
def test_crop_memory_does_not_grow_with_the_box(name, frame, box, factor, size, bound_mib):
    """Peak of the arrays a crop allocates (numpy arrays and OpenCV's outputs; tracemalloc sees
    both, not OpenCV's internal buffers: test_crop_exact measures those too). The original's
    arithmetic: 2.5 GB for the 3000 px box at factor 5, and 1.2e19 bytes asked of OpenCV for the
    1e9 box."""
    image = np.full(frame + (3,), 100, np.uint8)
    tracemalloc.start()
    try:
        crop_square(image, box, factor, size)
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()
    print(f'{name}: peak {peak:.1f} MiB')
    assert peak < bound_mib


# ----------------------------------------------------------------------------------------------
# Absurd boxes are refused at initialisation


@pytest.mark.parametrize('box,message', [
    ((0, 0, 1e9, 1e9), r'box size 1e\+09x1e\+09 is more than 16 times the 640x480 image'),
    ((0, 0, 16 * 640 + 1, 10), 'more than 16 times the 640x480 image'),
    ((0, 0, 10, 16 * 480 + 0.5), 'more than 16 times'),
    ((0, 0, 1e308, 1e308), 'more than 16 times'),
])
def test_validate_box_refuses_boxes_far_larger_than_the_image(box, message):
    with pytest.raises(ValueError, match=message):
        validate_box(box, 640, 480)


def test_validate_box_accepts_up_to_the_limit():
    assert validate_box((-5000, -3000, 16 * 640, 16 * 480), 640, 480) == (-5000.0, -3000.0, 10240.0, 7680.0)
    assert MAX_BOX_TO_IMAGE == 16


def test_crop_square_names_a_non_finite_box():
    with pytest.raises(ValueError, match=r'box \(nan, 0, 5, 5\) has a non-finite value'):
        crop_square(np.zeros((10, 10, 3), np.uint8), (float('nan'), 0, 5, 5), 2.0, 16)


# ----------------------------------------------------------------------------------------------
# Tiny images: boxes stay inside


@given(width=st.integers(1, 40), height=st.integers(1, 40),
       box=st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1e6), st.floats(0, 1e6)))
def test_clip_box_keeps_boxes_inside_images_of_any_size(width, height, box):
    x, y, w, h = clip_box(box, height, width, margin=10)
    assert 0 <= x and x + w <= width * (1 + 1e-12) and w >= min(10, width)
    assert 0 <= y and y + h <= height * (1 + 1e-12) and h >= min(10, height)


def original_clip(box, height: int, width: int, margin: float = 10):
    """The original's rule (STARK_FACTS.md): clamp x1 to [0, W - margin], x2 to [margin, W], keep
    at least `margin` of size; y likewise."""
    x1, y1, w, h = box
    x2, y2 = min(max(margin, x1 + w), width), min(max(margin, y1 + h), height)
    x1, y1 = min(max(0, x1), width - margin), min(max(0, y1), height - margin)
    return x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)


@given(width=st.integers(10, 2000), height=st.integers(10, 2000),
       box=st.tuples(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4), st.floats(0, 1e4), st.floats(0, 1e4)))
def test_clip_box_is_the_originals_on_images_at_least_the_margin(width, height, box):
    assert clip_box(box, height, width, margin=10) == original_clip(box, height, width)


def test_original_clip_leaves_tiny_images():
    # Why the margin shrinks: on a 1x1 image the original puts the box at x = -9.
    assert original_clip((0, 0, 1, 1), 1, 1)[:2] == (-9, -9)
    assert clip_box((0, 0, 1, 1), 1, 1) == (0.0, 0.0, 1.0, 1.0)


class ScriptedNetwork(nn.Module):
    """Stands in for STARK where the test needs any prediction at all, however wild: it returns the
    normalised cxcywh boxes and scores it is given (NaN and inf included)."""

    def __init__(self) -> None:
        super().__init__()
        self.predictions: list[tuple[list[float], float]] = []

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        batch = images.shape[0]
        return Tokens(torch.zeros(1, batch, 1), torch.zeros(batch, 1, dtype=torch.bool), torch.zeros(1, batch, 1))

    def decode(self, tokens: Tokens) -> SimpleNamespace:
        box, score = self.predictions.pop(0)
        boxes = torch.tensor([[box]], dtype=torch.float32)
        return SimpleNamespace(boxes=boxes, confidence=lambda: torch.tensor([score]),
                               corner_logits=lambda: torch.zeros(1, 2, 1))  # the motion prior is off here


wild = st.floats(allow_nan=True, allow_infinity=True, width=32)


@pytest.fixture(scope='module')
def scripted_tracker() -> StarkTracker:
    return StarkTracker(ScriptedNetwork(), load_variant('lite').tracker)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 48), height=st.integers(1, 48), data=st.data())
def test_tracked_boxes_stay_inside_images_of_any_size(scripted_tracker, width, height, data):
    # Boxes that overlap the image, of at least validate_box's minimum area (0.1 x 0.1 px).
    x = data.draw(st.floats(max(-5, 0.2 - 3 * width), width - 0.01))
    y = data.draw(st.floats(max(-5, 0.2 - 3 * height), height - 0.01))
    w = data.draw(st.floats(max(0.1, -x + 0.01), 3 * width))
    h = data.draw(st.floats(max(0.1, -y + 0.01), 3 * height))
    tracker = scripted_tracker
    tracker.clear()
    tracker.network.predictions = [(data.draw(st.lists(wild, min_size=4, max_size=4)), data.draw(wild))
                                   for _ in range(3)]
    image = np.zeros((height, width, 3), np.uint8)
    tracker.initialize(image, (x, y, w, h), 't')
    for _ in range(3):
        result = tracker.track(image)['t']
        bx, by, bw, bh = result.box
        assert all(math.isfinite(v) for v in result.box) and math.isfinite(result.score)
        assert 0 <= bx and bx + bw <= width * (1 + 1e-12) and bw > 0, (result.box, width)
        assert 0 <= by and by + bh <= height * (1 + 1e-12) and bh > 0, (result.box, height)


@pytest.fixture(scope='module')
def lite_tracker() -> StarkTracker:
    torch.manual_seed(0)
    return create_tracker(load_model(variant='lite', allow_untrained=True))


@pytest.mark.parametrize('height,width', [(1, 1), (2, 2), (1, 30), (30, 1), (5, 7), (9, 19)])
def test_real_network_on_tiny_images_keeps_boxes_inside(lite_tracker, height, width):
    image = np.random.default_rng(height * 100 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    lite_tracker.clear()
    lite_tracker.initialize(image, (0, 0, width, height), 't')
    for _ in range(2):
        result = lite_tracker.track(image)['t']
        x, y, w, h = result.box
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height, result.box
        assert 0.0 <= result.score <= 1.0, 'a finite score (0 when the crop holds no image pixel)'


def test_tracker_refuses_an_absurd_box_by_name(lite_tracker):
    with pytest.raises(TrackerError, match='more than 16 times the 64x48 image'):
        lite_tracker.initialize(np.zeros((48, 64, 3), np.uint8), (0, 0, 1e9, 1e9), 'huge')
