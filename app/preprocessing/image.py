"""Image preprocessing shared by training, serving and tests (no Flask imports).

bytes -> validated RGB image (format, size and decompression-bomb checks)
-> padded to a square, resized to the model input -> float32 in [0, 1].
Training calls prepare_image() on the file bytes too, so both paths agree.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we accept; Pillow is told to try only these decoders.
ACCEPTED_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_PIXELS = 4_000_000  # a cell crop is ~130x130; 2000x2000 is already generous


class ImageError(ValueError):
    """The bytes are not a usable image; ``reason`` is safe to show the client."""

    def __init__(self, reason: str, too_large: bool = False):
        """Store the reason and whether the problem is size (-> HTTP 413)."""
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG/JPEG bytes into an RGB image, refusing bombs before decoding pixels."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its limit and 2x it; make every case an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
                    too_large=True,
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image refused as a decompression bomb: more than {max_pixels:,} pixels ({exc})", too_large=True
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("the file is not a PNG or JPEG image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image could not be decoded (truncated or corrupt): {exc}") from exc
    return image.convert("RGB")


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """Pad to a square with black (the crops' background), resize to size x size, scale to [0, 1]."""
    square = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(0, 0, 0))
    return np.asarray(square, dtype=np.float32) / 255.0


def prepare_image(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The malaria CNN's preprocessing: encoded bytes -> (size, size, 3) float32 array."""
    return to_model_input(decode_image(data, max_pixels), size)


FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
RESIZE_MODES = ("pad", "crop", "stretch")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image model wants its pictures: size, how to fit the aspect ratio, resampling filter."""

    height: int
    width: int
    resize: str = "pad"  # pad with black | centre-crop | stretch to the size
    filter: str = "bilinear"

    @classmethod
    def from_config(cls, config: dict) -> "ImagePreprocessing":
        """From a manifest's preprocessing settings; ValueError when they are not usable."""
        size = config.get("input_size")
        height, width = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
        settings = cls(int(height), int(width), config.get("resize", "pad"), config.get("filter", "bilinear"))
        if settings.height <= 0 or settings.width <= 0:
            raise ValueError("preprocessing.input_size must be a side or [height, width] of positive integers")
        if settings.resize not in RESIZE_MODES or settings.filter not in FILTERS:
            raise ValueError(f"preprocessing.resize must be one of {RESIZE_MODES}, filter one of {sorted(FILTERS)}")
        return settings

    def apply(self, image: Image.Image) -> np.ndarray:
        """(height, width, 3) float32 in [0, 1]."""
        size, method = (self.width, self.height), FILTERS[self.filter]
        if self.resize == "pad":
            image = ImageOps.pad(image, size, method=method, color=(0, 0, 0))
        elif self.resize == "crop":
            image = ImageOps.fit(image, size, method=method)
        else:
            image = image.resize(size, method)
        return np.asarray(image, dtype=np.float32) / 255.0


@lru_cache(maxsize=1)
def blank_png(side: int = 32) -> bytes:
    """A small grey PNG: an example input for warm-ups and smoke tests."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()
