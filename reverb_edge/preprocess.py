"""Turn image files and arrays into the normalised input tensors a model expects.

The functions take a duck-typed ``spec`` with the attributes of a model's
input specification:

* ``shape``: ``(C, H, W)``, with C = 1 (grayscale) or 3 (RGB);
* ``mean``, ``std``: one value per channel, applied to ``pixel / 255``;
* ``invert``: True when the model expects light strokes on a dark
  background, as MNIST does.  Images of dark ink on light paper are then
  inverted before use.

Steps of :func:`preprocess_image`, in order:

1. Convert the colour mode: to ``L`` for C = 1 (ITU-R 601-2 luma, Pillow's
   conversion) or to ``RGB`` for C = 3.  Transparent pixels are composited
   over white, because drawings with a transparent background are meant to
   be seen on a white page.  16-bit grayscale is scaled to 8 bits.
2. Fix the polarity: if ``spec.invert`` is True and the border of the image
   is light (mean above 127), the image is inverted.
3. Stretch the contrast, only if ``spec.invert`` is True: each channel is
   mapped linearly so that its background level (the median of the border
   pixels) becomes 0 and its maximum becomes 255, clipped to 0–255.
   Inverted paper that is not pure white is gray, not the black the model
   was trained on, and without this step such images are misread.  A
   channel whose maximum is not above its background level, such as a
   blank page, is left as it is.  An image with a black background and
   strokes that reach 255, such as most MNIST digits, is not changed.
4. Fit the image into H×W: scale it, keeping its aspect ratio, until it
   touches the box, then centre it and fill the rest with the background
   colour (the median of the border pixels).  An image already of size H×W
   is not resampled.
5. Normalise each channel: ``(pixel / 255 - mean) / std``, in float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from reverb_edge.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "convert_mode", "list_images", "load_image", "preprocess_image"]

#: File name suffixes that :func:`list_images` treats as images.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff", ".webp"}
)

#: Mean border intensity (0–255) above which an image counts as dark-on-light.
LIGHT_BORDER_THRESHOLD = 127

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class InputSpecLike(Protocol):
    """The attributes of a model's input specification that preprocessing reads."""

    shape: tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    invert: bool


def list_images(path: os.PathLike | str) -> list[Path]:
    """Return the image files to process for ``path``.

    A file path is returned as the only entry, whatever its suffix, and is
    checked when it is loaded.  For a folder, its files with a suffix in
    :data:`IMAGE_SUFFIXES` (any case) are returned sorted by name.
    Subfolders are not searched, and hidden files such as the ``._name.jpg``
    files macOS leaves on USB sticks are skipped.

    Raises:
        InputError: ``path`` does not exist, or the folder contains no image.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"image file or folder not found: {path}")

    images = sorted(
        entry
        for entry in path.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")
        and entry.is_file()
    )
    if not images:
        suffixes = ", ".join(sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))
        raise InputError(f"no image files ({suffixes}) in folder {path}")
    return images


def load_image(path: os.PathLike | str) -> Image.Image:
    """Read an image file into memory and apply its EXIF orientation.

    Phone cameras store photos unrotated and record the rotation in EXIF,
    so the orientation is applied here.  For animated GIF and multi-page
    TIFF files, only the first frame is read.

    Raises:
        InputError: the file is missing, a folder, or not an image that
            Pillow can decode.  The message names the path.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except FileNotFoundError as err:
        raise InputError(f"image file not found: {path}") from err
    except UnidentifiedImageError as err:
        raise InputError(
            f"{path} is not an image file that Pillow can read; use PNG, JPEG, BMP, GIF, "
            "PGM, TIFF or WebP"
        ) from err
    except Image.DecompressionBombError as err:
        raise InputError(f"image file {path} has too many pixels to load safely: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow raises OSError for truncated or corrupt data and SyntaxError
        # or ValueError from some format plugins.
        raise InputError(f"cannot read image file {path}: {err}") from err


def preprocess_image(image: Image.Image | np.ndarray, spec: InputSpecLike) -> np.ndarray:
    """Convert an image into a normalised float32 tensor of shape ``spec.shape``.

    ``image`` is a Pillow image or a uint8 array of shape (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4), the last two being RGB and RGBA.  The module
    docstring lists the steps.

    Raises:
        InputError: the image is empty (width or height 0), has an
            unsupported type, dtype, shape or colour mode, or ``spec`` is
            inconsistent.
    """
    channels, height, width = _check_spec(spec)
    pil_image = _to_pil(image)
    if pil_image.width == 0 or pil_image.height == 0:
        raise InputError(
            f"image has size {pil_image.width}×{pil_image.height} (width×height); "
            "expected at least 1×1 pixels"
        )
    pixels = np.asarray(convert_mode(pil_image, channels))

    if spec.invert:
        if _border_pixels(pixels).mean() > LIGHT_BORDER_THRESHOLD:
            pixels = 255 - pixels
        pixels = _stretch_contrast(pixels)
    pixels = _fit_into_box(pixels, height, width)
    return _normalise(pixels, spec.mean, spec.std)


def _check_spec(spec: InputSpecLike) -> tuple[int, int, int]:
    shape = tuple(spec.shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise InputError(f"input spec shape {shape} is invalid; expected (C, H, W) with C = 1 or 3")
    channels = shape[0]
    if len(spec.mean) != channels or len(spec.std) != channels:
        raise InputError(
            f"input spec has {len(spec.mean)} mean and {len(spec.std)} std values, "
            f"expected {channels}, one per channel"
        )
    if any(not value > 0 for value in spec.std):
        raise InputError(f"input spec std {tuple(spec.std)} must be positive")
    return shape


def _to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"expected a Pillow image or a numpy array, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"image array has dtype {image.dtype}; expected uint8 with values 0–255 "
            "(convert with np.clip(array, 0, 255).astype(np.uint8))"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    # Pillow picks mode L, RGB or RGBA from the shape of a uint8 array.
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
        return Image.fromarray(image)
    raise InputError(
        f"image array has shape {image.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    )


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Return ``image`` in mode ``L`` (1 channel) or ``RGB`` (3 channels)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion to L clips 16-bit values at 255 instead of
        # scaling them.
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
    elif image.mode == "F":
        raise InputError(
            "floating-point images (mode F) are not supported because their value range "
            "is unknown; save the image with 8 or 16 bits per channel"
        )

    try:
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        return image.convert("L" if channels == 1 else "RGB")
    except ValueError as err:
        # Pillow raises ValueError for the few modes it cannot convert, such as LAB.
        raise InputError(
            f"images in colour mode {image.mode} are not supported ({err}); "
            "save the image as RGB or grayscale"
        ) from err


def _border_pixels(pixels: np.ndarray) -> np.ndarray:
    """Return the pixels of the outer ring, 1/20 of the shorter side wide (at least 1)."""
    height, width = pixels.shape[:2]
    ring = max(1, min(height, width) // 20)
    mask = np.ones((height, width), dtype=bool)
    mask[ring:height - ring, ring:width - ring] = False
    return pixels[mask]


def _background_level(pixels: np.ndarray) -> np.ndarray:
    """Return the median of the border pixels, per channel, rounded to uint8."""
    return np.median(_border_pixels(pixels), axis=0).round().astype(np.uint8)


def _stretch_contrast(pixels: np.ndarray) -> np.ndarray:
    """Map each channel linearly so its background level becomes 0 and its maximum 255.

    The maximum is used rather than a high percentile because the strokes of
    a digit photographed on a whole page can cover less than 0.5 % of the
    pixels: a stroke 10 pixels wide and 3,000 long on a 12-megapixel photo
    covers 0.25 %.  A 99.5th percentile would then fall on the paper and
    stretch its noise to full range, whereas a speck darker than the ink only
    keeps the strokes below 255.
    """
    # NOTE: a nearly blank page with sensor noise is stretched as well, so
    # its noise fills the range 0–255.  The model output for such an image
    # means nothing either way.
    background = _background_level(pixels).astype(np.float64)
    peak = pixels.max(axis=(0, 1)).astype(np.float64)
    span = peak - background
    if np.all(span <= 0):
        return pixels

    # A channel with no pixel above its background keeps gain 1 and offset 0.
    stretches = span > 0
    gain = 255 / np.where(stretches, span, 255.0)
    offset = np.where(stretches, background, 0.0)
    stretched = (pixels - offset) * gain
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)


def _fit_into_box(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale ``pixels`` into height×width keeping the aspect ratio, centred and padded."""
    source_height, source_width = pixels.shape[:2]
    if (source_height, source_width) == (height, width):
        return pixels

    scale = min(width / source_width, height / source_height)
    scaled_width = min(width, max(1, round(source_width * scale)))
    scaled_height = min(height, max(1, round(source_height * scale)))
    # BOX averages the source pixels under each output pixel, which keeps
    # thin strokes when shrinking. BILINEAR gives smooth edges when enlarging.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    scaled = np.asarray(
        Image.fromarray(pixels).resize((scaled_width, scaled_height), resample=resample)
    )

    background = _background_level(pixels)
    boxed = np.empty((height, width) + pixels.shape[2:], dtype=np.uint8)
    boxed[...] = background
    top = (height - scaled_height) // 2
    left = (width - scaled_width) // 2
    boxed[top:top + scaled_height, left:left + scaled_width] = scaled
    return boxed


def _normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Return ``(pixels / 255 - mean) / std`` as float32 of shape (C, H, W)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    scaled = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean_array = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std_array = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((scaled - mean_array) / std_array)
