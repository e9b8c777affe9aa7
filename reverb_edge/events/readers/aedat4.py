"""AEDAT 4.0 files (iniVation DV), decoded by the ``aedat`` package.

Format source: iniVation's "AEDAT 4.0" page (docs.inivation.com) and the
FlatBuffers schemas of dv-processing (``IOHeader``, ``PacketHeader``,
``EventPacket``). The file starts with the line ``#!AER-DAT4.0\\r\\n``, then a
size-prefixed FlatBuffer ``IOHeader`` (compression, dataTablePosition, XML
stream info), then packets: an 8-byte little-endian header (int32 stream id,
int32 size) and ``size`` bytes of one compressed, size-prefixed FlatBuffer. An
optional file data table at ``dataTablePosition`` ends the packet section.

The ``aedat`` package (a Rust decoder, imported only here) decompresses and
parses the packets. This module walks the packet framing itself first, so that
a cut-off or damaged file raises :class:`~reverb_edge.errors.InputError` with
the byte offset of the bad packet. The events of the event stream with the
lowest id are returned. Their timestamps are Unix time in µs, as DV writes
them, and need no unwrapping. Each event's offset is the offset of its packet, because
the events themselves are compressed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ...errors import MissingExtraError
from ._base import Block, FormatSpec, Header, build_events, file_error

MAGIC = b"#!AER-DAT4.0\r\n"
PACKET_HEADER = struct.Struct("<ii")
DAMAGED_HINT = "the file is cut off or damaged; copy it again from its source"


def _import_aedat():
    try:
        import aedat
    except ImportError as err:
        raise MissingExtraError(
            "reading AEDAT 4.0 files needs the aedat package; "
            'install it with: pip install "reverb-edge[dvs]"'
        ) from err
    return aedat


def _table_field(buffer: bytes, table: int, index: int, fmt: str, default):
    """Read scalar field ``index`` of the FlatBuffer table at ``table``, or ``default`` when it is absent."""
    vtable = table - struct.unpack_from("<i", buffer, table)[0]
    vtable_size = struct.unpack_from("<H", buffer, vtable)[0]
    slot = 4 + 2 * index
    if slot + 2 > vtable_size:
        return default
    field_offset = struct.unpack_from("<H", buffer, vtable + slot)[0]
    if field_offset == 0:
        return default
    return struct.unpack_from(fmt, buffer, table + field_offset)[0]


def _packet_section(file: BinaryIO, path: Path) -> tuple[int, int, int | None]:
    """Return the byte offsets where the packets start and end, and the data table position or None."""
    file.seek(0)
    if file.read(len(MAGIC)) != MAGIC:
        raise file_error(
            path, 0, "not an AEDAT 4.0 file: the first line is not '#!AER-DAT4.0' with a CRLF line end",
            "check the file type",
        )

    size_bytes = file.read(4)
    if len(size_bytes) < 4:
        raise file_error(path, len(MAGIC), "the IOHeader is missing", DAMAGED_HINT)
    (header_size,) = struct.unpack("<I", size_bytes)
    buffer = file.read(header_size)
    if len(buffer) < header_size or header_size < 8:
        raise file_error(path, len(MAGIC), f"the IOHeader of {header_size} bytes is cut off or too short", DAMAGED_HINT)

    try:
        root = struct.unpack_from("<I", buffer, 0)[0]
        table_position = _table_field(buffer, root, 1, "<q", -1)
    except struct.error as err:
        raise file_error(path, len(MAGIC) + 4, f"the IOHeader FlatBuffer is invalid ({err})", DAMAGED_HINT) from err

    start = len(MAGIC) + 4 + header_size
    file_size = os.fstat(file.fileno()).st_size
    if table_position < 0:
        return start, file_size, None
    if table_position < start:
        raise file_error(
            path, len(MAGIC) + 4, f"the IOHeader puts the file data table at {table_position}, before the packets",
            DAMAGED_HINT,
        )
    # A table beyond the end of the file means the file was cut: walk the
    # packets up to the end to name the cut packet.
    return start, min(table_position, file_size), table_position


def _packet_offsets(file: BinaryIO, path: Path, start: int, end: int) -> list[int]:
    """Walk the packet headers from ``start`` to ``end`` and return each packet's offset."""
    offsets = []
    offset = start
    while offset < end:
        file.seek(offset)
        raw = file.read(PACKET_HEADER.size)
        if len(raw) < PACKET_HEADER.size or offset + PACKET_HEADER.size > end:
            raise file_error(path, offset, "truncated last packet header", DAMAGED_HINT)
        _, size = PACKET_HEADER.unpack(raw)
        if size < 0 or offset + PACKET_HEADER.size + size > end:
            raise file_error(
                path, offset,
                f"truncated last packet: its header announces {size} bytes, {end - offset - PACKET_HEADER.size} are present",
                DAMAGED_HINT,
            )
        offsets.append(offset)
        offset += PACKET_HEADER.size + size
    return offsets


def _walk_packets(file: BinaryIO, path: Path) -> tuple[int, list[int]]:
    """Check the framing of the whole file; return where the packets start and each packet's offset."""
    start, end, table_position = _packet_section(file, path)
    offsets = _packet_offsets(file, path, start, end)
    if table_position is not None and end < table_position:
        raise file_error(
            path, end, f"the file ends here, before the file data table at byte offset {table_position}",
            DAMAGED_HINT,
        )
    return start, offsets


def read_header(file: BinaryIO, path: Path) -> Header:
    """Check the framing of an AEDAT 4.0 file and find its event stream and sensor size."""
    aedat = _import_aedat()
    start, offsets = _walk_packets(file, path)
    try:
        streams = aedat.Decoder(str(path)).id_to_stream()
    except (RuntimeError, OSError, ValueError) as err:
        raise file_error(path, len(MAGIC), f"the aedat decoder rejected the header ({err})", DAMAGED_HINT) from err
    event_ids = sorted(stream_id for stream_id, stream in streams.items() if stream.get("type") == "events")
    metadata = {"streams": {stream_id: stream.get("type") for stream_id, stream in streams.items()}, "packets": len(offsets)}
    if not event_ids:
        return Header(start, None, metadata)
    stream = streams[event_ids[0]]
    metadata["event_stream_id"] = event_ids[0]
    return Header(start, (int(stream["width"]), int(stream["height"])), metadata)


def decode(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the events of the event stream, one block per packet; ``read_size`` does not apply."""
    aedat = _import_aedat()
    _, offsets = _walk_packets(file, path)
    target = header.metadata.get("event_stream_id")
    packets = iter(aedat.Decoder(str(path)))
    for offset in offsets:
        try:
            packet = next(packets)
        except StopIteration:
            raise file_error(path, offset, "the aedat decoder ended before this packet", DAMAGED_HINT) from None
        except (RuntimeError, OSError, ValueError) as err:
            raise file_error(path, offset, f"the aedat decoder rejected this packet ({err})", DAMAGED_HINT) from err
        if packet.get("stream_id") != target or "events" not in packet:
            continue
        raw = packet["events"]
        events = build_events(raw["x"], raw["y"], raw["t"].astype(np.int64), raw["on"])
        yield Block(events, np.full(len(events), offset, dtype=np.int64))


SPEC = FormatSpec(
    name="aedat4",
    description="AEDAT 4.0 (iniVation DV): LZ4/ZSTD-compressed FlatBuffer packets, via the aedat package",
    read_header=read_header,
    decode=decode,
)
