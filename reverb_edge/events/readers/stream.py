"""Chunked reading shared by all formats: range checks, monotonic time and re-chunking."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from ..types import Recording, empty_events
from ._base import Block, FormatSpec, Header, file_error

logger = logging.getLogger(__name__)

#: Bytes read from the file per decoding step unless the caller sets ``read_size``.
DEFAULT_READ_SIZE = 64 * 1024

#: Largest coordinate that the int16 fields of EVENT_DTYPE can hold.
MAX_COORDINATE = np.iinfo(np.int16).max


def normalize_sensor_size(sensor_size, path: Path) -> tuple[int, int] | None:
    """Check a caller's ``sensor_size`` of ``(width, height)`` or ``(width, height, 2)``; return ``(width, height)``."""
    if sensor_size is None:
        return None
    values = tuple(sensor_size)
    valid = len(values) in (2, 3) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if valid:
        valid = 0 < values[0] <= MAX_COORDINATE + 1 and 0 < values[1] <= MAX_COORDINATE + 1
        valid = valid and (len(values) == 2 or values[2] == 2)
    if not valid:
        raise file_error(
            path, None, f"sensor_size={sensor_size!r} is invalid",
            f"pass (width, height) or (width, height, 2) with integers from 1 to {MAX_COORDINATE + 1}",
        )
    return int(values[0]), int(values[1])


class EventStream:
    """The events of one file, decoded chunk by chunk with bounded memory.

    Iterating yields :data:`EVENT_DTYPE` arrays of exactly ``chunk_events``
    events, except the last, which may be shorter. An empty recording yields no
    chunk. Each iteration opens the file again and decodes it from the start.
    Memory stays near ``chunk_events`` events plus what ``read_size`` bytes
    decode to, whatever the file size.

    Attributes:
        path: the file.
        format: the format name, one of :data:`reverb_edge.events.readers.FORMATS`.
        sensor_size: ``(width, height, 2)``. It comes from ``sensor_size=``, else
            from the file header, else from the largest coordinates in the file
            plus one, which costs an extra decoding pass at construction.
        metadata: header facts, such as the camera name.
        dropped_backward: events dropped so far in the current or last
            iteration because their timestamp was below an earlier one.
        unwrapped: timestamp counter overflows undone so far.
    """

    def __init__(
        self,
        path,
        spec: FormatSpec,
        *,
        chunk_events: int | None,
        read_size: int = DEFAULT_READ_SIZE,
        sensor_size=None,
        _scan_extent: bool = True,
    ):
        self.path = Path(path)
        self.format = spec.name
        self._spec = spec
        if chunk_events is not None and (not isinstance(chunk_events, (int, np.integer)) or chunk_events < 1):
            raise file_error(self.path, None, f"chunk_events={chunk_events!r} is invalid", "pass an integer of at least 1")
        if not isinstance(read_size, (int, np.integer)) or read_size < 1:
            raise file_error(self.path, None, f"read_size={read_size!r} is invalid", "pass a number of bytes of at least 1")
        self.chunk_events = None if chunk_events is None else int(chunk_events)
        self.read_size = int(read_size)
        requested = normalize_sensor_size(sensor_size, self.path)

        with open(self.path, "rb") as file:
            self._header: Header = spec.read_header(file, self.path)
        # Keys starting with "_" are reader internals, not header facts.
        self.metadata = {key: value for key, value in self._header.metadata.items() if not key.startswith("_")}
        size = requested if requested is not None else self._header.sensor_size
        self._check_range = size is not None
        if size is None and _scan_extent:
            size = self._scan_extent()
            self.metadata["sensor_size_source"] = "largest coordinates in the file plus one"
        self._size = size
        self.dropped_backward = 0
        self.unwrapped = 0

    @property
    def sensor_size(self) -> tuple[int, int, int] | None:
        """``(width, height, 2)``; None only inside :func:`read_events` before the extent is known."""
        return None if self._size is None else (self._size[0], self._size[1], 2)

    def _blocks(self) -> Iterator[Block]:
        with open(self.path, "rb") as file:
            yield from self._spec.decode(file, self.path, self._header, self.read_size)

    def _scan_extent(self) -> tuple[int, int]:
        """Decode the file once and return the largest x and y plus one; (0, 0) when it has no events."""
        width = height = 0
        for block in self._blocks():
            if len(block.events):
                width = max(width, int(block.events["x"].max()) + 1)
                height = max(height, int(block.events["y"].max()) + 1)
        return width, height

    def __iter__(self) -> Iterator[np.ndarray]:
        self.dropped_backward = 0
        self.unwrapped = 0
        return self._rechunk(self._filtered())

    def _filtered(self) -> Iterator[np.ndarray]:
        """Yield each decoded block after the range check and the monotonic-time filter."""
        running_max: int | None = None
        first_drop_offset: int | None = None
        for block in self._blocks():
            self.unwrapped += block.unwrapped
            events = block.events
            if len(events) == 0:
                continue
            if self._check_range:
                self._check_coordinates(block)
            # An event is kept when its timestamp is at least every earlier one.
            # Dropped events never raise the maximum, so the earlier maximum is
            # the maximum over kept events.
            times = events["t"]
            ceiling = np.maximum.accumulate(times)
            if running_max is not None:
                np.maximum(ceiling, running_max, out=ceiling)
            keep = times >= ceiling
            running_max = int(ceiling[-1])
            dropped = len(events) - int(np.count_nonzero(keep))
            if dropped:
                if first_drop_offset is None:
                    first_drop_offset = int(block.offsets[np.argmin(keep)])
                self.dropped_backward += dropped
                events = events[keep]
            yield events
        if self.dropped_backward:
            # NOTE: a timestamp reset, unlike an isolated glitch, drops every later
            # event up to the earlier maximum; the count below makes that visible.
            warnings.warn(
                f"{self.path}: dropped {self.dropped_backward} events whose timestamps went backward, "
                f"the first at byte offset {first_drop_offset}",
                stacklevel=3,
            )

    def _check_coordinates(self, block: Block) -> None:
        width, height = self._size
        events = block.events
        outside = (events["x"] < 0) | (events["x"] >= width) | (events["y"] < 0) | (events["y"] >= height)
        if outside.any():
            index = int(np.argmax(outside))
            x, y = int(events["x"][index]), int(events["y"][index])
            raise self._range_error(int(block.offsets[index]), x, y)

    def _range_error(self, offset: int, x: int, y: int):
        width, height = self._size
        hint = self._header.metadata.get("_sensor_size_hint", "pass sensor_size=(width, height) if the header is wrong")
        return file_error(
            self.path, offset, f"event at x={x}, y={y} is outside the {width}x{height} sensor", hint,
        )

    def _rechunk(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Regroup arrays of any length into chunks of ``chunk_events`` events; pass them on when it is None."""
        if self.chunk_events is None:
            yield from blocks
            return
        size = self.chunk_events
        pending: list[np.ndarray] = []
        pending_count = 0
        for events in blocks:
            pending.append(events)
            pending_count += len(events)
            if pending_count < size:
                continue
            joined = np.concatenate(pending)
            whole = len(joined) - len(joined) % size
            for start in range(0, whole, size):
                yield joined[start:start + size].copy()
            rest = joined[whole:].copy()
            pending = [rest]
            pending_count = len(rest)
        if pending_count:
            yield np.concatenate(pending)

    def read(self) -> Recording:
        """Decode the whole file into a :class:`Recording`."""
        chunks = list(self)
        events = np.concatenate(chunks) if chunks else empty_events()
        if self._size is None:
            if len(events):
                self._size = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
            else:
                self._size = (0, 0)
            self.metadata["sensor_size_source"] = "largest coordinates in the file plus one"
        logger.debug("read %d events from %s as %s", len(events), self.path, self.format)
        return Recording(
            events=events,
            sensor_size=self.sensor_size,
            format=self.format,
            dropped_backward=self.dropped_backward,
            unwrapped=self.unwrapped,
            metadata=dict(self.metadata),
        )
