"""Draw the prediction onto a frame with Pillow, and encode frames as JPEG."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .classify import FramePrediction

__all__ = ["draw_overlay", "encode_jpeg", "status_text"]

ROI_COLOUR = (255, 200, 0)
TEXT_COLOUR = (255, 255, 255)
BANNER_COLOUR = (0, 0, 0, 160)


def status_text(prediction: FramePrediction) -> str:
    """Return the one-line summary shown on the overlay and in the terminal."""
    return (
        f"{prediction.label} {prediction.confidence:5.1%}  {prediction.fps:4.1f} fps  "
        f"{prediction.latency_ms:5.1f} ms"
    )


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_overlay(image: np.ndarray, prediction: FramePrediction | None) -> Image.Image:
    """Return a copy of the RGB frame with the region of interest and the prediction drawn on it."""
    frame = Image.fromarray(image).convert("RGBA")
    if prediction is None:
        return frame.convert("RGB")

    layer = Image.new("RGBA", frame.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, width, height = prediction.roi
    line = max(1, min(frame.size) // 160)
    draw.rectangle((left, top, left + width - 1, top + height - 1), outline=ROI_COLOUR + (255,), width=line)

    font_size = max(10, frame.size[1] // 18)
    text = status_text(prediction)
    margin = font_size // 3
    box = draw.textbbox((margin, margin), text, font=_font(font_size))
    draw.rectangle((0, 0, frame.size[0], box[3] + margin), fill=BANNER_COLOUR)
    draw.text((margin, margin), text, fill=TEXT_COLOUR + (255,), font=_font(font_size))
    return Image.alpha_composite(frame, layer).convert("RGB")


def encode_jpeg(image: Image.Image, quality: int = 80) -> bytes:
    """Return ``image`` as JPEG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
