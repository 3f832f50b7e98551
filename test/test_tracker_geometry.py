"""Crop and box arithmetic of the tracker, checked against the original's rules (STARK_FACTS.md):
side = ceil(sqrt(w*h)*factor), banker's rounding of the corner, the right/bottom `+1` pad, the
bilinear mask, mapping predictions back, clip_box(margin=10), and boxes at or beyond the border."""
from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from stark_model import TrackerError, create_tracker, load_model
from stark_model.box_ops import clip_box, map_box_back, validate_box
from stark_model.config import load_variant
from stark_model.network import Tokens
from stark_model.preprocessing import crop_square
from stark_model.tracker import StarkTracker

SEARCH = 320


def coded_image(height: int, width: int) -> np.ndarray:
    """Each pixel names its column (channel 0) and row (channel 1), both + 1 so none is zero; the
    last column and the last row carry a colour found nowhere else (channel 2 = 255)."""
    assert width < 255 and height < 255
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.arange(1, width + 1)[None, :]
    image[..., 1] = np.arange(1, height + 1)[:, None]
    image[..., 2] = 100
    image[:, -1, 2] = 255
    image[-1, :, 2] = 255
    return image


def reference_crop(image: np.ndarray, box, factor: float):
    """The original crop at 1:1 scale, pixel by pixel: (image, mask, corner, side)."""
    x, y, w, h = box
    side = math.ceil(math.sqrt(w * h) * factor)
    corner_x = int(np.rint(x + w / 2 - side / 2))  # numpy rounds half to even, like Python's round
    corner_y = int(np.rint(y + h / 2 - side / 2))
    height, width = image.shape[:2]
    crop = np.zeros((side, side, 3), np.uint8)
    mask = np.ones((side, side), bool)
    for i in range(side):
        for j in range(side):
            row, col = corner_y + i, corner_x + j
            # The `+1` pad: the last row and column never make it into a crop.
            if 0 <= row <= height - 2 and 0 <= col <= width - 2:
                crop[i, j] = image[row, col]
                mask[i, j] = False
    return crop, mask, (corner_x, corner_y), side


# ----------------------------------------------------------------------------------------------
# crop_square


@pytest.mark.parametrize('w,h,factor,side', [
    (10, 10, 2.0, 20), (10, 10, 5.0, 50), (3, 12, 2.0, 12), (7, 3, 2.0, 10),  # sqrt(21)*2 = 9.17
    (1, 1, 2.0, 2), (0.5, 0.5, 2.0, 1), (0.5, 0.5, 5.0, 3), (64, 64, 5.0, 320), (33.3, 17.7, 5.0, 122),
])
def test_crop_side_is_ceil_of_sqrt_area_times_factor(w, h, factor, side):
    image = coded_image(60, 80)
    crop = crop_square(image, (20, 20, w, h), factor, 64)
    assert crop.resize_factor == pytest.approx(64 / side, rel=1e-12)
    assert crop.image.shape == (64, 64, 3) and crop.image.dtype == np.uint8
    assert crop.mask.shape == (64, 64) and crop.mask.dtype == bool


@pytest.mark.parametrize('k', [10, 11, 0, 1, -3, -4, 37, 38])
def test_corner_rounds_half_to_even(k):
    # w = h = 4, factor 2: side 8 and corner x + 2 - 4 = k + 0.5 exactly for x = k + 2.5.
    image = coded_image(100, 120)
    x = y = k + 2.5
    expected = k if k % 2 == 0 else k + 1
    crop = crop_square(image, (x, y, 4, 4), 2.0, 8)  # output 8 = side: no resampling
    assert crop.resize_factor == 1.0
    first_col = int(np.argmin(crop.mask[4]))  # first real column inside the crop
    src_col = int(crop.image[4, first_col, 0]) - 1
    assert src_col - first_col == expected, 'crop corner x'
    first_row = int(np.argmin(crop.mask[:, 4]))
    src_row = int(crop.image[first_row, 4, 1]) - 1
    assert src_row - first_row == expected, 'crop corner y'
    assert (x + 2 - 4) % 1 == 0.5  # the case really is a tie


def test_right_and_bottom_padding_drop_the_last_column_and_row():
    height, width = 40, 50
    image = coded_image(height, width)
    # side 20 (w = h = 10, factor 2), corner (30, 20): the crop ends exactly at the image's edge,
    # yet one zero column/row is padded and the last image column/row is left out.
    crop = crop_square(image, (35, 25, 10, 10), 2.0, 20)
    assert crop.resize_factor == 1.0
    assert not (crop.image[..., 2] == 255).any(), 'last column/row must not be in the crop'
    assert (crop.image[:, -1] == 0).all() and crop.mask[:, -1].all()
    assert (crop.image[-1, :] == 0).all() and crop.mask[-1, :].all()
    assert crop.image[5, -2, 0] - 1 == width - 2  # second-last column, where it belongs
    assert crop.image[-2, 5, 1] - 1 == height - 2
    assert not crop.mask[:-1, :-1].any()
    # Further out: content up to column W-2, then zeros.
    crop = crop_square(image, (40, 30, 10, 10), 2.0, 20)  # corner (35, 25), x2 = 55 > 50
    assert crop.image[0, 13, 0] - 1 == width - 2
    assert (crop.image[:, 14:] == 0).all() and crop.mask[:, 14:].all() and not crop.mask[:14, :14].any()
    assert (crop.image[14:] == 0).all() and crop.mask[14:].all()


def test_left_and_top_padding_is_zeros_and_keeps_the_first_column():
    image = coded_image(40, 50)
    crop = crop_square(image, (-3, -6, 10, 10), 2.0, 20)  # corner (-8, -11)
    assert (crop.image[:, :8] == 0).all() and crop.mask[:, :8].all()
    assert (crop.image[:11] == 0).all() and crop.mask[:11].all()
    assert crop.image[11, 8, 0] == 1 and crop.image[11, 8, 1] == 1  # image pixel (0, 0)
    assert not crop.mask[11:, 8:].any()


BOXES_1TO1 = [
    (20, 15, 10, 10), (0, 0, 6, 6), (-5, 10, 8, 8), (44, 30, 9, 9), (47.5, 36.5, 4, 4),
    (10.5, 3.25, 7, 5), (-20, -20, 50, 70), (48, 38, 2, 2), (30, -3.5, 3, 12), (0.5, 0.5, 0.5, 0.5),
]


@pytest.mark.parametrize('box', BOXES_1TO1)
@pytest.mark.parametrize('factor', [2.0, 5.0])
def test_crop_equals_reference_at_one_to_one(box, factor):
    image = coded_image(40, 50)
    expected_image, expected_mask, _, side = reference_crop(image, box, factor)
    crop = crop_square(image, box, factor, side)
    assert crop.resize_factor == 1.0
    np.testing.assert_array_equal(crop.mask, expected_mask)  # True exactly outside the image
    np.testing.assert_array_equal(crop.image, expected_image)


@pytest.mark.parametrize('box', BOXES_1TO1)
@pytest.mark.parametrize('factor,output', [(2.0, 128), (5.0, 320), (5.0, 16)])
def test_resized_crop_counts_any_interpolated_padding_as_padding(box, factor, output):
    image = coded_image(40, 50)
    expected_image, expected_mask, _, side = reference_crop(image, box, factor)
    crop = crop_square(image, box, factor, output)
    assert crop.resize_factor == pytest.approx(output / side)
    blurred = cv2.resize(expected_mask.astype(np.float64), (output, output))  # bilinear, as the original
    np.testing.assert_array_equal(crop.mask, blurred != 0)
    np.testing.assert_array_equal(crop.image, cv2.resize(expected_image, (output, output)))
    if expected_mask.any() and not expected_mask.all() and output > side:
        # Upsampling: the padded share grows, it never shrinks (partly padded pixels are padding).
        assert crop.mask.mean() > expected_mask.mean()


def test_one_padded_column_marks_a_band_of_the_upsampled_mask():
    image = coded_image(200, 200)
    # side 100 ending at column 200 = W: one pad column (and the last row: bottom too, y2 = 200).
    crop = crop_square(image, (150, 150, 50, 50), 2.0, 320)
    column_mask = crop.mask[100]
    first_padded = int(np.argmax(column_mask))
    assert column_mask[first_padded:].all() and not column_mask[:first_padded].any()
    # The pad column covers 3.2 output pixels; bilinear blur makes the band wider, not narrower.
    assert 320 - first_padded >= 4


@pytest.mark.parametrize('box', [(-300, 10, 20, 20), (10, -300, 20, 20), (400, 10, 20, 20), (10, 400, 20, 20),
                                 (53, 10, 2, 2)])  # only the last column, which the +1 pad drops
def test_crop_missing_the_image_is_all_padding(box):
    image = coded_image(40, 50)
    crop = crop_square(image, box, 5.0, 64)
    assert crop.mask.all()
    assert not crop.image.any()
    side = math.ceil(math.sqrt(box[2] * box[3]) * 5.0)
    assert crop.resize_factor == pytest.approx(64 / side)


# ----------------------------------------------------------------------------------------------
# Mapping a prediction in the search crop back into the image


def predicted_in_crop(true_box, previous, side: float) -> list[float]:
    """What a perfect network predicts: the true box as normalised cxcywh in the search crop,
    whose corner the tracker takes as (previous centre - side/2), unrounded."""
    corner_x = previous[0] + previous[2] / 2 - side / 2
    corner_y = previous[1] + previous[3] / 2 - side / 2
    x, y, w, h = true_box
    return [(x + w / 2 - corner_x) / side, (y + h / 2 - corner_y) / side, w / side, h / side]


@pytest.mark.parametrize('true_box,previous', [
    ((300, 200, 60, 40), (300, 200, 60, 40)),        # centred
    ((320, 190, 55, 45), (300, 200, 60, 40)),        # off-centre
    ((2, 3, 30, 20), (0, 0, 32, 24)),                # near the top-left border
    ((600, 450, 39, 29), (598, 448, 40, 30)),        # near the bottom-right border
    ((-10, 100, 40, 40), (-15, 95, 40, 40)),         # partly outside
    ((630, -12, 25, 30), (620, -8, 30, 30)),         # partly outside, another corner
    ((100.25, 50.75, 12.5, 7.125), (101, 50, 13, 8)),  # fractional
])
def test_prediction_maps_back_to_the_true_box(true_box, previous):
    image = np.zeros((480, 640, 3), np.uint8)
    crop = crop_square(image, previous, 5.0, SEARCH)
    side = math.ceil(math.sqrt(previous[2] * previous[3]) * 5.0)
    assert crop.resize_factor == SEARCH / side
    normalised = predicted_in_crop(true_box, previous, SEARCH / crop.resize_factor)
    pred = [v * SEARCH / crop.resize_factor for v in normalised]  # as the tracker scales it
    mapped = map_box_back(pred, previous, SEARCH, crop.resize_factor)
    assert mapped == pytest.approx(true_box, rel=1e-6, abs=1e-9)


def test_map_box_back_formula():
    # previous centre (150, 100); crop side 320 / 0.5 = 640 image px, so its corner is (-170, -220).
    assert map_box_back((400, 300, 80, 60), (100, 50, 100, 100), SEARCH, 0.5) == \
        pytest.approx((400 - 170 - 40, 300 - 220 - 30, 80, 60))


# ----------------------------------------------------------------------------------------------
# clip_box(margin=10): x1 = min(max(0, x1), W-10); x2 = min(max(10, x1+w), W) with the unclamped
# x1; w = max(10, x2 - x1); y likewise. Images are 640 wide, 480 high (non-square: catches swaps).


@pytest.mark.parametrize('box,expected', [
    ((100, 120, 50, 60), (100, 120, 50, 60)),          # inside: unchanged
    ((-100, 50, 30, 40), (0, 50, 10, 40)),             # fully left
    ((700, 50, 30, 40), (630, 50, 10, 40)),            # fully right
    ((50, -100, 30, 40), (50, 0, 30, 10)),             # fully above
    ((50, 500, 30, 40), (50, 470, 30, 10)),            # fully below
    ((-900, -900, 5, 5), (0, 0, 10, 10)),              # far outside a corner
    ((2000, 2000, 5, 5), (630, 470, 10, 10)),          # far outside the other corner
    ((-50, -60, 800, 700), (0, 0, 640, 480)),          # larger than the image
    ((100, 100, 1, 1), (100, 100, 10, 10)),            # tiny
    ((0, 0, 0.5, 0.5), (0, 0, 10, 10)),                # tiny at the top-left
    ((639.5, 479.5, 0.5, 0.5), (630, 470, 10, 10)),    # tiny at the bottom-right
    ((600, 100, 100, 50), (600, 100, 40, 50)),         # partly out on the right
    ((-20, 100, 50, 50), (0, 100, 30, 50)),            # partly out on the left
    ((-5, 100, 30, 20), (0, 100, 25, 20)),             # x2 from the unclamped x1
    ((-5, 100, 12, 20), (0, 100, 10, 20)),             # ... then the margin
    ((635, 100, 20, 20), (630, 100, 10, 20)),          # x1 clamped to W - 10
    ((50, 475, 30, 30), (50, 470, 30, 10)),            # y1 clamped to H - 10
    ((50, 465, 30, 30), (50, 465, 30, 15)),            # bottom cut
])
def test_clip_box(box, expected):
    clipped = clip_box(box, 480, 640, margin=10)
    assert clipped == pytest.approx(expected)
    assert all(type(v) is float for v in clipped), 'a box is floats (ROS float64 fields refuse ints)'


def test_clip_box_margin_zero_is_a_plain_clip():
    assert clip_box((-5, 470, 20, 20), 480, 640, margin=0) == pytest.approx((0, 470, 15, 10))
    assert clip_box((650, 10, 20, 20), 480, 640, margin=0) == pytest.approx((640, 10, 0, 20))


def test_clip_box_keeps_every_box_inside_with_at_least_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        box = (rng.uniform(-1000, 1500), rng.uniform(-1000, 1500), rng.uniform(0, 2000) ** rng.uniform(0, 1),
               rng.uniform(0, 2000) ** rng.uniform(0, 1))
        x, y, w, h = clip_box(box, 480, 640, margin=10)
        assert 0 <= x and x + w <= 640 and w >= 10
        assert 0 <= y and y + h <= 480 and h >= 10
        assert clip_box((x, y, w, h), 480, 640, margin=10) == (x, y, w, h)  # a fixed point


# ----------------------------------------------------------------------------------------------
# validate_box


@pytest.mark.parametrize('box,message', [
    ((1, 2, 3), 'a box has 4 values (x, y, width, height), got 3'),
    ((1, 2, 3, 4, 5), 'got 5'),
    ((float('nan'), 2, 3, 4), 'has a non-finite value'),
    ((1, 2, float('inf'), 4), 'has a non-finite value'),
    ((1, 2, 3, -float('inf')), 'has a non-finite value'),
    ((1, 2, 0, 4), 'box size 0x4 must be positive'),
    ((1, 2, 3, -4), 'box size 3x-4 must be positive'),
    ((1, 2, -3, -4), 'must be positive'),
    ((1, 2, 1e-300, 1e-300), 'is too small: its area must be at least 0.01'),  # w*h underflows to 0
    ((1, 2, 0.05, 0.1), 'is too small'),
    ((320, 10, 5, 5), 'box (320, 10, 5, 5) lies outside the 320x240 image'),
    ((10, 240, 5, 5), 'lies outside the 320x240 image'),
    ((-5, 10, 5, 5), 'lies outside'),       # touches the left edge from outside
    ((10, -5.5, 5, 5.5), 'lies outside'),   # touches the top edge from outside
    ((-100, -100, 50, 50), 'lies outside'),
])
def test_validate_box_messages(box, message):
    with pytest.raises(ValueError) as error:
        validate_box(box, 320, 240)
    assert message in str(error.value)


def test_validate_box_accepts_overlapping_boxes_as_floats():
    for box in [(0, 0, 1, 1), (319.5, 239.5, 0.5, 0.5), (-5, -5, 5.5, 5.5), (-100, -100, 1000, 1000),
                (np.float32(3), np.int64(4), 5, 6)]:
        checked = validate_box(box, 320, 240)
        assert checked == tuple(float(v) for v in box)
        assert all(type(v) is float for v in checked)


# ----------------------------------------------------------------------------------------------
# The tracker at the border (lite network, untrained: the values don't matter, the invariants do)

HEIGHT, WIDTH = 240, 320


@pytest.fixture(scope='module')
def tracker() -> StarkTracker:
    torch.manual_seed(0)
    return create_tracker(load_model(variant='lite', allow_untrained=True))


@pytest.fixture(scope='module')
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(3)]


def assert_inside(box) -> None:
    x, y, w, h = box
    assert all(math.isfinite(v) for v in box), box
    assert 0 <= x and x + w <= WIDTH + 1e-9 and w >= 10, box
    assert 0 <= y and y + h <= HEIGHT + 1e-9 and h >= 10, box
    assert clip_box(box, HEIGHT, WIDTH, margin=10) == pytest.approx(box), 'a clip_box fixed point'


@pytest.mark.parametrize('box', [
    (0, 0, 30, 30),                     # top-left corner
    (290, 210, 30, 30),                 # bottom-right corner, touching the edges
    (319, 239, 1, 1),                   # last pixel, 1x1
    (100, 100, 1, 1),                   # tiny
    (160.25, 120.75, 0.5, 0.5),         # sub-pixel
    (-50, -40, 500, 400),               # larger than the image
    (-20, 100, 40, 30),                 # partly outside on the left
    (300, -15, 60, 30),                 # partly outside right and top
    (10, 230, 30, 40),                  # partly below
])
def test_tracker_keeps_border_boxes_inside(tracker, frames, box):
    tracker.clear()
    tracker.initialize(frames[0], box, 'target')
    assert tracker.box('target') == pytest.approx(box)
    for frame_index, frame in enumerate(frames, start=1):
        result = tracker.track(frame)['target']
        assert result.frames_tracked == frame_index
        assert_inside(result.box)
        assert 0 <= result.score <= 1
        assert tracker.box('target') == result.box


@pytest.mark.parametrize('box,message', [
    ((-100, 10, 50, 50), 'lies outside'),
    ((WIDTH, 10, 5, 5), 'lies outside'),
    ((10, HEIGHT + 3, 5, 5), 'lies outside'),
    ((10, -60, 5, 60), 'lies outside'),
    ((10, 10, 0, 5), 'must be positive'),
    ((10, 10, 5, -1), 'must be positive'),
    ((float('nan'), 10, 5, 5), 'non-finite'),
    ((10, 10, float('inf'), 5), 'non-finite'),
    ((10, 10, 5), '4 values'),
])
def test_tracker_rejects_unusable_boxes(tracker, frames, box, message):
    tracker.clear()
    with pytest.raises(TrackerError, match=message):
        tracker.initialize(frames[0], box, 'bad')
    assert tracker.target_ids == []


# ----------------------------------------------------------------------------------------------
# The whole loop with a perfect detector: the tracker must land exactly on the target


class OracleNetwork(nn.Module):
    """Stands in for STARK: 'predicts' the bright square found in the search crop."""

    def __init__(self) -> None:
        super().__init__()
        self.images = None

    def encode(self, images: torch.Tensor, masks: torch.Tensor) -> Tokens:
        self.images = images  # the tracker encodes the search crops right before decoding
        batch = images.shape[0]
        return Tokens(torch.zeros(1, batch, 1), torch.zeros(batch, 1, dtype=torch.bool), torch.zeros(1, batch, 1))

    def decode(self, tokens: Tokens) -> SimpleNamespace:
        boxes = []
        for image in self.images:
            size = image.shape[-1]
            rows, cols = torch.nonzero(image[0] > 0, as_tuple=True)  # normalised white > 0 > black
            x1, y1, x2, y2 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
            boxes.append([(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size])
        boxes = torch.tensor(boxes, dtype=torch.float32)[:, None]
        count = len(boxes)
        # No corner maps to speak of: the tracker reads them only for the motion prior, off here.
        return SimpleNamespace(boxes=boxes, confidence=lambda: torch.full((count,), 0.9),
                               corner_logits=lambda: torch.zeros(count, 2, 1))


def square_frame(box) -> np.ndarray:
    x, y, w, h = (int(v) for v in box)
    image = np.zeros((480, 640, 3), np.uint8)
    image[y:y + h, x:x + w] = 255
    return image


@pytest.mark.parametrize('size,step', [(64, (-13, -11)), (32, (-14, 10)), (128, (12, -8))])
def test_tracker_follows_a_moving_square_exactly(size, step):
    # Factor 5: the search crop is 5 * size image px, i.e. resize factor 320 / (5 * size) = 1, 2 or
    # 0.5. At 1 the oracle is exact; at 2 and 0.5 too, since the square's even coordinates land on
    # whole output pixels (bilinear edges fall clear of the threshold). The path runs to the border,
    # where the crop is padded.
    tracker = StarkTracker(OracleNetwork(), load_variant('lite').tracker)
    start = (240 - size // 2, 200 - size // 2)
    path = [(start[0] + step[0] * i, start[1] + step[1] * i, size, size) for i in range(12)]
    tracker.initialize(square_frame(path[0]), path[0], 'square')
    for expected in path[1:]:
        result = tracker.track(square_frame(expected))['square']
        assert result.box == pytest.approx(expected, abs=1e-3)
        assert result.score == pytest.approx(0.9)


def test_search_factor_can_be_changed_between_frames_and_restored():
    config = load_variant('lite').tracker
    tracker = StarkTracker(OracleNetwork(), config)
    path = [(300 - 6 * i, 200 + 4 * i, 48, 48) for i in range(6)]
    tracker.initialize(square_frame(path[0]), path[0], 'square')
    for index, factor in enumerate((3.0, 3.0, None, 2.5, None), start=1):
        tracker.set_search_factor(factor)
        assert tracker.config.search_factor == (factor or config.search_factor)
        assert tracker.track(square_frame(path[index]))['square'].box == pytest.approx(path[index], abs=1.0)
    for bad in (0.0, -2.0, float('nan')):
        with pytest.raises(TrackerError, match='search factor must be a positive number'):
            tracker.set_search_factor(bad)


def test_mapping_uses_the_unrounded_crop_corner_as_the_original():
    # Previous box x = 208.5: the crop's corner is round(80.5) = 80 (half to even), but the
    # prediction is mapped back from the unrounded 80.5, so a square drawn at x = 208 is reported
    # at 208.5. A half-pixel bias of the original that parity requires keeping.
    tracker = StarkTracker(OracleNetwork(), load_variant('lite').tracker)
    frame = square_frame((208, 168, 64, 64))
    tracker.initialize(frame, (208.5, 168, 64, 64), 'square')
    for _ in range(2):
        assert tracker.track(frame)['square'].box == pytest.approx((208.5, 168, 64, 64), abs=1e-3)
