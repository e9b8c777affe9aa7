"""Event sources for streaming: recorded files and live cameras behind one iterator interface.

``open_source(spec)`` returns an :class:`EventSource` whose ``sensor_size``
is known up front and which yields :data:`EVENT_DTYPE` chunks in time order:

- a file path: any format that :func:`~reverb_edge.events.readers.iter_events` reads;
- ``inivation`` or ``inivation:SERIAL``: a live iniVation camera through the
  ``dv-processing`` package;
- ``prophesee`` or ``prophesee:SERIAL``: a live Prophesee camera through the
  Metavision SDK's ``metavision_core`` package.

The camera packages are imported only when such a source is opened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError, MissingExtraError
from .readers import iter_events
from .types import EVENT_DTYPE

logger = logging.getLogger(__name__)

LIVE_KINDS = ("inivation", "prophesee")


@dataclass
class EventSource:
    """A stream of event chunks with its sensor size (width, height, 2) and a description."""

    sensor_size: tuple[int, int, int]
    description: str
    chunks: Callable[[], Iterator[np.ndarray]]
    live: bool = False

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.chunks()


def _inivation(serial: str | None) -> EventSource:
    try:
        import dv_processing as dv
    except ImportError as err:
        raise MissingExtraError(
            "live iniVation cameras need the dv-processing package: pip install dv-processing"
        ) from err
    # NOTE: written against dv-processing's documented CameraCapture API; not run here without a camera.
    camera = dv.io.CameraCapture(serial) if serial else dv.io.CameraCapture()
    resolution = camera.getEventResolution()
    width, height = int(resolution[0]), int(resolution[1])

    def chunks() -> Iterator[np.ndarray]:
        while camera.isRunning():
            batch = camera.getNextEventBatch()
            if batch is None or len(batch) == 0:
                continue
            packet = batch.numpy()
            events = np.empty(len(packet), dtype=EVENT_DTYPE)
            events["x"], events["y"] = packet["x"], packet["y"]
            events["t"], events["p"] = packet["timestamp"], packet["polarity"]
            yield events

    return EventSource((width, height, 2), f"iniVation camera {camera.getCameraName()}", chunks, live=True)


def _prophesee(serial: str | None) -> EventSource:
    try:
        from metavision_core.event_io import EventsIterator
    except ImportError as err:
        raise MissingExtraError(
            "live Prophesee cameras need the Metavision SDK's Python package metavision_core; "
            "install the Metavision SDK for your platform"
        ) from err
    # NOTE: written against the Metavision SDK's documented EventsIterator API; not run here without a camera.
    iterator = EventsIterator(input_path=serial or "", delta_t=10_000)
    height, width = iterator.get_size()

    def chunks() -> Iterator[np.ndarray]:
        for packet in iterator:
            if len(packet) == 0:
                continue
            events = np.empty(len(packet), dtype=EVENT_DTYPE)
            events["x"], events["y"], events["t"], events["p"] = packet["x"], packet["y"], packet["t"], packet["p"]
            yield events

    return EventSource((int(width), int(height), 2), "Prophesee camera", chunks, live=True)


def open_source(spec: str, chunk_events: int = 4096, format: str | None = None, sensor_size=None) -> EventSource:
    """Open a recorded file or a live camera named by ``spec`` (see the module docstring).

    ``format`` and ``sensor_size`` (width, height) override the values in a file's header.
    """
    kind, _, serial = spec.partition(":")
    if kind in LIVE_KINDS and not Path(spec).exists():
        return _inivation(serial or None) if kind == "inivation" else _prophesee(serial or None)

    path = Path(spec)
    if not spec or not path.exists():
        raise InputError(
            f"event source not found: {spec!r} is neither a file nor a camera kind ({', '.join(LIVE_KINDS)})"
        )
    if not path.is_file():
        raise InputError(f"event source {spec!r} is a folder; pass one recording file")
    stream = iter_events(path, format=format, chunk_events=chunk_events, sensor_size=sensor_size)
    return EventSource(tuple(stream.sensor_size), f"{path} ({stream.format})", lambda: iter(stream))
