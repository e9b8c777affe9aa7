"""N-MNIST and N-Caltech101 ``.bin`` files, recorded with an ATIS sensor.

Format source: G. Orchard et al., "Converting Static Image Datasets to Spiking
Neuromorphic Datasets Using Saccades", Frontiers in Neuroscience 9:437 (2015),
and the MATLAB reader ``Read_Ndataset.m`` published with the data sets. The
file has no header. Each event is a 5-byte record:

- byte 0: x; byte 1: y (0, 0 is the top-left pixel);
- byte 2, bit 7: polarity, 1 for ON;
- bits 22..0 of the big-endian 24-bit number in bytes 2-4: timestamp in µs
  from the start of the recording.

A record with y = 240 is not an event but a timestamp overflow marker, as in
Garrick Orchard's Python reader (``eventvision.py`` in his ``event-Python``
repository, reused by tonic 1.7.0): it is skipped, and every later timestamp
grows by 2**13 µs. Each marker counts as one unwrapped overflow.
NOTE: none of the 500 N-MNIST files checked here contains a marker, so that
increment follows the published reader and was never checked on a recording.

The sensor size defaults to N-MNIST's 34x34. Other data sets in this format,
such as N-Caltech101, need ``sensor_size=(width, height)``; without it their
events fall outside 34x34 and raise :class:`~reverb_edge.errors.InputError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ._base import Block, FormatSpec, Header, build_events, iter_records

RECORD_SIZE = 5
OVERFLOW_MARKER_Y = 240
OVERFLOW_STEP_US = 2**13
NMNIST_SENSOR_SIZE = (34, 34)


def read_header(file: BinaryIO, path: Path) -> Header:
    """Return the fixed header facts: data from byte 0, a 34x34 sensor."""
    return Header(
        data_offset=0,
        sensor_size=NMNIST_SENSOR_SIZE,
        metadata={
            "_sensor_size_hint": "the default 34x34 is N-MNIST's sensor; for other ATIS .bin data sets "
            "such as N-Caltech101 pass sensor_size=(width, height)",
        },
    )


def decode(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the events of an ATIS ``.bin`` file, skipping overflow markers."""
    overflows = 0
    for offset, data in iter_records(file, path, header.data_offset, RECORD_SIZE, read_size, "5-byte event record"):
        records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_SIZE)
        x = records[:, 0]
        y = records[:, 1]
        polarity = records[:, 2] >> 7
        counter = (
            ((records[:, 2].astype(np.int64) & 0x7F) << 16)
            | (records[:, 3].astype(np.int64) << 8)
            | records[:, 4].astype(np.int64)
        )
        is_marker = y == OVERFLOW_MARKER_Y
        markers_so_far = overflows + np.cumsum(is_marker)
        times = counter + markers_so_far * OVERFLOW_STEP_US
        found = int(np.count_nonzero(is_marker))
        overflows += found

        keep = ~is_marker
        events = build_events(x[keep], y[keep], times[keep], polarity[keep])
        offsets = offset + RECORD_SIZE * np.flatnonzero(keep).astype(np.int64)
        yield Block(events, offsets, found)


SPEC = FormatSpec(
    name="nmnist",
    description="N-MNIST / N-Caltech101 ATIS .bin, 5-byte records",
    read_header=read_header,
    decode=decode,
)
