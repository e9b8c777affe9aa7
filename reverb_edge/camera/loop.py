"""The camera loop: capture on one thread, classify the newest frame on the caller's thread.

Typical use in a device app::

    engine = Engine.load("mnist")
    with CameraLoop(engine, open_source("auto")) as loop:
        for result in loop:
            print(result.prediction.label, result.prediction.confidence)

Iteration ends when a finite source (video, image folder) runs out, or when
:meth:`CameraLoop.stop` is called from another thread. A camera that fails
for good raises :class:`~reverb_edge.camera.sources.SourceError` from the
loop, after the capture thread has retried it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from .capture import CaptureThread, LatestFrame
from .classify import FrameClassifier, FramePrediction
from .overlay import draw_overlay
from ..errors import InputError, ReverbError
from .sources import FrameSource, SourceError

logger = logging.getLogger(__name__)

__all__ = ["CameraLoop", "LoopResult"]


@dataclass(frozen=True)
class LoopResult:
    """One classified frame: the RGB frame, its prediction and, if requested, the annotated image."""

    image: np.ndarray
    prediction: FramePrediction
    annotated: Image.Image | None


class CameraLoop:
    """Capture frames from ``source`` and classify the newest one with ``engine``.

    Args:
        engine: an image model's engine, used only by this loop's thread.
        source: an unopened frame source; the loop opens and closes it.
        roi, smoothing: as for :class:`~reverb_edge.camera.classify.FrameClassifier`.
        every_frame: classify every frame of a file, in order and as fast as
            possible, instead of playing it in real time and skipping the
            frames that arrive while the classifier is busy.
        annotate: draw the overlay on each frame (``LoopResult.annotated``).
        retries, retry_delay: how often and after how long the capture
            thread reopens a failing camera (see :class:`CaptureThread`).
        stall_timeout: seconds without a frame or a reopen attempt after
            which the loop raises :class:`SourceError`.
    """

    def __init__(self, engine, source: FrameSource, roi=None, smoothing: int = 1, every_frame: bool = False,
                 annotate: bool = False, retries: int = 5, retry_delay: float = 0.5,
                 stall_timeout: float = 30.0) -> None:
        if not isinstance(source, FrameSource):
            raise InputError(
                f"source must be a FrameSource, got {type(source).__name__}; make one with open_source('auto')"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be a whole number >= 0, got {retries!r}")
        if not retry_delay >= 0 or not stall_timeout > 0:
            raise InputError(
                f"retry_delay must be >= 0 and stall_timeout > 0 seconds, got {retry_delay!r} and {stall_timeout!r}"
            )
        self.classifier = FrameClassifier(engine, roi=roi, smoothing=smoothing)
        self.source = source
        self.annotate = annotate
        self.stall_timeout = stall_timeout
        self.slot = LatestFrame(wait_for_consumer=every_frame)
        self.capture = CaptureThread(source, self.slot, retries=retries, retry_delay=retry_delay,
                                     pace=not every_frame)
        self.classified = 0

    def start(self) -> None:
        """Load the kernels and start the capture thread (iteration starts it too)."""
        if self.capture.ident is None and not self.slot.closed:
            self.classifier.warm_up()
            self.capture.start()

    def stop(self) -> None:
        """Stop capturing and wait for the capture thread; iteration then ends."""
        self.capture.stop()

    def __enter__(self) -> "CameraLoop":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __iter__(self) -> Iterator[LoopResult]:
        if self.slot.closed or (self.capture.ident is not None and not self.capture.is_alive()):
            raise ReverbError("this CameraLoop has ended; create a new CameraLoop to capture again")
        self.start()
        try:
            yield from self._results()
        finally:
            self.stop()

    def _results(self) -> Iterator[LoopResult]:
        waited_since = time.monotonic()
        while True:
            captured = self.slot.get(timeout=0.25)
            if captured is None:
                if self.slot.closed:
                    return
                idle = time.monotonic() - max(waited_since, self.capture.last_activity)
                # Files and the pattern may be paced slower than the timeout; only cameras stall.
                if self.source.live and idle > self.stall_timeout:
                    raise SourceError(
                        f"no frame from {self.source.description} for {self.stall_timeout:g} s; "
                        "check the camera connection"
                    )
                continue

            prediction = self.classifier.classify(
                captured.image, captured.index, captured.captured_at, self.slot.dropped, captured.name
            )
            self.classified += 1
            annotated = draw_overlay(captured.image, prediction) if self.annotate else None
            yield LoopResult(captured.image, prediction, annotated)
            waited_since = time.monotonic()
