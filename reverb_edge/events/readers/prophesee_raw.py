"""Prophesee RAW files in the EVT 2.0 and EVT 3.0 encodings.

Format source: Prophesee's Metavision documentation, pages "RAW File Format",
"EVT 2.0 Format" and "EVT 3.0 Format" (docs.prophesee.ai). A RAW file starts
with ``%`` header lines (see :mod:`.prophesee_header`), then little-endian
words whose 4 most significant bits give the word type.

EVT 2.0, 32-bit words:

- CD_OFF (0x0) and CD_ON (0x1): one event; bits 27..22 are the 6 low bits of
  the timestamp, bits 21..11 x and bits 10..0 y;
- EVT_TIME_HIGH (0x8): bits 27..0 are bits 33..6 of the timestamp;
- EXT_TRIGGER (0xA), OTHERS (0xE) and CONTINUED (0xF) carry no CD event and are
  skipped. Any other type is reserved and raises
  :class:`~reverb_edge.errors.InputError`.

EVT 3.0, 16-bit words, decoded with a state (current y, base x, polarity, time):

- EVT_ADDR_Y (0x0): y in bits 10..0;
- EVT_ADDR_X (0x2): one event at x = bits 10..0, polarity bit 11;
- VECT_BASE_X (0x3): base x in bits 10..0, polarity bit 11 for the vectors;
- VECT_12 (0x4) / VECT_8 (0x5): one event at base x + i for each set bit i of
  the 12 / 8 low bits, then base x grows by 12 / 8;
- EVT_TIME_LOW (0x6) and EVT_TIME_HIGH (0x8): the low and high 12 bits of a
  24-bit timestamp in µs;
- CONTINUED_4 (0x7), EXT_TRIGGER (0xA), OTHERS (0xE), CONTINUED_12 (0xF) are
  skipped; other types are reserved and raise InputError.

Timestamps: an event's time is the time base when its word arrives:
``TIME_HIGH << 12 | TIME_LOW`` for EVT 3.0 and ``TIME_HIGH << 6 | low bits``
for EVT 2.0. A TIME_HIGH that falls back by more than half its range is a
counter overflow and adds 2**24 µs (EVT 3.0) or 2**34 µs (EVT 2.0) to all later
times. A TIME_HIGH with a new value resets TIME_LOW to 0, so that events between
it and the next TIME_LOW do not get the stale low bits of the previous period.
Each TIME_LOW is taken as it comes. A TIME_LOW that steps back a few µs
therefore moves the time base back, and the monotonic-time filter drops the
events stamped before the time catches up. NOTE: the Gen4.1 sample file has
about 10 TIME_LOW words that arrive 11-12 µs out of order right after a
repeated TIME_HIGH, with no events between them, so none is dropped there.
Events before the first TIME_HIGH (and, for EVT 3.0, before the first
EVT_ADDR_Y) have no complete time or address and are skipped.

The sensor size comes from a ``% geometry`` or ``% format`` header line, else
from the camera plugin name, else from the largest coordinates plus one.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from numba import njit

from ...kernels.config import NJIT_OPTIONS
from ..types import EVENT_DTYPE
from ._base import Block, CounterUnwrapper, FormatSpec, Header, build_events, file_error, iter_records
from .prophesee_header import header_sensor_size, raw_encoding, read_percent_header

EVT2_WORD_TYPES_WITHOUT_EVENTS = (0x8, 0xA, 0xE, 0xF)
EVT2_TIME_HIGH_PERIOD = 2**28
#: Set bits of every 12-bit value, to bound the events that vector words produce.
POPCOUNT_12 = np.array([bin(value).count("1") for value in range(4096)], dtype=np.int64)


def _read_header(file: BinaryIO, path: Path, expected: str) -> Header:
    fields, offset, cut_off = read_percent_header(file, path)
    if cut_off:
        raise file_error(path, offset, "the file ends inside its '%' header", "the file was cut off; copy it again from its source")
    encoding = raw_encoding(fields)
    if encoding is None:
        # Only an explicit format= reaches this reader for such a file: detection
        # rejects a RAW header without an encoding.
        encoding = expected
    if encoding not in ("evt2", "evt3"):
        raise file_error(
            path, None, f"RAW encoding {encoding!r} is not supported",
            "only EVT 2.0 and EVT 3.0 are read; convert the file with Metavision's tools",
        )
    if encoding != expected:
        raise file_error(
            path, None, f"the header declares {encoding}, not {expected}",
            "read it with format=None so that the header selects the decoder",
        )
    size, source = header_sensor_size(fields)
    metadata = {key: fields[key] for key in ("date", "plugin_name", "serial_number", "integrator_name") if key in fields}
    if source is not None:
        metadata["sensor_size_source"] = f"header line '% {source}'"
    return Header(offset, size, metadata)


def read_evt2_header(file: BinaryIO, path: Path) -> Header:
    """Check that the ``%`` header declares EVT 2.0."""
    return _read_header(file, path, "evt2")


def read_evt3_header(file: BinaryIO, path: Path) -> Header:
    """Check that the ``%`` header declares EVT 3.0."""
    return _read_header(file, path, "evt3")


def _reserved_word_error(path: Path, offset: int, word: int, width: int, encoding: str):
    return file_error(
        path, offset,
        f"word 0x{word:0{width}x} has type 0x{word >> (4 * width - 4):x}, which {encoding} does not define",
        "the file is damaged or uses another encoding than its header declares",
    )


def decode_evt2(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the CD events of an EVT 2.0 word stream."""
    unwrap_high = CounterUnwrapper(EVT2_TIME_HIGH_PERIOD)
    time_high: int | None = None
    for offset, data in iter_records(file, path, header.data_offset, 4, read_size, "32-bit EVT 2.0 word"):
        words = np.frombuffer(data, dtype="<u4").astype(np.int64)
        kinds = words >> 28
        reserved = ~(np.isin(kinds, EVT2_WORD_TYPES_WITHOUT_EVENTS) | (kinds <= 1))
        if reserved.any():
            index = int(np.argmax(reserved))
            raise _reserved_word_error(path, offset + 4 * index, int(words[index]), 8, "EVT 2.0")

        # Forward-fill the latest TIME_HIGH over the words that follow it.
        is_high = kinds == 0x8
        highs, overflows = unwrap_high(words[is_high] & 0x0FFFFFFF)
        positions = np.flatnonzero(is_high)
        latest = np.maximum.accumulate(np.where(is_high, np.arange(len(words)), -1))
        current_high = np.full(len(words), -1 if time_high is None else time_high, dtype=np.int64)
        has_high = latest >= 0
        lookup = np.zeros(len(words), dtype=np.int64)
        lookup[positions] = highs
        current_high[has_high] = lookup[latest[has_high]]
        if len(highs):
            time_high = int(highs[-1])

        is_event = (kinds <= 1) & (current_high >= 0)
        cd = words[is_event]
        times = (current_high[is_event] << 6) | ((cd >> 22) & 0x3F)
        events = build_events((cd >> 11) & 0x7FF, cd & 0x7FF, times, kinds[is_event])
        offsets = offset + 4 * np.flatnonzero(is_event).astype(np.int64)
        yield Block(events, offsets, overflows)


@njit(**NJIT_OPTIONS)
def _decode_evt3_kernel(words, state, x_out, y_out, t_out, p_out, index_out):
    """Decode EVT 3.0 words into the output arrays; return the event count.

    ``state`` (int64) carries the decoder between calls: [0] y or -1, [1] base
    x, [2] vector polarity, [3] TIME_HIGH or -1, [4] TIME_LOW, [5] overflow
    count, [6] index of a reserved word or -1. The outputs must hold every
    event the words can produce.
    """
    y = state[0]
    base_x = state[1]
    vector_polarity = state[2]
    high = state[3]
    low = state[4]
    overflows = state[5]
    count = 0
    for index in range(words.shape[0]):
        word = np.int64(words[index])
        kind = word >> 12
        payload = word & 0xFFF
        if kind == 0x0:
            y = payload & 0x7FF
        elif kind == 0x2:
            if high >= 0 and y >= 0:
                x_out[count] = payload & 0x7FF
                y_out[count] = y
                t_out[count] = (overflows << 24) + (high << 12) + low
                p_out[count] = payload >> 11
                index_out[count] = index
                count += 1
        elif kind == 0x3:
            base_x = payload & 0x7FF
            vector_polarity = payload >> 11
        elif kind == 0x4 or kind == 0x5:
            width = 12 if kind == 0x4 else 8
            if high >= 0 and y >= 0:
                time = (overflows << 24) + (high << 12) + low
                for bit in range(width):
                    if (payload >> bit) & 1:
                        x_out[count] = base_x + bit
                        y_out[count] = y
                        t_out[count] = time
                        p_out[count] = vector_polarity
                        index_out[count] = index
                        count += 1
            base_x += width
        elif kind == 0x6:
            low = payload
        elif kind == 0x8:
            if high >= 0 and high - payload > 2048:
                overflows += 1
            if payload != high:
                low = 0
            high = payload
        elif kind == 0x7 or kind == 0xA or kind == 0xE or kind == 0xF:
            pass
        else:
            state[6] = index
            break
    state[0] = y
    state[1] = base_x
    state[2] = vector_polarity
    state[3] = high
    state[4] = low
    state[5] = overflows
    return count


def new_evt3_state() -> np.ndarray:
    """Return the decoder state before the first word: no y, no time base yet."""
    return np.array([-1, 0, 0, -1, 0, 0, -1], dtype=np.int64)


def evt3_events_per_word(words: np.ndarray) -> np.ndarray:
    """Return how many events each word can produce at most: one per EVT_ADDR_X, one per set vector bit."""
    kinds = words >> 12
    payload = (words & 0xFFF).astype(np.int64)
    counts = np.zeros(len(words), dtype=np.int64)
    counts[kinds == 0x2] = 1
    counts[kinds == 0x4] = POPCOUNT_12[payload[kinds == 0x4]]
    counts[kinds == 0x5] = POPCOUNT_12[payload[kinds == 0x5] & 0xFF]
    return counts


def decode_evt3_words(words: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one stretch of EVT 3.0 words, updating ``state``; return the events and each one's word index.

    Stops at a reserved word type and stores its index in ``state[6]``.
    """
    words = np.ascontiguousarray(words, dtype=np.uint16)
    capacity = int(evt3_events_per_word(words).sum())
    x = np.empty(capacity, dtype=np.int16)
    y = np.empty(capacity, dtype=np.int16)
    t = np.empty(capacity, dtype=np.int64)
    p = np.empty(capacity, dtype=np.int8)
    index = np.empty(capacity, dtype=np.int64)
    count = _decode_evt3_kernel(words, state, x, y, t, p, index)
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["x"] = x[:count]
    events["y"] = y[:count]
    events["t"] = t[:count]
    events["p"] = p[:count]
    return events, index[:count]


def decode_evt3(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the CD events of an EVT 3.0 word stream."""
    state = new_evt3_state()
    # One word can produce up to 12 events, so each read is decoded in pieces of
    # at most about one event per word read, to keep memory bounded by read_size.
    max_piece_events = max(12, read_size // 2)
    for offset, data in iter_records(file, path, header.data_offset, 2, read_size, "16-bit EVT 3.0 word"):
        words = np.frombuffer(data, dtype="<u2")
        produced = np.cumsum(evt3_events_per_word(words))
        cuts = np.searchsorted(produced, np.arange(max_piece_events, produced[-1], max_piece_events), side="right")
        for first, stop in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(words)]))):
            piece_offset = offset + 2 * int(first)
            overflows_before = int(state[5])
            events, word_index = decode_evt3_words(words[first:stop], state)
            if state[6] >= 0:
                bad = int(state[6])
                raise _reserved_word_error(path, piece_offset + 2 * bad, int(words[first + bad]), 4, "EVT 3.0")
            yield Block(events, piece_offset + 2 * word_index, int(state[5]) - overflows_before)


EVT2_SPEC = FormatSpec(
    name="evt2",
    description="Prophesee RAW EVT 2.0: '%' header, 32-bit little-endian words",
    read_header=read_evt2_header,
    decode=decode_evt2,
)

EVT3_SPEC = FormatSpec(
    name="evt3",
    description="Prophesee RAW EVT 3.0: '%' header, 16-bit little-endian vectorized words",
    read_header=read_evt3_header,
    decode=decode_evt3,
)
