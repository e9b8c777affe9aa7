"""Prophesee DAT files (version 2), as in the N-CARS data set.

Format source: Prophesee's Metavision documentation, page "DAT File Format"
(docs.prophesee.ai). After the ``%`` header lines (for example
``% Data file containing Event2D events``, ``% Version 2``, optional
``% Width`` and ``% Height``) come two bytes: the event type and the event
size. Types 0 (Event2d) and 12 (EventCd) are contrast-detection events of 8
bytes, the only kind read here. Each event is little-endian: a uint32
timestamp in µs, then a uint32 with x in bits 13..0, y in bits 27..14 and the
polarity in bits 31..28 (1 for ON, 0 for OFF; other values raise
:class:`~reverb_edge.errors.InputError`). The 32-bit timestamp counter
overflows are undone.

The sensor size comes from the ``% Width`` and ``% Height`` lines, else from
the largest coordinates in the file plus one; N-CARS files give no size,
because each is a crop of a 304x240 ATIS recording. A header with nothing
after it is an empty recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ._base import Block, CounterUnwrapper, FormatSpec, Header, build_events, file_error, iter_records
from .prophesee_header import read_percent_header

CD_EVENT_TYPES = {0: "Event2d", 12: "EventCd"}
EVENT_SIZE = 8
RECORD = np.dtype([("timestamp", "<u4"), ("data", "<u4")])


def read_header(file: BinaryIO, path: Path) -> Header:
    """Check the ``%`` header and the type and size bytes of a DAT file."""
    fields, offset, cut_off = read_percent_header(file, path)
    if cut_off:
        raise file_error(path, offset, "the file ends inside its '%' header", "the file was cut off; copy it again from its source")
    version = fields.get("version")
    if version is not None and version != "2":
        raise file_error(path, None, f"DAT version {version!r} is not supported", "only version 2 is read")
    file.seek(offset)
    type_and_size = file.read(2)
    metadata = {key: value for key, value in fields.items() if key in ("date", "version", "data")}
    size = None
    if fields.get("width", "").isdigit() and fields.get("height", "").isdigit():
        size = (int(fields["width"]), int(fields["height"]))
    if len(type_and_size) == 0:
        return Header(offset, size, metadata)
    if len(type_and_size) < 2:
        raise file_error(path, offset, "the event type and size bytes are cut off", "the file was cut off; copy it again from its source")
    event_type, event_size = type_and_size
    if event_type not in CD_EVENT_TYPES or event_size != EVENT_SIZE:
        raise file_error(
            path, offset,
            f"event type {event_type} of size {event_size} is not supported",
            "only contrast-detection events are read: type 0 (Event2d) or 12 (EventCd), size 8",
        )
    metadata["event_type"] = CD_EVENT_TYPES[event_type]
    return Header(offset + 2, size, metadata)


def decode(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the contrast-detection events of a DAT file."""
    if "event_type" not in header.metadata:
        return
    unwrap = CounterUnwrapper(2**32)
    for offset, data in iter_records(file, path, header.data_offset, EVENT_SIZE, read_size, "8-byte DAT event"):
        records = np.frombuffer(data, dtype=RECORD)
        bits = records["data"].astype(np.int64)
        polarity = bits >> 28
        invalid = polarity > 1
        if invalid.any():
            index = int(np.argmax(invalid))
            raise file_error(
                path, offset + EVENT_SIZE * index,
                f"polarity {int(polarity[index])} is invalid, expected 0 or 1",
                "the file is damaged or holds another event type",
            )
        times, overflows = unwrap(records["timestamp"])
        events = build_events(bits & 0x3FFF, (bits >> 14) & 0x3FFF, times, polarity)
        offsets = offset + EVENT_SIZE * np.arange(len(events), dtype=np.int64)
        yield Block(events, offsets, overflows)


SPEC = FormatSpec(
    name="dat",
    description="Prophesee DAT v2: '%' header, type/size bytes, 8-byte CD events",
    read_header=read_header,
    decode=decode,
)
