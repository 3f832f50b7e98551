"""sensor_msgs Image and CompressedImage to RGB uint8 (H, W, 3) arrays, and RGB back to Image.

Our replacement for cv_bridge, called for every camera frame. Raw images are read through
np.frombuffer views over `msg.data` (rclpy gives it as array.array('B')): rgb8 and rgba8 come
back as views without a copy, padded rows included; every other encoding is converted once with
OpenCV. Results may be read-only views into the message; the tracker only reads them (its crops
copy), so callers that want to draw on an image must copy it first.

Policies: rows are `step` bytes apart and `step` may exceed width x bytes per pixel (the padding
is skipped); data longer than step x height is accepted and the tail ignored, since rows are fully
defined by step and some drivers hand over aligned, over-allocated buffers; data shorter than that
is rejected. mono16 keeps its most significant byte (value >> 8), see `_high_byte`.
"""
from __future__ import annotations

import array
import operator
import re
from typing import Any, NamedTuple

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """An image message that cannot be converted; says which field is wrong and its value."""


class ImageTooLargeError(ImageConversionError):
    """An image with more pixels than the node accepts (refused before anything is allocated)."""


class _Layout(NamedTuple):
    bytes_per_pixel: int
    kind: str


# The exact strings of sensor_msgs/image_encodings.hpp. 'yuv422' is UYVY and 'yuv422_yuy2' is YUYV
# (both deprecated there in favour of 'uyvy' and 'yuyv', which newer drivers publish). The OpenCV
# type names mean what cv_bridge's passthrough gives OpenCV code: 8UC3 is BGR.
_LAYOUTS = {
    'rgb8': _Layout(3, 'RGB'),
    'bgr8': _Layout(3, 'BGR'),
    'rgba8': _Layout(4, 'RGBA'),
    'bgra8': _Layout(4, 'BGRA'),
    'mono8': _Layout(1, 'grey'),
    'mono16': _Layout(2, '16-bit grey'),
    'yuv422': _Layout(2, 'UYVY'),
    'uyvy': _Layout(2, 'UYVY'),
    'yuv422_yuy2': _Layout(2, 'YUYV'),
    'yuyv': _Layout(2, 'YUYV'),
    '8UC1': _Layout(1, 'grey'),
    '8UC3': _Layout(3, 'BGR'),
    '16UC1': _Layout(2, '16-bit grey'),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)

# BGR is converted, not viewed with reversed channels: negative strides trip torch.from_numpy.
_TO_RGB = {'BGR': cv2.COLOR_BGR2RGB, 'BGRA': cv2.COLOR_BGRA2RGB,
           'UYVY': cv2.COLOR_YUV2RGB_UYVY, 'YUYV': cv2.COLOR_YUV2RGB_YUY2}
_PACKED_422 = ('UYVY', 'YUYV')
_PUBLISH_ENCODINGS = ('rgb8', 'bgr8')

_SIGNATURES = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
# Always 8-bit, 3 channels (grey expanded, alpha dropped, 16-bit PNG shifted >> 8 as for mono16);
# orientation ignored so that pixels stay where the camera put them (boxes refer to that grid).
_DECODE_FLAGS = cv2.IMREAD_IGNORE_ORIENTATION | getattr(cv2, 'IMREAD_COLOR_RGB', cv2.IMREAD_COLOR)
_DECODES_TO_RGB = hasattr(cv2, 'IMREAD_COLOR_RGB')


def _field(msg: Any, name: str) -> int:
    value = getattr(msg, name)
    try:
        value = operator.index(value)
    except TypeError:
        raise ImageConversionError(f'{name} must be an integer, got {value!r}') from None
    if value < 0:
        raise ImageConversionError(f'{name} {value} is negative')
    return value


def _byte_view(data: Any) -> np.ndarray:
    """`data` as a flat uint8 array: a view of anything with a buffer, a copy of a list of ints."""
    if isinstance(data, np.ndarray) and data.dtype != np.uint8:
        raise ImageConversionError(f'data must hold uint8 values, got a numpy array of {data.dtype}')
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    if isinstance(data, (list, tuple)):
        try:
            return np.frombuffer(bytes(data), np.uint8)
        except (TypeError, ValueError) as error:
            raise ImageConversionError(f'data is a {type(data).__name__} but not of bytes: {error}') from None
    raise ImageConversionError(f'data must be bytes-like (array.array, bytes, uint8 array), '
                               f'got {type(data).__name__}')


def check_pixel_count(width: int, height: int, max_pixels: int | None, what: str = 'image') -> None:
    """ImageTooLargeError unless width x height is within `max_pixels` (None: no cap)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(f'{what} is {width}x{height} = {width * height} pixels, over the cap of '
                                 f'{max_pixels} (parameter input.max_image_pixels)')


def _rows(msg: Any, max_pixels: int | None = None) -> tuple[np.ndarray, str, int, int]:
    """A validated (height, width x bytes per pixel) uint8 view of the pixels, with encoding and size."""
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding) if isinstance(encoding, str) else None
    if layout is None:
        raise ImageConversionError(f'encoding {encoding!r} is not supported; supported: '
                                   f'{", ".join(SUPPORTED_ENCODINGS)}')
    height, width, step = _field(msg, 'height'), _field(msg, 'width'), _field(msg, 'step')
    if height == 0 or width == 0:
        raise ImageConversionError(f'image is empty: height {height}, width {width} (both must be at least 1)')
    check_pixel_count(width, height, max_pixels)
    if layout.kind in _PACKED_422 and width % 2:
        raise ImageConversionError(f'width {width} is odd, but {encoding} ({layout.kind}) packs '
                                   'pixel pairs into 4 bytes, so width must be even')
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(f'step {step} is smaller than width {width} x '
                                   f'{layout.bytes_per_pixel} bytes for {encoding}')
    data = _byte_view(msg.data)
    if data.size == 0:
        raise ImageConversionError(f'empty image data ({encoding} {width}x{height} needs '
                                   f'{step * height} bytes)')
    if data.size < step * height:
        raise ImageConversionError(f'data has {data.size} bytes, expected {step * height} '
                                   f'(step {step} x height {height}) for {encoding} {width}x{height}')
    return data[:step * height].reshape(height, step)[:, :row_bytes], encoding, height, width


def _high_byte(pixels: np.ndarray, big_endian: bool) -> np.ndarray:
    """The most significant byte of each 16-bit pixel of (H, W, 2) bytes, i.e. value >> 8.

    A fixed >> 8 rather than a per-frame min/max stretch: the tracker matches templates taken on
    earlier frames, so a pixel value must map to the same grey level in every frame; a stretch
    would change the target's appearance whenever anything else in view got brighter, blow up
    noise on flat frames, and needs a full pass for min/max. cv_bridge and OpenCV's 16-bit PNG
    decoding use the same mapping. The cost: 10/12-bit data stored in the low bits comes out dark.
    """
    return cv2.extractChannel(pixels, 0 if big_endian else 1)


def image_to_rgb(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array of a sensor_msgs Image; a read-only view of msg.data where possible.
    Images over `max_pixels` raise ImageTooLargeError before any conversion."""
    rows, encoding, height, width = _rows(msg, max_pixels)
    kind = _LAYOUTS[encoding].kind
    pixels = rows.reshape(height, width, _LAYOUTS[encoding].bytes_per_pixel)
    if kind in ('RGB', 'RGBA'):
        rgb = pixels[:, :, :3]
        # Views over a writable array.array would let a caller change the message under its feet.
        rgb.flags.writeable = False
        return rgb
    if kind == 'grey':
        return cv2.cvtColor(rows, cv2.COLOR_GRAY2RGB)
    if kind == '16-bit grey':
        return cv2.cvtColor(_high_byte(pixels, bool(msg.is_bigendian)), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(pixels, _TO_RGB[kind])


def _compression(image_format: Any) -> str:
    """'jpeg' or 'png' from a CompressedImage format such as 'rgb8; jpeg compressed bgr8'."""
    if not isinstance(image_format, str):
        raise ImageConversionError(f'format must be a string, got {image_format!r}')
    words = set(re.split(r'[\s;]+', image_format.lower()))
    if 'compresseddepth' in words:
        raise ImageConversionError(f'format {image_format!r} is a compressedDepth image (a depth map '
                                   'behind a 12-byte header); only colour jpeg and png are supported')
    kinds = {'jpeg' if word == 'jpg' else word for word in words} & set(_SIGNATURES)
    if len(kinds) != 1:
        raise ImageConversionError(f'format {image_format!r} must name exactly one of jpeg or png')
    return kinds.pop()


def _png_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when the header is cut short."""
    if data.size < 24 or data[12:16].tobytes() != b'IHDR':
        return None
    return int.from_bytes(data[16:20].tobytes(), 'big'), int.from_bytes(data[20:24].tobytes(), 'big')


# JPEG start-of-frame markers (C0-CF except DHT C4, JPG C8 and DAC CC) carry the frame size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # markers without a length field


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first start-of-frame segment, or None if there is none."""
    raw = data.tobytes() if data.size <= 65536 else data[:65536].tobytes()  # headers sit at the start
    position = 2
    while position + 4 <= len(raw):
        if raw[position] != 0xFF:
            return None
        marker = raw[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in _JPEG_SOF:
            if position + 9 > len(raw):
                return None
            height = int.from_bytes(raw[position + 5:position + 7], 'big')
            width = int.from_bytes(raw[position + 7:position + 9], 'big')
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + int.from_bytes(raw[position + 2:position + 4], 'big')
    return None


def compressed_to_rgb(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array of a jpeg or png sensor_msgs CompressedImage. Images whose
    header declares more than `max_pixels` raise ImageTooLargeError before decoding."""
    kind = _compression(msg.format)
    data = _byte_view(msg.data)
    if data.size == 0:
        raise ImageConversionError(f'empty image data (format {msg.format!r})')
    # Checking the signature keeps OpenCV's other decoders away from our input.
    signature = _SIGNATURES[kind]
    if data[:len(signature)].tobytes() != signature:
        actual = next((name for name, sig in _SIGNATURES.items()
                       if data[:len(sig)].tobytes() == sig), None)
        found = f'{actual} data' if actual else f'data starting with {data[:8].tobytes().hex(" ")}'
        raise ImageConversionError(f'format {msg.format!r} says {kind}, but got {found}')
    if max_pixels is not None:
        size = _png_size(data) if kind == 'png' else _jpeg_size(data)
        if size is None:
            raise ImageConversionError(f'{kind} data of {data.size} bytes has no readable image size in its '
                                       'header (corrupt or truncated)')
        check_pixel_count(*size, max_pixels, what=f'{kind} image')
    try:
        decoded = cv2.imdecode(data, _DECODE_FLAGS)
    except cv2.error as error:
        raise ImageConversionError(f'{kind} data of {data.size} bytes could not be decoded: '
                                   f'{str(error).strip()}') from None
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(f'{kind} data of {data.size} bytes could not be decoded '
                                   '(corrupt or truncated)')
    return decoded if _DECODES_TO_RGB else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, header: Header | None = None, encoding: str = 'rgb8') -> Image:
    """A sensor_msgs Image (rgb8 or bgr8) of an (H, W, 3) uint8 RGB array."""
    if encoding not in _PUBLISH_ENCODINGS:
        raise ImageConversionError(f'encoding {encoding!r} cannot be published; use one of '
                                   f'{", ".join(_PUBLISH_ENCODINGS)}')
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        described = f'{rgb.dtype} array of shape {rgb.shape}' if isinstance(rgb, np.ndarray) \
            else type(rgb).__name__
        raise ImageConversionError(f'rgb must be a uint8 array of shape (H, W, 3), got {described}')
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f'rgb is empty: shape {rgb.shape}')
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if encoding == 'bgr8' else np.ascontiguousarray(rgb)
    # rclpy takes an array.array('B') as it is (or with one memcpy); with ROS_PYTHON_CHECK_FIELDS=1
    # bytes are checked value by value (60 ms at VGA), and numpy arrays are iterated or refused.
    data = array.array('B')
    data.frombytes(pixels)
    msg = Image(header=header if header is not None else Header(), height=height, width=width,
                encoding=encoding, is_bigendian=0, step=width * 3)
    msg.data = data
    return msg
