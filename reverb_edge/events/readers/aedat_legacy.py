"""AEDAT 2.0 (jAER) and AEDAT 3.1 (cAER, e.g. DVS128 Gesture) files.

Format source: iniVation's AEDAT file format pages (docs.inivation.com,
"AEDAT File Formats", sections 2.0, 3.0 and 3.1), and for the AEDAT 2.0
address layouts the event extractors of jAER (classes ``DVS128`` and
``DavisBaseCamera`` with the constants of ``DavisChip``).

Both versions start with text header lines that begin with ``#`` and end with
CRLF (LF alone is accepted too); the first line is ``#!AER-DATx.y``.

AEDAT 2.0: big-endian 8-byte records, uint32 address then uint32 timestamp in
µs. The 32-bit timestamp counter overflows are undone. How the address
encodes a pixel depends on the jAER chip class named by the ``# AEChip:``
header line:

- ``DVS128`` (the assumed layout when the header names no chip): bit 0 is the
  raw polarity, bits 7..1 the raw x and bits 14..8 the raw y. Records with bit
  15 (external sync input) or bit 31 set are not pixel events and are skipped.
  jAER mirrors x (x = 127 - raw x) and turns the raw polarity over: raw 0 is
  ON. NOTE: iniVation's AEDAT 1.0 page states the opposite (raw 1 is ON). This
  reader follows the jAER code, because jAER recorded and displayed the files.
- DAVIS cameras (``DAVIS240A/B/C``: 240x180, ``Davis346A/B/red/blue/cBSI``:
  346x260, ``Davis640``: 640x480): bit 31 set marks APS and IMU samples and
  bits 11..10 = 01 an external input event, all skipped. Otherwise bit 11 is
  the polarity (1 is ON), bits 21..12 the raw x and bits 30..22 the raw y, and
  jAER mirrors x (x = width - 1 - raw x).

jAER puts y = 0 on the bottom row. This reader mirrors y as well
(y = height - 1 - raw y), so that y = 0 is the top row, as in AEDAT 3.1 and 4.0,
the Prophesee formats and N-MNIST.

AEDAT 3.1: after the ``#!END-HEADER`` line come packets, all little-endian.
Each starts with a 28-byte header of int16 eventType, int16 eventSource, then
int32 eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber,
eventValid, followed by eventCapacity events of eventSize bytes. Only polarity
packets (type 1) are decoded; the others are skipped. A polarity event is a
uint32 (bit 0 valid, bit 1 polarity with 1 for ON, bits 16..2 y, bits 31..17 x,
0, 0 at the top left) and an int32 timestamp in µs; the full timestamp is
``eventTSOverflow << 31 | timestamp``. Events without the valid bit are skipped.

AEDAT 3.0 is rejected: its header has no end line, so where the data starts is
ambiguous, and its polarity events count y from the bottom row.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ._base import (
    Block,
    CounterUnwrapper,
    FormatSpec,
    Header,
    build_events,
    camera_size,
    file_error,
    iter_records,
    read_text_header,
)

VERSION_PATTERN = re.compile(r"#!AER-DAT(\d+\.\d+)\s*$")
CONVERT_HINT = "convert the file to AEDAT 4.0 with iniVation's DV software"

AEDAT2_RECORD = np.dtype([("address", ">u4"), ("timestamp", ">u4")])
AEDAT2_TIMESTAMP_PERIOD = 2**32

#: jAER chip classes whose AEDAT 2.0 address layout is supported, with their sensor size.
DAVIS_CHIPS = {
    "davis240a": (240, 180),
    "davis240b": (240, 180),
    "davis240c": (240, 180),
    "davis346a": (346, 260),
    "davis346b": (346, 260),
    "davis346red": (346, 260),
    "davis346blue": (346, 260),
    "davis346cbsi": (346, 260),
    "davis640": (640, 480),
}
DVS128_SIZE = (128, 128)

#: Camera names in AEDAT 3.1 ``#Source`` lines, with their sensor size.
AEDAT3_CAMERAS = {
    "dvs128": (128, 128),
    "davis240": (240, 180),
    "davis346": (346, 260),
    "davis640": (640, 480),
}

PACKET_HEADER = struct.Struct("<hhiiiiii")
POLARITY_EVENT_TYPE = 1
POLARITY_EVENT_SIZE = 8
POLARITY_RECORD = np.dtype([("data", "<u4"), ("timestamp", "<i4")])


def read_version(file: BinaryIO, path: Path) -> tuple[str, int]:
    """Return the AEDAT version string of the first header line and that line's length in bytes."""
    file.seek(0)
    first = file.readline(64)
    match = VERSION_PATTERN.match(first.decode("latin-1"))
    if not first.startswith(b"#!AER-DAT") or match is None:
        raise file_error(
            path, 0, f"not an AEDAT file: expected a first line '#!AER-DATx.y', found {first[:16]!r}",
            "check the file type; event files from iniVation cameras start with that line",
        )
    return match.group(1), len(first)


#: Format names of the AEDAT versions this package reads.
FORMAT_BY_VERSION = {"2.0": "aedat2", "3.1": "aedat3", "4.0": "aedat4"}


def format_for_version(version: str, path: Path) -> str:
    """Return the format name that reads AEDAT ``version``; raise InputError for other versions."""
    if version == "3.0":
        raise file_error(
            path, 0,
            "AEDAT 3.0 is not supported: its header has no end line, so the start of the data is "
            "ambiguous, and its polarity events count y from the bottom row",
            CONVERT_HINT,
        )
    if version not in FORMAT_BY_VERSION:
        raise file_error(
            path, 0, f"AEDAT version {version} is not supported",
            "AEDAT 2.0, 3.1 and 4.0 are read; " + CONVERT_HINT,
        )
    return FORMAT_BY_VERSION[version]


def _expect_version(file: BinaryIO, path: Path, expected: str) -> None:
    version, _ = read_version(file, path)
    if format_for_version(version, path) != FORMAT_BY_VERSION[expected]:
        raise file_error(
            path, 0, f"the file is AEDAT {version}, not AEDAT {expected}",
            "read it with format=None so that the version line selects the reader",
        )


def read_aedat2_header(file: BinaryIO, path: Path) -> Header:
    """Check an AEDAT 2.0 header and find the chip class that sets the address layout."""
    _expect_version(file, path, "2.0")
    lines, data_offset, cut_off = read_text_header(file, path, b"#")
    metadata: dict = {"header_lines": len(lines)}
    if cut_off:
        # A jAER recording stopped before the first event can end mid-header.
        metadata["header_cut_off"] = True
        warnings.warn(
            f"{path}, byte offset {data_offset}: the file ends inside a header line; "
            "read as a recording without events",
            stacklevel=2,
        )

    chip = None
    for line in lines:
        if line.startswith("# AEChip:"):
            chip = line.split(":", 1)[1].strip()
    if chip is None:
        metadata["aedat2_layout"] = "DVS128 (assumed: the header names no AEChip)"
        return Header(data_offset, DVS128_SIZE, metadata)

    metadata["camera"] = chip
    simple_name = chip.rsplit(".", 1)[-1].lower()
    if simple_name == "dvs128":
        metadata["aedat2_layout"] = "DVS128"
        return Header(data_offset, DVS128_SIZE, metadata)
    if simple_name in DAVIS_CHIPS:
        metadata["aedat2_layout"] = "DAVIS"
        return Header(data_offset, DAVIS_CHIPS[simple_name], metadata)
    supported = ", ".join(["DVS128"] + sorted(DAVIS_CHIPS))
    raise file_error(
        path, None, f"AEDAT 2.0 chip class {chip!r} has an address layout this reader does not know",
        f"supported chip classes: {supported}; " + CONVERT_HINT,
    )


def decode_aedat2(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the pixel events of an AEDAT 2.0 file."""
    width, height = header.sensor_size
    is_davis = header.metadata["aedat2_layout"] == "DAVIS"
    unwrap = CounterUnwrapper(AEDAT2_TIMESTAMP_PERIOD)
    for offset, data in iter_records(file, path, header.data_offset, AEDAT2_RECORD.itemsize, read_size, "8-byte AEDAT 2.0 record"):
        records = np.frombuffer(data, dtype=AEDAT2_RECORD)
        address = records["address"].astype(np.int64)
        times, overflows = unwrap(records["timestamp"])
        if is_davis:
            keep = ((address & 0x80000000) == 0) & ((address & 0xC00) != 0x400)
            x = (width - 1) - ((address >> 12) & 0x3FF)
            y = (height - 1) - ((address >> 22) & 0x1FF)
            polarity = (address >> 11) & 1
        else:
            keep = (address & 0x80008000) == 0
            x = (width - 1) - ((address >> 1) & 0x7F)
            y = (height - 1) - ((address >> 8) & 0x7F)
            polarity = 1 - (address & 1)
        events = build_events(x[keep], y[keep], times[keep], polarity[keep])
        offsets = offset + AEDAT2_RECORD.itemsize * np.flatnonzero(keep).astype(np.int64)
        yield Block(events, offsets, overflows)


def read_aedat3_header(file: BinaryIO, path: Path) -> Header:
    """Check an AEDAT 3.1 header and find the camera named by its ``#Source`` line."""
    _expect_version(file, path, "3.1")
    lines, data_offset, _ = read_text_header(file, path, b"#", end_line="#!END-HEADER")
    if not lines or lines[-1] != "#!END-HEADER":
        raise file_error(
            path, data_offset, "AEDAT 3.1 header has no '#!END-HEADER' line",
            "the file is cut off or damaged; copy it again from its source",
        )
    metadata: dict = {"header_lines": len(lines)}
    for line in lines:
        if line.startswith("#Format:") and line.split(":", 1)[1].strip() != "RAW":
            raise file_error(
                path, None, f"AEDAT 3.1 packet format {line.split(':', 1)[1].strip()!r} is not supported",
                "only the RAW format is read; " + CONVERT_HINT,
            )
    sources = [line.split(":", 1)[1].strip() for line in lines if re.match(r"#Source \d+:", line)]
    size = None
    if sources:
        metadata["camera"] = sources[0]
        size = camera_size(sources[0], AEDAT3_CAMERAS)
    return Header(data_offset, size, metadata)


def decode_aedat3(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the valid polarity events of an AEDAT 3.1 file, packet by packet."""
    file_size = os.fstat(file.fileno()).st_size
    offset = header.data_offset
    while offset < file_size:
        file.seek(offset)
        raw_header = file.read(PACKET_HEADER.size)
        if len(raw_header) < PACKET_HEADER.size:
            raise file_error(
                path, offset,
                f"truncated last packet header: {len(raw_header)} of its {PACKET_HEADER.size} bytes are present",
                "the file was cut off; copy it again from its source",
            )
        event_type, _, event_size, ts_offset, ts_overflow, capacity, number, _ = PACKET_HEADER.unpack(raw_header)
        if event_size <= 0 or capacity < 0 or not 0 <= number <= capacity or ts_overflow < 0:
            raise file_error(
                path, offset,
                f"invalid packet header (eventSize={event_size}, eventCapacity={capacity}, "
                f"eventNumber={number}, eventTSOverflow={ts_overflow})",
                "the file is damaged or is not AEDAT 3.1",
            )
        payload = offset + PACKET_HEADER.size
        end = payload + capacity * event_size
        if end > file_size:
            raise file_error(
                path, offset,
                f"truncated last packet: its header announces {capacity * event_size} bytes of events, "
                f"{file_size - payload} are present",
                "the file was cut off; copy it again from its source",
            )
        if event_type == POLARITY_EVENT_TYPE:
            if event_size != POLARITY_EVENT_SIZE or ts_offset != 4:
                raise file_error(
                    path, offset,
                    f"polarity packet with eventSize={event_size} and eventTSOffset={ts_offset}, expected 8 and 4",
                    "the file is damaged or is not AEDAT 3.1",
                )
            yield from _decode_polarity_packet(file, payload, number, ts_overflow, read_size)
        offset = end


def _decode_polarity_packet(file: BinaryIO, start: int, count: int, ts_overflow: int, read_size: int) -> Iterator[Block]:
    per_read = max(1, read_size // POLARITY_EVENT_SIZE)
    file.seek(start)
    for first in range(0, count, per_read):
        records = np.frombuffer(file.read(min(per_read, count - first) * POLARITY_EVENT_SIZE), dtype=POLARITY_RECORD)
        data = records["data"].astype(np.int64)
        keep = (data & 1) == 1
        times = (np.int64(ts_overflow) << 31) | records["timestamp"].astype(np.int64)
        events = build_events((data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, times, (data >> 1) & 1)
        offsets = start + POLARITY_EVENT_SIZE * (first + np.flatnonzero(keep).astype(np.int64))
        yield Block(events[keep], offsets)


AEDAT2_SPEC = FormatSpec(
    name="aedat2",
    description="AEDAT 2.0 (jAER): '#' header, big-endian 8-byte address/timestamp records",
    read_header=read_aedat2_header,
    decode=decode_aedat2,
)

AEDAT3_SPEC = FormatSpec(
    name="aedat3",
    description="AEDAT 3.1 (cAER): '#' header, packets of little-endian polarity events",
    read_header=read_aedat3_header,
    decode=decode_aedat3,
)
