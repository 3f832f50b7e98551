"""Batched torch crops (the GPU input path, run here on the CPU) against the OpenCV crop_square."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_fixtures import lite_model
from stark_model import create_tracker
from stark_model.gpu_check import lowest_tracker_iou
from stark_model.gpu_crop import crop_squares, upload_frame
from stark_model.preprocessing import crop_square
from stark_training.synthetic import make_sequence

TRACKER_MIN_IOU = 0.98


@st.composite
def frame_and_boxes(draw):
    """A random frame and 1-4 boxes that overlap it, many partly (or mostly) outside it."""
    height, width = draw(st.integers(8, 120)), draw(st.integers(8, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes = []
    for _ in range(draw(st.integers(1, 4))):
        w = draw(st.floats(0.5, 2.0 * width, allow_nan=False))
        h = draw(st.floats(0.5, 2.0 * height, allow_nan=False))
        x = draw(st.floats(-w + 0.25, width - 0.25, allow_nan=False))
        y = draw(st.floats(-h + 0.25, height - 0.25, allow_nan=False))
        boxes.append((x, y, w, h))
    factor = draw(st.sampled_from([0.5, 2.0, 4.5, 5.0]))
    size = draw(st.sampled_from([8, 16, 32, 40, 48, 64, 96]))
    return frame, boxes, factor, size


@settings(max_examples=200, deadline=None)
@given(frame_and_boxes())
def test_torch_crops_are_the_opencv_crops_byte_for_byte(case):
    frame, boxes, factor, size = case
    images, masks, factors = crop_squares(torch.from_numpy(frame), boxes, factor, size)
    for index, box in enumerate(boxes):
        expected = crop_square(frame, box, factor, size)
        np.testing.assert_array_equal(images[index].numpy(), expected.image, err_msg=f'image of box {box}')
        np.testing.assert_array_equal(masks[index].numpy(), expected.mask, err_msg=f'mask of box {box}')
        assert factors[index] == expected.resize_factor


@pytest.mark.parametrize('height, width', [(480, 640), (2160, 3840)])
def test_torch_crops_of_large_squares_are_the_opencv_crops(height, width):
    # Targets up to the full frame: squares of up to 14,400 px, which crop_square gathers.
    frame = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    side = 0.3 * height
    boxes = [(0.0, 0.0, float(width), float(height)), (width - side, height - side, side, side),
             ((width - side) / 2, (height - side) / 2, side, side)]
    for factor, size in ((5.0, 320), (2.0, 128)):
        images, masks, _ = crop_squares(torch.from_numpy(frame), boxes, factor, size)
        for index, box in enumerate(boxes):
            expected = crop_square(frame, box, factor, size)
            np.testing.assert_array_equal(images[index].numpy(), expected.image, err_msg=f'{box} x{factor}')
            np.testing.assert_array_equal(masks[index].numpy(), expected.mask, err_msg=f'{box} x{factor}')


@pytest.mark.parametrize('box, factor, size', [((0.0, 0.0, 7.0, 9.0), 2.0, 48),  # 16 px -> 48: 3x
                                                 ((3.0, 2.0, 4.0, 4.0), 2.0, 40),  # 8 px -> 40: 5x
                                                 ((-5.0, 1.0, 20.0, 20.0), 1.0, 320)])
def test_masks_match_opencv_where_samples_fall_exactly_on_pixels(box, factor, size):
    # Integer up-scales put samples on whole pixels, where OpenCV's rounding of the position decides
    # whether the pixel before (padding here) gets a non-zero weight.
    frame = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    images, masks, _ = crop_squares(torch.from_numpy(frame), [box], factor, size)
    expected = crop_square(frame, box, factor, size)
    np.testing.assert_array_equal(masks[0].numpy(), expected.mask)
    np.testing.assert_array_equal(images[0].numpy(), expected.image)


def test_crop_of_a_square_missing_the_image_is_all_padding():
    frame = np.full((50, 50, 3), 200, np.uint8)
    # crop_window rounds the corner left of x=0 with a side that ends before the image starts.
    images, masks, _ = crop_squares(torch.from_numpy(frame), [(-30.0, 10.0, 8.0, 8.0)], 1.0, 16)
    expected = crop_square(frame, (-30.0, 10.0, 8.0, 8.0), 1.0, 16)
    assert masks.all() and expected.mask.all() and not images.any()


def test_too_small_box_is_refused_like_crop_square():
    with pytest.raises(ValueError, match='too small'):
        crop_squares(torch.zeros(10, 10, 3, dtype=torch.uint8), [(1.0, 1.0, 0.0, 0.0)], 2.0, 16)


def test_upload_on_the_cpu_shares_the_frame_memory():
    frame = np.zeros((4, 4, 3), np.uint8)
    assert upload_frame(frame, torch.device('cpu')).data_ptr() == frame.ctypes.data


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (the GPU input path on a GPU)')
def test_cuda_crops_equal_cpu_torch_crops():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = [(-20.0, 30.0, 80.0, 60.0), (500.0, 400.0, 200.0, 100.0), (300.0, 200.0, 40.0, 50.0)]
    cpu = crop_squares(torch.from_numpy(frame), boxes, 5.0, 320)
    gpu = crop_squares(upload_frame(frame, torch.device('cuda')), boxes, 5.0, 320)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.slow
def test_tracker_with_torch_crops_follows_the_opencv_boxes():
    model = lite_model()
    sequence = make_sequence(num_frames=10, width=320, height=240, num_targets=2, seed=6, target_size=40)
    trackers = [create_tracker(model, crops=crops) for crops in ('opencv', 'torch')]
    assert [t.crops for t in trackers] == ['opencv', 'torch']
    worst = lowest_tracker_iou(*trackers, sequence)
    print(f'torch crops vs OpenCV crops, whole tracker: lowest IoU {worst:.4f}')
    assert worst >= TRACKER_MIN_IOU
