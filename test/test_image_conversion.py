"""Image message conversion: every encoding against independent references, padding, defects, fuzz."""
from __future__ import annotations

import array
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from stark_ros.image_conversion import (SUPPORTED_ENCODINGS, ImageConversionError, compressed_to_rgb,
                                        image_to_rgb, rgb_to_image_msg)

YUV_ORDERS = {'yuv422': 'UYVY', 'uyvy': 'UYVY', 'yuv422_yuy2': 'YUYV', 'yuyv': 'YUYV'}
BYTES_PER_PIXEL = {'rgb8': 3, 'bgr8': 3, '8UC3': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1, '8UC1': 1,
                   'mono16': 2, '16UC1': 2, **{e: 2 for e in YUV_ORDERS}}
NON_YUV = [e for e in SUPPORTED_ENCODINGS if e not in YUV_ORDERS]
PADDING_BYTE = 0xA5


def make_image(rows: np.ndarray, encoding: str, width: int, step: int | None = None,
               big_endian: bool = False, trailing: int = 0) -> Image:
    """An Image whose rows are `rows` (H, row bytes), padded to `step` with junk bytes."""
    height, row_bytes = rows.shape
    step = row_bytes if step is None else step
    padded = np.full((height, step), PADDING_BYTE, np.uint8)
    padded[:, :row_bytes] = rows
    data = array.array('B')
    data.frombytes(padded.tobytes() + bytes([PADDING_BYTE]) * trailing)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=step)
    msg.data = data
    return msg


def rgb_to_yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 rows (BT.601, limited range, chroma averaged over pixel pairs), in numpy."""
    rgb = rgb.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    u = (u[:, 0::2] + u[:, 1::2]) / 2
    v = (v[:, 0::2] + v[:, 1::2]) / 2
    y0, y1 = y[:, 0::2], y[:, 1::2]
    quad = np.stack([u, y0, v, y1] if order == 'UYVY' else [y0, u, y1, v], axis=-1)
    return np.clip(np.round(quad), 0, 255).astype(np.uint8).reshape(rgb.shape[0], -1)


def yuv422_to_rgb(rows: np.ndarray, order: str) -> np.ndarray:
    """BT.601 limited-range decoding of packed 4:2:2 rows, written out in numpy."""
    quad = rows.reshape(rows.shape[0], -1, 4).astype(np.float64)
    if order == 'UYVY':
        u, y0, v, y1 = np.moveaxis(quad, -1, 0)
    else:
        y0, u, y1, v = np.moveaxis(quad, -1, 0)
    y = np.stack([y0, y1], axis=-1).reshape(rows.shape[0], -1) - 16
    u = np.repeat(u, 2, axis=1) - 128
    v = np.repeat(v, 2, axis=1) - 128
    rgb = np.stack([1.164 * y + 1.596 * v, 1.164 * y - 0.813 * v - 0.391 * u, 1.164 * y + 2.018 * u], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def encode(encoding: str, height: int, width: int, seed: int = 0, big_endian: bool = False
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """Random pixels of `encoding`: (rows, the RGB they show, tolerance of the comparison)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if encoding in ('rgb8',):
        return rgb.reshape(height, -1), rgb, 0
    if encoding in ('bgr8', '8UC3'):
        return rgb[..., ::-1].reshape(height, -1), rgb, 0
    if encoding in ('rgba8', 'bgra8'):
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        colour = rgb if encoding == 'rgba8' else rgb[..., ::-1]
        return np.concatenate([colour, alpha], axis=-1).reshape(height, -1), rgb, 0
    if encoding in ('mono8', '8UC1'):
        grey = rgb[..., 0]
        return grey, np.repeat(grey[..., None], 3, axis=-1), 0
    if encoding in ('mono16', '16UC1'):
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        raw = values.astype('>u2' if big_endian else '<u2').view(np.uint8).reshape(height, -1)
        return raw, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=-1), 0
    # 4:2:2 keeps one colour per pixel pair, so give both pixels of a pair the same colour.
    rgb = np.repeat(rgb[:, ::2], 2, axis=1)
    return rgb_to_yuv422(rgb, YUV_ORDERS[encoding]), rgb, 3


def check_rgb(result: np.ndarray, height: int, width: int) -> None:
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.uint8
    assert result.shape == (height, width, 3)


# --- raw images: every encoding --------------------------------------------------------------------

def test_supported_encodings_are_the_ros_strings() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(BYTES_PER_PIXEL)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_round_trip(encoding: str) -> None:
    rows, expected, tolerance = encode(encoding, 6, 8)
    result = image_to_rgb(make_image(rows, encoding, 8))
    check_rgb(result, 6, 8)
    assert np.abs(result.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize('padding', [1, 5, 64])
def test_padded_step_skips_padding(encoding: str, padding: int) -> None:
    rows, expected, tolerance = encode(encoding, 5, 6, seed=padding)
    result = image_to_rgb(make_image(rows, encoding, 6, step=rows.shape[1] + padding))
    check_rgb(result, 5, 6)
    assert np.abs(result.astype(int) - expected).max() <= tolerance
    assert np.array_equal(result, image_to_rgb(make_image(rows, encoding, 6)))


@pytest.mark.parametrize('encoding', NON_YUV)
@pytest.mark.parametrize('height, width', [(1, 1), (3, 5), (1, 7), (7, 1)])
def test_small_and_odd_sizes(encoding: str, height: int, width: int) -> None:
    rows, expected, _ = encode(encoding, height, width, seed=height * 10 + width)
    for step in (None, rows.shape[1] + 3):
        assert np.array_equal(image_to_rgb(make_image(rows, encoding, width, step=step)), expected)


@pytest.mark.parametrize('encoding', YUV_ORDERS)
@pytest.mark.parametrize('height, width', [(1, 2), (3, 2), (2, 14)])
def test_smallest_yuv_images(encoding: str, height: int, width: int) -> None:
    rows, expected, tolerance = encode(encoding, height, width)
    result = image_to_rgb(make_image(rows, encoding, width, step=rows.shape[1] + 2))
    check_rgb(result, height, width)
    assert np.abs(result.astype(int) - expected).max() <= tolerance


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('padding', [0, 1, 6])
def test_mono16_honours_byte_order(encoding: str, padding: int) -> None:
    for big_endian in (False, True):
        rows, expected, _ = encode(encoding, 4, 5, seed=padding, big_endian=big_endian)
        msg = make_image(rows, encoding, 5, step=10 + padding, big_endian=big_endian)
        assert np.array_equal(image_to_rgb(msg), expected)


def test_mono16_keeps_the_high_byte() -> None:
    values = np.array([[0, 255, 256, 0x7FFF, 0x8000, 0xFFFF]], np.uint16)
    msg = make_image(values.astype('<u2').view(np.uint8).reshape(1, -1), 'mono16', 6)
    assert image_to_rgb(msg)[0, :, 0].tolist() == [0, 0, 1, 127, 128, 255]


@pytest.mark.parametrize('encoding', YUV_ORDERS)
def test_yuv_matches_opencv_and_the_bt601_formula(encoding: str) -> None:
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (7, 20), dtype=np.uint8)
    code = cv2.COLOR_YUV2RGB_UYVY if YUV_ORDERS[encoding] == 'UYVY' else cv2.COLOR_YUV2RGB_YUY2
    result = image_to_rgb(make_image(rows, encoding, 10, step=23))
    assert np.array_equal(result, cv2.cvtColor(rows.reshape(7, 10, 2).copy(), code))
    # Within the legal ranges (OpenCV clamps Y < 16 before scaling, the plain formula does not).
    luma_first = YUV_ORDERS[encoding] == 'YUYV'
    legal = np.where((np.arange(20) % 2 == 0) == luma_first, rng.integers(16, 236, (7, 20)),
                     rng.integers(16, 241, (7, 20))).astype(np.uint8)
    result = image_to_rgb(make_image(legal, encoding, 10, step=23))
    assert np.abs(result.astype(int) - yuv422_to_rgb(legal, YUV_ORDERS[encoding])).max() <= 2


def test_uyvy_and_yuyv_byte_orders_differ() -> None:
    # Pure red in each order: reading it in the other order must not give red.
    red = np.zeros((1, 2, 3), np.uint8)
    red[..., 0] = 255
    for encoding, other in (('yuv422', 'yuyv'), ('yuv422_yuy2', 'uyvy')):
        rows = rgb_to_yuv422(red, YUV_ORDERS[encoding])
        assert np.abs(image_to_rgb(make_image(rows, encoding, 2)).astype(int) - red).max() <= 3
        assert np.abs(image_to_rgb(make_image(rows, other, 2)).astype(int) - red).max() > 50


def test_trailing_bytes_beyond_step_times_height_are_ignored() -> None:
    rows, expected, _ = encode('rgb8', 3, 4)
    assert np.array_equal(image_to_rgb(make_image(rows, 'rgb8', 4, step=13, trailing=7)), expected)


# --- zero copy -------------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding, padding', [('rgb8', 0), ('rgb8', 4), ('rgba8', 0), ('rgba8', 3)])
def test_rgb_layouts_come_back_as_read_only_views(encoding: str, padding: int) -> None:
    rows, expected, _ = encode(encoding, 6, 8)
    msg = make_image(rows, encoding, 8, step=rows.shape[1] + padding)
    assert isinstance(msg.data, array.array)
    result = image_to_rgb(msg)
    assert np.array_equal(result, expected)
    assert np.shares_memory(result, np.frombuffer(msg.data, np.uint8))
    assert not result.flags.writeable
    if encoding == 'rgb8' and padding == 0:
        assert result.flags.c_contiguous


def test_deserialized_message_is_viewed_without_a_copy() -> None:
    rows, expected, _ = encode('rgb8', 4, 6)
    msg = deserialize_message(serialize_message(make_image(rows, 'rgb8', 6, step=20)), Image)
    result = image_to_rgb(msg)
    assert np.array_equal(result, expected)
    assert np.shares_memory(result, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('data_type', [bytes, bytearray, list])
def test_objects_with_image_fields_are_accepted(data_type: type) -> None:
    rows, expected, _ = encode('rgb8', 2, 3)
    data = data_type(rows.tobytes())
    msg = SimpleNamespace(height=2, width=3, encoding='rgb8', is_bigendian=0, step=9, data=data)
    result = image_to_rgb(msg)
    assert np.array_equal(result, expected)
    if data_type is not list:
        assert np.shares_memory(result, np.frombuffer(data, np.uint8))


# --- defects ---------------------------------------------------------------------------------------

def image(encoding: str = 'rgb8', height: int = 4, width: int = 6, step: int | None = None,
          size: int | None = None) -> Image:
    step = width * BYTES_PER_PIXEL.get(encoding, 3) if step is None else step
    size = step * height if size is None else size
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = array.array('B', bytes(size))
    return msg


@pytest.mark.parametrize('msg, message', [
    (image(step=17), 'step 17 is smaller than width 6 x 3 bytes for rgb8'),
    (image('mono16', step=11), 'step 11 is smaller than width 6 x 2 bytes for mono16'),
    (image('yuv422', step=0), 'step 0 is smaller than width 6 x 2 bytes for yuv422'),
    # mono8-sized rows and data labelled rgb8: the step shows the mismatch.
    (image(step=6, size=24), 'step 6 is smaller than width 6 x 3 bytes for rgb8'),
    # rgb8 step but mono8-sized data.
    (image(size=24), r'data has 24 bytes, expected 72 \(step 18 x height 4\) for rgb8 6x4'),
    (image('bgra8', step=30, size=119), r'data has 119 bytes, expected 120 \(step 30 x height 4\)'),
    (image('16UC1', size=47), r'data has 47 bytes, expected 48 \(step 12 x height 4\)'),
    (image(size=0), r'empty image data \(rgb8 6x4 needs 72 bytes\)'),
    (image('bayer_rggb8'), "encoding 'bayer_rggb8' is not supported; supported: rgb8, bgr8, "),
    (image('RGB8'), "encoding 'RGB8' is not supported"),
    (image(''), "encoding '' is not supported"),
    (image('32FC1'), "encoding '32FC1' is not supported"),
    (image(width=0), 'image is empty: height 4, width 0'),
    (image(height=0), 'image is empty: height 0, width 6'),
    (Image(), "encoding '' is not supported"),
    (Image(encoding='mono8'), 'image is empty: height 0, width 0'),
    (image('yuv422', width=5, step=10), r'width 5 is odd, but yuv422 \(UYVY\) packs pixel pairs'),
    (image('yuyv', width=1, step=2), r'width 1 is odd, but yuyv \(YUYV\)'),
], ids=lambda value: value if isinstance(value, str) else '')
def test_defects_are_named(msg: Image, message: str) -> None:
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(msg)


@pytest.mark.parametrize('field, value, message', [
    ('height', -1, 'height -1 is negative'),
    ('step', 2.5, 'step must be an integer, got 2.5'),
    ('encoding', None, 'encoding None is not supported'),
    ('data', 'abc', 'data must be bytes-like'),
    ('data', [1, 300] * 36, 'data is a list but not of bytes'),
    ('data', np.zeros(72, np.uint16), 'data must hold uint8 values, got a numpy array of uint16'),
])
def test_malformed_fields_of_other_objects_are_named(field: str, value: object, message: str) -> None:
    fields = dict(height=4, width=6, encoding='rgb8', is_bigendian=0, step=18, data=bytes(72))
    fields[field] = value
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(SimpleNamespace(**fields))


# --- compressed images -----------------------------------------------------------------------------

def smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)],
                    axis=-1).astype(np.uint8)


def compressed(data: bytes | np.ndarray, image_format: str) -> CompressedImage:
    msg = CompressedImage(format=image_format)
    payload = array.array('B')
    payload.frombytes(bytes(data))
    msg.data = payload
    return msg


def encoded(extension: str, image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(extension, image, list(params))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize('image_format', ['jpeg', 'rgb8; jpeg compressed bgr8', 'JPEG', 'jpg'])
def test_jpeg_round_trip(image_format: str) -> None:
    rgb = smooth_rgb()
    jpeg = encoded('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.IMWRITE_JPEG_QUALITY, 95)
    result = compressed_to_rgb(compressed(jpeg, image_format))
    check_rgb(result, 32, 48)
    assert np.abs(result.astype(int) - rgb).mean() < 2


@pytest.mark.parametrize('image_format', ['png', 'bgr8; png compressed bgr8', 'rgba8; png compressed bgra8'])
def test_png_round_trip_is_exact(image_format: str) -> None:
    rgb = smooth_rgb(5, 7)
    assert np.array_equal(compressed_to_rgb(compressed(
        encoded('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), image_format)), rgb)


def test_png_with_alpha_drops_it() -> None:
    rgb = smooth_rgb(4, 4)
    bgra = np.concatenate([rgb[..., ::-1], np.full((4, 4, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(compressed_to_rgb(compressed(encoded('.png', bgra), 'png')), rgb)


def test_mono_png_and_jpeg_become_grey_rgb() -> None:
    grey = smooth_rgb(9, 11)[..., 0]
    expected = np.repeat(grey[..., None], 3, axis=-1)
    assert np.array_equal(compressed_to_rgb(compressed(encoded('.png', grey), 'mono8; png compressed mono8')),
                          expected)
    result = compressed_to_rgb(compressed(encoded('.jpg', grey, cv2.IMWRITE_JPEG_QUALITY, 100), 'jpeg'))
    check_rgb(result, 9, 11)
    assert np.abs(result.astype(int) - expected).max() <= 2


def test_16_bit_png_is_scaled_like_mono16() -> None:
    values = np.random.default_rng(2).integers(0, 65536, (6, 5), dtype=np.uint16)
    result = compressed_to_rgb(compressed(encoded('.png', values), 'mono16; png compressed mono16'))
    raw = make_image(values.astype('<u2').view(np.uint8).reshape(6, -1), 'mono16', 5)
    assert np.array_equal(result, image_to_rgb(raw))


JPEG = encoded('.jpg', smooth_rgb()[..., ::-1].copy())
PNG = encoded('.png', smooth_rgb()[..., ::-1].copy())


@pytest.mark.parametrize('data, image_format, message', [
    (b'', 'jpeg', r"empty image data \(format 'jpeg'\)"),
    (JPEG, 'tiff', "format 'tiff' must name exactly one of jpeg or png"),
    (JPEG, '', "format '' must name exactly one of jpeg or png"),
    (JPEG, 'jpeg png', 'must name exactly one of jpeg or png'),
    (PNG, '16UC1; compressedDepth png', 'is a compressedDepth image'),
    (JPEG, 'png', "format 'png' says png, but got jpeg data"),
    (PNG, 'jpeg', "format 'jpeg' says jpeg, but got png data"),
    (b'BM\x00\x01', 'jpeg', 'says jpeg, but got data starting with 42 4d 00 01'),
    (JPEG[:3], 'jpeg', 'jpeg data of 3 bytes could not be decoded'),
    (PNG[:40], 'png', 'png data of 40 bytes could not be decoded'),
    (b'\xff\xd8\xff' + bytes(100), 'jpeg', 'jpeg data of 103 bytes could not be decoded'),
], ids=lambda value: value if isinstance(value, str) else '')
def test_compressed_defects_are_named(data: bytes, image_format: str, message: str) -> None:
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_rgb(compressed(data, image_format))


# --- publishing ------------------------------------------------------------------------------------

@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_rgb_to_image_msg_round_trip(encoding: str) -> None:
    rgb = smooth_rgb(7, 9)
    header = Header(frame_id='camera')
    header.stamp.sec = 12
    msg = rgb_to_image_msg(rgb, header, encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (7, 9, 27, encoding)
    assert msg.header.frame_id == 'camera' and msg.header.stamp.sec == 12
    assert isinstance(msg.data, array.array) and len(msg.data) == 7 * 27
    assert np.array_equal(image_to_rgb(deserialize_message(serialize_message(msg), Image)), rgb)
    if encoding == 'bgr8':
        assert bytes(msg.data) == rgb[..., ::-1].tobytes()


def test_rgb_to_image_msg_copies_strided_input() -> None:
    rgb = smooth_rgb(8, 10)
    view = rgb[::2, 1::3]
    msg = rgb_to_image_msg(view)
    assert msg.header == Header()
    assert np.array_equal(image_to_rgb(msg), view)
    rgb[:] = 0
    assert np.array_equal(image_to_rgb(msg), smooth_rgb(8, 10)[::2, 1::3])


@pytest.mark.parametrize('rgb, encoding, message', [
    (np.zeros((2, 2, 3), np.uint8), 'mono8', "encoding 'mono8' cannot be published; use one of rgb8, bgr8"),
    (np.zeros((2, 2, 3), np.float32), 'rgb8', r'got float32 array of shape \(2, 2, 3\)'),
    (np.zeros((2, 2), np.uint8), 'rgb8', r'got uint8 array of shape \(2, 2\)'),
    (np.zeros((2, 2, 4), np.uint8), 'rgb8', r'shape \(2, 2, 4\)'),
    ([[[0, 0, 0]]], 'rgb8', 'got list'),
    (np.zeros((0, 3, 3), np.uint8), 'rgb8', r'rgb is empty: shape \(0, 3, 3\)'),
])
def test_rgb_to_image_msg_rejects(rgb: object, encoding: str, message: str) -> None:
    with pytest.raises(ImageConversionError, match=message):
        rgb_to_image_msg(rgb, encoding=encoding)


# --- fuzzing ---------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UINT32 = st.one_of(st.integers(0, 24), st.integers(0, 2**32 - 1), st.sampled_from([2**31, 2**32 - 1]))
ENCODINGS = st.one_of(st.sampled_from(SUPPORTED_ENCODINGS),
                      st.sampled_from(['bayer_rggb8', 'rgb16', '32FC1', 'nv12', 'RGB8', 'rgb8 ', '']),
                      st.text(max_size=12))


def expect_rgb_or_error(convert, msg, height: int | None = None, width: int | None = None) -> None:
    try:
        result = convert(msg)
    except ImageConversionError as error:
        assert str(error)
        return
    assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3
    assert result.shape[0] >= 1 and result.shape[1] >= 1
    if height is not None:
        assert result.shape[:2] == (height, width)


@FUZZ
@given(encoding=ENCODINGS, height=UINT32, width=UINT32, step=UINT32, big_endian=st.integers(0, 255),
       data=st.binary(max_size=2048))
def test_fuzz_arbitrary_fields(encoding: str, height: int, width: int, step: int, big_endian: int,
                               data: bytes) -> None:
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=big_endian, step=step)
    msg.data = array.array('B', data)
    expect_rgb_or_error(image_to_rgb, msg, height, width)


@FUZZ
@given(encoding=st.sampled_from(SUPPORTED_ENCODINGS), height=st.integers(0, 9), width=st.integers(0, 9),
       padding=st.integers(-3, 9), extra=st.integers(-20, 20), big_endian=st.booleans(), seed=st.integers(0, 99))
def test_fuzz_nearly_valid_images(encoding: str, height: int, width: int, padding: int, extra: int,
                                  big_endian: bool, seed: int) -> None:
    # Mostly consistent fields with small perturbations, so both outcomes are exercised.
    step = max(0, width * BYTES_PER_PIXEL[encoding] + padding)
    size = max(0, step * height + extra)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=step)
    msg.data = array.array('B', np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    valid = (height and width and padding >= 0 and extra >= 0
             and not (encoding in YUV_ORDERS and width % 2))
    if valid:
        check_rgb(image_to_rgb(msg), height, width)
    else:
        with pytest.raises(ImageConversionError):
            image_to_rgb(msg)


@FUZZ
@given(image_format=st.one_of(st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8',
                                               'bgr8; png compressed bgr8', 'tiff', '']), st.text(max_size=20)),
       data=st.one_of(st.binary(max_size=512),
                      st.builds(lambda head, tail: head + tail,
                                st.sampled_from([b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n']), st.binary(max_size=512)),
                      st.builds(lambda source, cut: source[:cut], st.sampled_from([JPEG, PNG]),
                                st.integers(0, max(len(JPEG), len(PNG)))),
                      st.builds(lambda source, index, byte: source[:index] + bytes([byte]) + source[index + 1:],
                                st.sampled_from([JPEG, PNG]), st.integers(0, 400), st.integers(0, 255))))
def test_fuzz_compressed(image_format: str, data: bytes) -> None:
    expect_rgb_or_error(compressed_to_rgb, compressed(data, image_format))


def test_error_messages_list_every_supported_encoding() -> None:
    with pytest.raises(ImageConversionError) as caught:
        image_to_rgb(image('nv21'))
    listed = re.search(r'supported: (.*)$', str(caught.value)).group(1).split(', ')
    assert tuple(listed) == SUPPORTED_ENCODINGS
