"""Single uint8 images through PIL: decoding files, colour modes, resizing, and PIL <-> numpy.

Data sets are stored and loaded as uint8 (H, W, C) arrays. These helpers serve the loading side, where
images may still differ in size (files in a folder, ragged tfds data sets), so they work one image at a
time with PIL. Resizing uses PIL's bilinear filter, which antialiases when shrinking. Float
preprocessing of whole arrays lives in ``fluxnet.data.preprocess``.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from fluxnet.errors import ArgumentError, DataError
from fluxnet.registry import unknown_name_error

COLOR_MODES = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}      # Keras color_mode -> PIL mode
CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}


def image_size_arg(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` as (height, width) positive ints; an int means a square."""
    size = (image_size, image_size) if isinstance(image_size, numbers.Integral) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                                 for s in size):
        raise ArgumentError(f"image_size must be (height, width) with positive ints, got {image_size!r}.")
    return int(size[0]), int(size[1])


def color_mode_arg(color_mode: str) -> str:
    """``color_mode`` checked against the Keras names (grayscale, rgb, rgba)."""
    if color_mode not in COLOR_MODES:
        raise unknown_name_error("color_mode", color_mode, COLOR_MODES)
    return color_mode


def to_pil(image: np.ndarray) -> Image.Image:
    """A uint8 (H, W, C) array with 1, 3 or 4 channels as a PIL image (what tfds' Image feature wants)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise DataError("Expected a uint8 (height, width, channels) image with 1, 3 or 4 channels, "
                        f"got dtype {image.dtype} and shape {image.shape}.")
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)   # uint8: L, RGB or RGBA


def from_pil(image: Image.Image) -> np.ndarray:
    """A PIL image as a uint8 (H, W, C) array."""
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def resize_uint8(image: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """One uint8 (H, W, C) image resized to ``image_size`` = (height, width), PIL bilinear."""
    height, width = image_size
    if image.shape[:2] == (height, width):
        return image
    return from_pil(to_pil(image).resize((width, height), Image.Resampling.BILINEAR))


def read_image(path: str | Path, color_mode: str) -> np.ndarray:
    """The image file at ``path`` decoded to uint8 (H, W, C) in ``color_mode``; DataError naming it."""
    try:
        with Image.open(path) as image:
            return from_pil(image.convert(COLOR_MODES[color_mode]))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as err:
        raise DataError(f"Cannot read image file {str(path)!r}: {err}") from err
