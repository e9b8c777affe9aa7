"""Classify an event stream as it arrives: sliding windows over chunks of any size.

A device app feeds event chunks (sorted by time, any length, split anywhere)
to :meth:`StreamClassifier.feed` and gets back a prediction for every window
that the new events complete. Windows are ``window_us`` long and start every
``hop_us``; the first starts at the first event's timestamp. A window
[start, start + window_us) is complete once an event at or after its end has
arrived, or when :meth:`StreamClassifier.flush` is called at the end of the
stream. Events stay buffered across chunk boundaries only as long as a
window still needs them, so memory is bounded by the events of one window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .types import EVENT_DTYPE, empty_events


IMAGE_MODEL_MESSAGE = (
    "this model takes images, not events (its input spec has no event encoding); use a DVS model such "
    "as the shipped 'nmnist', or classify images with `reverb-edge predict`"
)

# Windows and hops are limited to one hour, far above any recognition window.
MAX_DURATION_US = 3_600_000_000


def _duration(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise InputError(f"{name} must be a finite number of microseconds, got {value!r}")
    rounded = int(round(value))
    if not 1 <= rounded <= MAX_DURATION_US:
        raise InputError(f"{name} must be between 1 µs and {MAX_DURATION_US} µs (one hour), got {value!r}")
    return rounded


@dataclass(frozen=True)
class WindowPrediction:
    """The class scores of one window of events; times in µs, latency in milliseconds of compute."""

    start_us: int
    end_us: int
    events: int
    label: str
    confidence: float
    scores: np.ndarray
    latency_ms: float

    def to_dict(self) -> dict:
        return {
            "start_us": self.start_us,
            "end_us": self.end_us,
            "events": self.events,
            "label": self.label,
            "confidence": self.confidence,
            "latency_ms": round(self.latency_ms, 3),
        }


class StreamClassifier:
    """Sliding-window classification of an event stream with an :class:`~reverb_edge.Engine`.

    ``window_us`` defaults to the model's event window and ``hop_us`` to the
    window (no overlap). Windows without events are skipped.
    """

    def __init__(self, engine, window_us: int | None = None, hop_us: int | None = None) -> None:
        encoding = engine.input_spec.events
        if encoding is None:
            raise InputError(IMAGE_MODEL_MESSAGE)
        self.engine = engine
        self.window_us = _duration("window_us", encoding.window_us if window_us is None else window_us)
        self.hop_us = _duration("hop_us", self.window_us if hop_us is None else hop_us)
        self.sensor_size = encoding.sensor_size
        self._buffer = empty_events()
        self._next_start: int | None = None
        self._last_t: int | None = None
        self._ended = False

    def feed(self, events: np.ndarray) -> list[WindowPrediction]:
        """Add a chunk of events and return the predictions of the windows it completes."""
        if self._ended:
            raise InputError("the stream has ended with flush(); create a new StreamClassifier for a new stream")
        if getattr(events, "dtype", None) != EVENT_DTYPE:
            raise InputError(f"events must be an EVENT_DTYPE array, got {getattr(events, 'dtype', type(events))}")
        if len(events) == 0:
            return []
        times = events["t"]
        if np.any(np.diff(times) < 0) or (self._last_t is not None and times[0] < self._last_t):
            raise InputError("events must arrive sorted by timestamp, within and across chunks")
        self._check_coordinates(events)
        self._last_t = int(times[-1])
        if self._next_start is None:
            self._next_start = int(times[0])
        self._buffer = np.concatenate([self._buffer, events]) if len(self._buffer) else events.copy()

        predictions = []
        while self._next_start + self.window_us <= self._last_t:
            self._skip_empty_windows()
            if self._next_start + self.window_us > self._last_t:
                break
            prediction = self._classify(self._next_start)
            if prediction is not None:
                predictions.append(prediction)
            self._advance()
        return predictions

    def flush(self) -> list[WindowPrediction]:
        """Classify the windows that still hold events at the end of the stream, and end it."""
        self._ended = True
        predictions = []
        while self._next_start is not None and len(self._buffer):
            self._skip_empty_windows()
            prediction = self._classify(self._next_start)
            if prediction is not None:
                predictions.append(prediction)
            self._advance()
        return predictions

    def _check_coordinates(self, events: np.ndarray) -> None:
        """Reject a chunk with events outside the model's sensor before any state changes."""
        width, height, _ = self.sensor_size
        x, y, p = events["x"], events["y"], events["p"]
        if x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height:
            raise InputError(
                f"events reach x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}], outside the model's "
                f"{width}x{height} sensor; downsample or crop them first (reverb-edge dvs --fit does)"
            )
        if p.min() < 0 or p.max() > 1:
            raise InputError(f"polarities must be 0 or 1, got values in [{p.min()}, {p.max()}]")

    def _skip_empty_windows(self) -> None:
        """Jump over windows that hold no events, in one step however long the gap in time."""
        if not len(self._buffer):
            return
        first = int(self._buffer["t"][0])
        if first >= self._next_start + self.window_us:
            self._next_start += ((first - self._next_start - self.window_us) // self.hop_us + 1) * self.hop_us

    def _advance(self) -> None:
        self._next_start += self.hop_us
        keep = np.searchsorted(self._buffer["t"], self._next_start, side="left")
        self._buffer = self._buffer[keep:]

    def _classify(self, start: int) -> WindowPrediction | None:
        times = self._buffer["t"]
        stop = np.searchsorted(times, start + self.window_us, side="left")
        begin = np.searchsorted(times, start, side="left")
        window = self._buffer[begin:stop]
        if len(window) == 0:
            return None
        started = time.perf_counter()
        scores = self.engine.predict_events(window)
        latency_ms = 1000.0 * (time.perf_counter() - started)
        shifted = np.exp(scores.astype(np.float64) - scores.max())
        best = int(np.argmax(scores))
        return WindowPrediction(
            start_us=start, end_us=start + self.window_us, events=len(window), label=self.engine.labels[best],
            confidence=float(shifted[best] / shifted.sum()), scores=scores, latency_ms=latency_ms,
        )
