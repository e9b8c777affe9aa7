"""Capture frames on a thread of their own, handing over only the newest one.

A camera delivers frames at its own pace while inference takes as long as it
takes. :class:`CaptureThread` reads the source continuously and puts each
frame into a :class:`LatestFrame` slot, replacing any frame that inference
has not taken yet, so the classifier always gets the newest frame and at most
one frame waits in memory. A failing camera is closed and reopened with
exponential backoff. After ``retries`` failed attempts in a row the thread
stops, and the consumer receives the error.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from .sources import EndOfStream, FrameSource, SourceError, check_frame

logger = logging.getLogger(__name__)

__all__ = ["CapturedFrame", "CaptureThread", "LatestFrame"]


@dataclass(frozen=True)
class CapturedFrame:
    """A frame with its sequence number (from 0, counting dropped frames), capture time (``time.monotonic``)
    and, for image folders, the file name."""

    index: int
    image: np.ndarray
    captured_at: float
    name: str | None = None


class LatestFrame:
    """A one-frame slot between a producer and a consumer thread.

    :meth:`put` replaces the waiting frame (latest-frame-wins) unless
    ``wait_for_consumer`` is set, in which case it blocks until the previous
    frame was taken, so that every frame of a file is classified.
    :meth:`close` ends the stream, optionally with an error for the consumer.
    """

    def __init__(self, wait_for_consumer: bool = False) -> None:
        self.wait_for_consumer = wait_for_consumer
        self.dropped = 0
        self._condition = threading.Condition()
        self._frame: CapturedFrame | None = None
        self._closed = False
        self._error: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, frame: CapturedFrame) -> bool:
        """Offer ``frame``; return False when the slot is closed and the frame was discarded."""
        with self._condition:
            if self.wait_for_consumer:
                self._condition.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """Take the waiting frame, waiting up to ``timeout`` seconds for one.

        Returns None on timeout or once the slot is closed and empty. If the
        producer closed the slot with an error, that error is raised instead.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._condition.notify_all()
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def close(self, error: BaseException | None = None) -> None:
        """End the stream; a consumer waiting in :meth:`get` wakes up (and gets ``error``)."""
        with self._condition:
            self._closed = True
            if error is not None and self._error is None:
                self._error = error
            self._condition.notify_all()


class CaptureThread(threading.Thread):
    """Read ``source`` into ``slot`` until the source ends, fails for good, or :meth:`stop` is called.

    Args:
        source: the frame source; the thread opens and closes it.
        slot: where frames go.
        retries: reopen attempts after a failure before giving up; the count
            restarts after each frame that arrives.
        retry_delay: seconds before the first reopen; each further attempt
            waits twice as long, up to ``max_retry_delay``.
        pace: play recorded sources at their ``frame_rate`` instead of as
            fast as they decode.
    """

    def __init__(self, source: FrameSource, slot: LatestFrame, retries: int = 5, retry_delay: float = 0.5,
                 max_retry_delay: float = 8.0, pace: bool = True) -> None:
        super().__init__(name=f"capture {source.description}", daemon=True)
        self.source = source
        self.slot = slot
        self.retries = retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.pace = pace
        self.frames = 0
        self._frames_since_open = 0
        #: ``time.monotonic()`` of the last frame or reopen attempt, for stall detection.
        self.last_activity = time.monotonic()
        self._stopping = threading.Event()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to end, and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        self.slot.close()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
            if self.is_alive():
                logger.warning("%s is still blocked in a read after %s s; leaving it to exit with the process",
                               self.name, timeout)

    def run(self) -> None:
        error: BaseException | None = None
        try:
            self._capture()
        except EndOfStream as end:
            logger.info("%s", end)
        except BaseException as err:  # handed to the consumer, which raises it in its own thread
            error = err
        finally:
            try:
                self.source.close()
            except Exception as err:  # the stream is over either way
                logger.warning("closing %s failed: %s", self.source.description, err)
            self.slot.close(error)

    def _capture(self) -> None:
        attempts = 0
        while not self._stopping.is_set():
            try:
                self.last_activity = time.monotonic()
                self._frames_since_open = 0
                self.source.open()
                self._read_frames()
                return
            except SourceError as err:
                if not self.source.live or self._stopping.is_set():
                    raise
                # Frames since the last open mean the camera worked again, so the count restarts.
                attempts = 1 if self._frames_since_open > 0 else attempts + 1
                try:
                    self.source.close()
                except Exception as close_error:
                    logger.warning("closing %s failed: %s", self.source.description, close_error)
                if attempts > self.retries:
                    failure = "stopped delivering frames" if self.frames else "delivered no frame"
                    tries = "1 retry" if self.retries == 1 else f"{self.retries} retries"
                    raise SourceError(
                        f"{self.source.description} {failure}; gave up after {tries} (last error: {err})"
                    ) from err
                delay = min(self.retry_delay * 2 ** (attempts - 1), self.max_retry_delay)
                logger.warning("%s; retry %d of %d in %.1f s", err, attempts, self.retries, delay)
                self._stopping.wait(delay)

    def _read_frames(self) -> None:
        started = time.monotonic()
        while not self._stopping.is_set():
            image = check_frame(self.source.read(), self.source.description)
            self._frames_since_open += 1
            self.last_activity = time.monotonic()

            rate = self.source.frame_rate
            if self.pace and rate and not self.source.live:
                # The first frame goes out at once, each further one a frame period later.
                due = started + (self._frames_since_open - 1) / rate
                self._stopping.wait(max(0.0, due - time.monotonic()))

            name = getattr(self.source, "frame_name", None)
            if not self.slot.put(CapturedFrame(self.frames, image, time.monotonic(), name)):
                return
            self.frames += 1
