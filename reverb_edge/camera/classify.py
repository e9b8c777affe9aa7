"""Per-frame classification: region of interest, preprocessing, inference and temporal smoothing."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError

__all__ = ["FrameClassifier", "FramePrediction", "default_roi", "softmax"]

# The frame rate is counted over the last two seconds, or the last 60 frames if fewer.
FPS_WINDOW_SECONDS = 2.0
FPS_WINDOW_FRAMES = 60


@dataclass(frozen=True)
class FramePrediction:
    """The class of one camera frame.

    ``confidence`` is the (smoothed) softmax probability of ``label``;
    ``latency_ms`` is the time of preprocessing and inference, and ``age_ms``
    the time from capture to the result, which adds the wait for the
    classifier. ``fps`` is the rate of classified frames over the last two
    seconds (0 for the first frame).
    """

    frame: int
    label: str
    confidence: float
    probabilities: np.ndarray
    latency_ms: float
    age_ms: float
    fps: float
    dropped: int
    roi: tuple[int, int, int, int]
    name: str | None = None

    def to_dict(self) -> dict:
        data = {
            "frame": self.frame,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "fps": round(self.fps, 2),
            "latency_ms": round(self.latency_ms, 3),
            "age_ms": round(self.age_ms, 3),
            "dropped": self.dropped,
            "roi": list(self.roi),
        }
        if self.name is not None:
            data["name"] = self.name
        return data


def softmax(scores: np.ndarray) -> np.ndarray:
    """Return the softmax of a 1-D score vector in float64."""
    shifted = np.asarray(scores, dtype=np.float64) - np.max(scores)
    exp = np.exp(shifted)
    return exp / exp.sum()


def default_roi(frame_size: tuple[int, int], input_shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Return the largest centred (left, top, width, height) box of the model's aspect ratio in the frame."""
    frame_width, frame_height = frame_size
    _, height, width = input_shape
    scale = min(frame_width / width, frame_height / height)
    box_width = max(1, min(frame_width, round(width * scale)))
    box_height = max(1, min(frame_height, round(height * scale)))
    return ((frame_width - box_width) // 2, (frame_height - box_height) // 2, box_width, box_height)


def _check_roi(roi) -> tuple[int, int, int, int]:
    message = (
        f"roi must be four whole numbers (left, top, width, height) with left, top >= 0 and "
        f"width, height >= 1, got {roi!r}"
    )
    if isinstance(roi, (str, bytes)) or not hasattr(roi, "__len__") or len(roi) != 4:
        raise InputError(message)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in roi):
        raise InputError(message)
    left, top, width, height = (int(v) for v in roi)
    if left < 0 or top < 0 or width < 1 or height < 1:
        raise InputError(message)
    return left, top, width, height


class FrameClassifier:
    """Classify RGB frames with an :class:`~reverb_edge.Engine`, one frame at a time.

    Each frame is cropped to the region of interest and preprocessed as the
    model's input spec sets out: grayscale or RGB, polarity, resize and
    normalisation (see :mod:`reverb_edge.preprocess`). The model then runs
    for its T timesteps.

    Args:
        engine: an engine of an image model; the classifier resets it for each frame.
        roi: (left, top, width, height) in pixels, or None for the largest
            centred box with the model's aspect ratio.
        smoothing: average the class probabilities of this many recent frames (1 = off).
    """

    def __init__(self, engine, roi: tuple[int, int, int, int] | None = None, smoothing: int = 1) -> None:
        if not hasattr(engine, "input_spec") or not hasattr(engine, "predict"):
            raise InputError(
                f"expected an Engine, got {type(engine).__name__}; load one with Engine.load('mnist')"
            )
        if engine.input_spec.events is not None:
            raise InputError(
                "this model takes DVS events, not camera frames; classify event streams with `reverb-edge dvs`"
            )
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, np.integer)) or smoothing < 1:
            raise InputError(f"smoothing must be a whole number of frames >= 1, got {smoothing!r}")
        self.engine = engine
        self.roi = _check_roi(roi) if roi is not None else None
        self.smoothing = int(smoothing)
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=self.smoothing)
        self._finish_times: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW_FRAMES)

    def region(self, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """Return the (left, top, width, height) box to classify in a frame of shape (H, W, 3)."""
        height, width = frame_shape[:2]
        if self.roi is None:
            return default_roi((width, height), self.engine.input_spec.shape)
        left, top, box_width, box_height = self.roi
        if left + box_width > width or top + box_height > height:
            raise InputError(
                f"region of interest left={left}, top={top}, width={box_width}, height={box_height} "
                f"does not fit in the {width}×{height} frame; pass a box inside it (--roi)"
            )
        return self.roi

    def reset(self) -> None:
        """Forget the smoothing history and the frame rate, as for a new stream."""
        self._recent.clear()
        self._finish_times.clear()

    def warm_up(self) -> None:
        """Run the model once on a blank input, so that the first frame does not pay for loading the kernels."""
        self.engine.predict(np.zeros(self.engine.input_spec.shape, dtype=np.float32))

    def classify(self, image: np.ndarray, frame: int = 0, captured_at: float | None = None,
                 dropped: int = 0, name: str | None = None) -> FramePrediction:
        """Classify one RGB uint8 frame of shape (H, W, 3), or a Pillow image."""
        started = time.monotonic()
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", type(image).__name__)
            raise InputError(f"expected an RGB uint8 frame of shape (H, W, 3) or a Pillow image, got {shape}")
        left, top, width, height = box = self.region(image.shape)
        x = self.engine.preprocess(image[top:top + height, left:left + width])
        probabilities = softmax(self.engine.predict(x))
        finished = time.monotonic()

        self._recent.append(probabilities)
        smoothed = np.mean(self._recent, axis=0)
        best = int(smoothed.argmax())

        self._finish_times.append(finished)
        while len(self._finish_times) > 2 and finished - self._finish_times[0] > FPS_WINDOW_SECONDS:
            self._finish_times.popleft()
        span = finished - self._finish_times[0]
        fps = (len(self._finish_times) - 1) / span if span > 0 else 0.0

        return FramePrediction(
            frame=frame,
            label=self.engine.labels[best],
            confidence=float(smoothed[best]),
            probabilities=smoothed,
            latency_ms=(finished - started) * 1000,
            age_ms=(finished - (captured_at if captured_at is not None else started)) * 1000,
            fps=fps,
            dropped=dropped,
            roi=box,
            name=name,
        )
