"""Image preprocessing units: decoding, validation, bomb guard, resize and scale."""
import io

import numpy as np
import pytest
from PIL import Image

from app.preprocessing.image import ImageError, decode_image, prepare_image, to_model_input


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_png_and_jpeg_decode_to_rgb():
    for fmt, mode in (("PNG", "RGBA"), ("PNG", "L"), ("JPEG", "RGB"), ("PNG", "P")):
        image = decode_image(encode(Image.new(mode, (30, 20)), fmt))
        assert image.mode == "RGB" and image.size == (30, 20)


def test_model_input_is_padded_square_scaled_float():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    array = to_model_input(image, 16)
    assert array.shape == (16, 16, 3) and array.dtype == np.float32
    assert array.max() == pytest.approx(1.0) and array.min() == 0.0
    # The 2:1 image fills the middle rows; the padding above and below is black.
    assert array[0].sum() == 0 and array[-1].sum() == 0
    assert array[8, 8, 0] == pytest.approx(1.0)


def test_prepare_image_is_deterministic():
    data = encode(Image.effect_noise((50, 60), 40).convert("RGB"))
    assert np.array_equal(prepare_image(data, 32), prepare_image(data, 32))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"this is plain text, not an image", "not a PNG or JPEG"),
        (b"GIF89a" + b"\x00" * 100, "not a PNG or JPEG"),
    ],
)
def test_unusable_bytes_are_refused(data, fragment):
    with pytest.raises(ImageError, match=fragment) as err:
        decode_image(data)
    assert not err.value.too_large


def test_truncated_png_is_refused():
    data = encode(Image.effect_noise((120, 120), 60).convert("RGB"))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (20000, 20000)))  # a few KB on the wire, 400 M pixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="decompression bomb: more than 4,000,000 pixels") as err:
        decode_image(bomb, max_pixels=4_000_000)
    assert err.value.too_large


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageError, match="limit is 9,999"):
        decode_image(data, max_pixels=9_999)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
