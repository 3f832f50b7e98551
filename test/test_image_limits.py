"""The frame size cap of the image conversion: checked on the declared size before any pixel is
converted or decoded, for raw images and for jpeg/png headers."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from stark_ros.image_conversion import ImageConversionError, ImageTooLargeError, compressed_to_rgb, image_to_rgb


def raw(width: int, height: int, data_bytes: int | None = None) -> Image:
    image = Image(width=width, height=height, encoding='rgb8', step=width * 3)
    image.data = bytes(width * height * 3 if data_bytes is None else data_bytes)
    return image


def compressed(kind: str, rgb: np.ndarray, **flags) -> CompressedImage:
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if flags.get('progressive') else []
    message = CompressedImage(format=kind)
    message.data = cv2.imencode('.jpg' if kind == 'jpeg' else '.png', rgb, params)[1].tobytes()
    return message


def test_raw_images_over_the_cap_are_refused_on_their_declared_size():
    assert image_to_rgb(raw(8, 5), max_pixels=40).shape == (5, 8, 3)
    with pytest.raises(ImageTooLargeError, match=r'^image is 8x6 = 48 pixels, over the cap of 40 '
                                                 r'\(parameter input.max_image_pixels\)$'):
        image_to_rgb(raw(8, 6), max_pixels=40)
    # 1e10 pixels declared, 16 bytes sent: the cap names the size (no 30 GB allocation is tried).
    with pytest.raises(ImageTooLargeError, match='100000x100000'):
        image_to_rgb(raw(100_000, 100_000, data_bytes=16), max_pixels=7680 * 4320)
    assert image_to_rgb(raw(8, 6)).shape == (6, 8, 3), 'no cap by default'


@pytest.mark.parametrize('kind, flags', [('jpeg', {}), ('jpeg', {'progressive': True}), ('png', {})])
def test_compressed_sizes_are_read_from_the_header(kind, flags):
    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    message = compressed(kind, rgb, **flags)
    assert compressed_to_rgb(message, max_pixels=53 * 37).shape == (37, 53, 3)
    with pytest.raises(ImageTooLargeError, match=f'^{kind} image is 53x37 = 1961 pixels, over the cap of 1960'):
        compressed_to_rgb(message, max_pixels=53 * 37 - 1)


def test_a_png_declaring_a_huge_size_is_refused_before_decoding():
    small = compressed('png', np.zeros((4, 4, 3), np.uint8))
    data = bytearray(small.data)
    data[16:24] = (100_000).to_bytes(4, 'big') * 2  # IHDR width and height
    small.data = bytes(data)
    with pytest.raises(ImageTooLargeError, match='png image is 100000x100000'):
        compressed_to_rgb(small, max_pixels=7680 * 4320)


def test_a_jpeg_without_a_frame_header_is_refused_when_a_cap_is_set():
    message = CompressedImage(format='jpeg')
    message.data = b'\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02'
    with pytest.raises(ImageConversionError, match='has no readable image size in its header'):
        compressed_to_rgb(message, max_pixels=1000)
