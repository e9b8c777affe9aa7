"""Building blocks that every format reader shares.

A format reader is two functions, bundled in a :class:`FormatSpec`:

- ``read_header(file, path)`` checks the file's header and returns a
  :class:`Header`: where the event data starts, the sensor size when the
  header gives it, and metadata;
- ``decode(file, path, header, read_size)`` yields :class:`Block` objects,
  reading at most about ``read_size`` bytes at a time. Each block holds
  decoded events in file order, with the byte offset of the record that
  produced each event. Timestamp counter overflows are already undone.

Range checks, the monotonic-time filter and re-chunking are done once for all
formats, in :mod:`.stream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple

import numpy as np

from ...errors import InputError
from ..types import EVENT_DTYPE, empty_events

#: Header text read at most, so that a binary file without line breaks is not read whole.
MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Header:
    """What a reader learned from a file's header.

    ``data_offset`` is the byte offset of the first event record.
    ``sensor_size`` is ``(width, height)`` in pixels, or None when the header
    does not give it.
    """

    data_offset: int
    sensor_size: tuple[int, int] | None
    metadata: dict = field(default_factory=dict)


class Block(NamedTuple):
    """Events decoded from one stretch of a file.

    ``offsets`` (int64) is the byte offset of the record that produced each
    event. ``unwrapped`` counts the timestamp counter overflows undone while
    decoding this stretch.
    """

    events: np.ndarray
    offsets: np.ndarray
    unwrapped: int = 0


@dataclass(frozen=True)
class FormatSpec:
    """One event-file format: its name, a description, and its two reader functions."""

    name: str
    description: str
    read_header: Callable[[BinaryIO, Path], Header]
    decode: Callable[[BinaryIO, Path, Header, int], Iterator[Block]]


def file_error(path: Path, offset: int | None, problem: str, action: str) -> InputError:
    """Build an :class:`InputError` that names the file, the byte offset, the problem and the fix."""
    where = f"{path}" if offset is None else f"{path}, byte offset {offset}"
    return InputError(f"{where}: {problem}; {action}")


def empty_block() -> Block:
    """Return a block without events."""
    return Block(empty_events(), np.zeros(0, dtype=np.int64))


def build_events(x, y, t, p) -> np.ndarray:
    """Fill an :data:`EVENT_DTYPE` array from four equally long arrays of in-range values."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = t
    events["p"] = p
    return events


def read_text_header(
    file: BinaryIO, path: Path, marker: bytes, end_line: str | None = None
) -> tuple[list[str], int, bool]:
    """Read the header lines at the start of ``file`` that begin with ``marker``.

    A header line ends with LF or CRLF. It counts as header only if it is text:
    a line that contains control bytes other than tab, CR and LF is taken as the
    first event record, whose first byte happens to equal the marker. The header
    also ends after a line equal to ``end_line``, when one is given.

    Returns the lines without their line ends, the byte offset of the first
    byte after the header, and whether the file ended inside a header line.
    """
    file.seek(0)
    lines: list[str] = []
    offset = 0
    while True:
        if file.read(len(marker)) != marker:
            return lines, offset, False
        file.seek(offset)
        raw = file.readline(MAX_HEADER_BYTES)
        if not raw.endswith(b"\n"):
            if len(raw) >= MAX_HEADER_BYTES:
                raise file_error(
                    path, offset, f"header line longer than {MAX_HEADER_BYTES} bytes",
                    "check that the file is an event file and not a binary file with a text-like start",
                )
            if _is_text(raw):
                lines.append(raw.decode("latin-1").rstrip("\r"))
                return lines, offset + len(raw), True
            return lines, offset, False
        if not _is_text(raw):
            return lines, offset, False
        lines.append(raw.decode("latin-1").rstrip("\r\n"))
        offset += len(raw)
        if end_line is not None and lines[-1] == end_line:
            return lines, offset, False
        file.seek(offset)


def _is_text(raw: bytes) -> bool:
    """Return whether ``raw`` has no control bytes except tab, CR and LF."""
    return not any(byte < 0x20 and byte not in (0x09, 0x0A, 0x0D) for byte in raw) and 0x7F not in raw


def iter_records(
    file: BinaryIO, path: Path, start: int, record_size: int, read_size: int, record_name: str
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` stretches of whole fixed-size records, from ``start`` to the end of the file.

    Each stretch holds at least one record and at most about ``read_size``
    bytes. Raises :class:`InputError` when the file ends inside a record.
    """
    records_per_read = max(1, read_size // record_size)
    file.seek(start)
    offset = start
    while True:
        data = file.read(records_per_read * record_size)
        whole = len(data) - len(data) % record_size
        if whole:
            yield offset, data[:whole]
        if whole < len(data):
            cut = offset + whole
            raise file_error(
                path, cut,
                f"truncated last {record_name}: {len(data) - whole} of its {record_size} bytes are present",
                "the file was cut off; copy it again from its source, or remove the partial record",
            )
        if len(data) < records_per_read * record_size:
            return
        offset += whole


class CounterUnwrapper:
    """Undo overflows of a timestamp counter that counts modulo ``period``.

    A step back of more than half the period is taken as an overflow and adds
    one period to this and every later timestamp. A smaller step back is left
    alone, so that the monotonic-time filter can drop it as a glitch.
    """

    def __init__(self, period: int):
        self.period = period
        self.epoch = 0
        self.last_raw: int | None = None

    def __call__(self, raw: np.ndarray) -> tuple[np.ndarray, int]:
        """Return the unwrapped int64 timestamps of ``raw`` and the number of overflows found in it."""
        raw = raw.astype(np.int64)
        if len(raw) == 0:
            return raw, 0
        previous = raw[0] if self.last_raw is None else self.last_raw
        steps = np.diff(raw, prepend=previous)
        overflows = np.cumsum(steps < -(self.period // 2))
        unwrapped = raw + (self.epoch + overflows) * self.period
        count = int(overflows[-1])
        self.epoch += count
        self.last_raw = int(raw[-1])
        return unwrapped, count


def camera_size(name: str, table: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    """Return the sensor size of the first table key found in ``name`` (case-insensitive), else None.

    Keys are tried longest first, so that ``gen31`` wins over ``gen3``.
    """
    lowered = name.lower()
    for key in sorted(table, key=len, reverse=True):
        if key in lowered:
            return table[key]
    return None
