"""Per-frame classification: region of interest, preprocessing, inference and temporal smoothing."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

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

    def to_dict(self) -> dict:
        return {
            "frame": self.frame,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "fps": round(self.fps, 2),
            "latency_ms": round(self.latency_ms, 3),
            "age_ms": round(self.age_ms, 3),
            "dropped": self.dropped,
            "roi": list(self.roi),
        }


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


class FrameClassifier:
    """Classify RGB frames with an :class:`~reverb_edge.Engine`, one frame at a time.

    Each frame is cropped to the region of interest and preprocessed as the
    model's input spec says: grayscale or RGB, polarity, resize and
    normalisation (see :mod:`reverb_edge.preprocess`). The model then runs
    for its T timesteps.

    Args:
        engine: an engine of an image model; the classifier resets it for each frame.
        roi: (left, top, width, height) in pixels, or None for the largest
            centred box with the model's aspect ratio.
        smoothing: average the class probabilities of this many recent frames (1 = off).
    """

    def __init__(self, engine, roi: tuple[int, int, int, int] | None = None, smoothing: int = 1) -> None:
        if engine.input_spec.events is not None:
            raise InputError(
                "this model takes DVS events, not camera frames; classify event streams with `reverb-edge dvs`"
            )
        if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
            raise InputError(f"smoothing must be a whole number of frames >= 1, got {smoothing!r}")
        if roi is not None:
            roi = tuple(int(v) for v in roi)
            if len(roi) != 4 or roi[0] < 0 or roi[1] < 0 or roi[2] < 1 or roi[3] < 1:
                raise InputError(f"roi must be (left, top, width, height) with width, height >= 1, got {roi!r}")
        self.engine = engine
        self.roi = roi
        self.smoothing = smoothing
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=smoothing)
        self._finish_times: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW_FRAMES)

    def region(self, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """Return the (left, top, width, height) box to classify in a frame of shape (H, W, 3)."""
        height, width = frame_shape[:2]
        if self.roi is None:
            return default_roi((width, height), self.engine.input_spec.shape)
        left, top, box_width, box_height = self.roi
        if left + box_width > width or top + box_height > height:
            raise InputError(
                f"region of interest {self.roi} (left, top, width, height) does not fit in the "
                f"{width}×{height} frame; pick a box inside it"
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
                 dropped: int = 0) -> FramePrediction:
        """Classify one RGB uint8 frame of shape (H, W, 3)."""
        started = time.monotonic()
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
        )
