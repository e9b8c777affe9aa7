"""Byte builders for crafted event files, and plain-Python reference decoders.

The builders write each format from its specification, field by field, so the
tests can state exact expected events. The reference decoders are deliberately
slow loops, one event at a time, to check the vectorized and Numba readers.
This module contains no tests.
"""

from __future__ import annotations

import struct

import numpy as np

from reverb_edge.events import make_events

CRLF = b"\r\n"


# ---------------------------------------------------------------- N-MNIST .bin


def nmnist_record(x: int, y: int, p: int, t: int) -> bytes:
    """Return one 5-byte ATIS record: x, y, then polarity bit 23 and a 23-bit timestamp, big-endian."""
    word = (p << 23) | (t & 0x7FFFFF)
    return bytes([x, y]) + word.to_bytes(3, "big")


def nmnist_bytes(events) -> bytes:
    """Return a ``.bin`` file of ``(x, y, p, t)`` records."""
    return b"".join(nmnist_record(*event) for event in events)


# ---------------------------------------------------------------- AEDAT 2.0


def aedat2_header(chip: str | None = "ch.unizh.ini.jaer.chip.retina.DVS128", line_end: bytes = CRLF) -> bytes:
    """Return an AEDAT 2.0 header in jAER's style, naming ``chip`` unless it is None."""
    lines = [
        b"#!AER-DAT2.0",
        b"# This is a raw AE data file - do not edit",
        b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        b"# Timestamps tick is 1 us",
    ]
    if chip is not None:
        lines.append(b"# AEChip: " + chip.encode())
    return b"".join(line + line_end for line in lines)


def dvs128_address(x: int, y: int, p: int) -> int:
    """Return the jAER DVS128 raw address of the pixel at image column x, row y (0 at the top)."""
    raw_x = 127 - x
    raw_y = 127 - y
    raw_polarity = 1 - p
    return (raw_y << 8) | (raw_x << 1) | raw_polarity


def davis_address(x: int, y: int, p: int, width: int, height: int) -> int:
    """Return the jAER DAVIS raw DVS address of the pixel at image column x, row y (0 at the top)."""
    return ((height - 1 - y) << 22) | ((width - 1 - x) << 12) | (p << 11)


def aedat2_bytes(addresses, timestamps, header: bytes | None = None) -> bytes:
    """Return an AEDAT 2.0 file of big-endian (uint32 address, uint32 timestamp) records."""
    header = aedat2_header() if header is None else header
    body = b"".join(struct.pack(">II", a & 0xFFFFFFFF, t & 0xFFFFFFFF) for a, t in zip(addresses, timestamps))
    return header + body


# ---------------------------------------------------------------- AEDAT 3.1


def aedat3_header(source: str = "DVS128", version: bytes = b"3.1") -> bytes:
    """Return an AEDAT 3.x header with one source."""
    lines = [
        b"#!AER-DAT" + version,
        b"#Format: RAW",
        b"#Source 1: " + source.encode(),
        b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)",
        b"#!END-HEADER",
    ]
    return b"".join(line + CRLF for line in lines)


def aedat3_polarity_packet(events, ts_overflow: int = 0, invalid=()) -> bytes:
    """Return a polarity packet of ``(x, y, p, t)`` events; indices in ``invalid`` lack the valid bit."""
    body = b""
    for index, (x, y, p, t) in enumerate(events):
        valid = 0 if index in invalid else 1
        data = (x << 17) | (y << 2) | (p << 1) | valid
        body += struct.pack("<Ii", data, t)
    header = struct.pack("<hhiiiiii", 1, 1, 8, 4, ts_overflow, len(events), len(events), len(events) - len(invalid))
    return header + body


def aedat3_other_packet(event_type: int = 0, count: int = 2, size: int = 8) -> bytes:
    """Return a packet of another event type, filled with 0xAB bytes."""
    header = struct.pack("<hhiiiiii", event_type, 1, size, 4, 0, count, count, count)
    return header + b"\xab" * (count * size)


# ---------------------------------------------------------------- Prophesee RAW


def raw_header(encoding: str, extra: tuple[str, ...] = ()) -> bytes:
    """Return a Prophesee RAW '%' header declaring ``encoding`` ('2.0' or '3.0')."""
    lines = ["% Date 2024-01-01 00:00:00", f"% evt {encoding}", *extra]
    return "".join(line + "\n" for line in lines).encode()


def evt2_cd(x: int, y: int, p: int, t: int) -> int:
    """Return an EVT 2.0 CD word; only the low 6 bits of ``t`` are stored."""
    return (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y


def evt2_time_high(t: int) -> int:
    """Return an EVT 2.0 TIME_HIGH word carrying bits 33..6 of ``t``."""
    return (0x8 << 28) | ((t >> 6) & 0x0FFFFFFF)


def evt2_bytes(words, extra: tuple[str, ...] = ()) -> bytes:
    """Return an EVT 2.0 RAW file of 32-bit little-endian words."""
    return raw_header("2.0", extra) + np.asarray(words, dtype="<u4").tobytes()


def evt3_bytes(words, extra: tuple[str, ...] = ()) -> bytes:
    """Return an EVT 3.0 RAW file of 16-bit little-endian words."""
    return raw_header("3.0", extra) + np.asarray(words, dtype="<u2").tobytes()


def evt3_addr_y(y: int) -> int:
    return y


def evt3_addr_x(x: int, p: int) -> int:
    return (0x2 << 12) | (p << 11) | x


def evt3_vect_base_x(x: int, p: int) -> int:
    return (0x3 << 12) | (p << 11) | x


def evt3_vect_12(mask: int) -> int:
    return (0x4 << 12) | mask


def evt3_vect_8(mask: int) -> int:
    return (0x5 << 12) | mask


def evt3_time_low(t: int) -> int:
    return (0x6 << 12) | (t & 0xFFF)


def evt3_time_high(t: int) -> int:
    """Return the TIME_HIGH word for bits 23..12 of ``t``."""
    return (0x8 << 12) | ((t >> 12) & 0xFFF)


def evt3_time(t: int) -> list[int]:
    """Return TIME_HIGH then TIME_LOW words that set the time base to ``t`` (mod 2**24)."""
    return [evt3_time_high(t), evt3_time_low(t)]


# ---------------------------------------------------------------- Prophesee DAT


def dat_bytes(events, width_height: tuple[int, int] | None = None, event_type: int = 0, size: int = 8) -> bytes:
    """Return a DAT v2 file of ``(x, y, p, t)`` CD events."""
    header = b"% Data file containing Event2D events.\n% Version 2\n% Date 2017-10-31 11:29:21\n"
    if width_height is not None:
        header += f"% Width {width_height[0]}\n% Height {width_height[1]}\n".encode()
    body = b"".join(struct.pack("<II", t, (p << 28) | (y << 14) | x) for x, y, p, t in events)
    return header + bytes([event_type, size]) + body


# ---------------------------------------------------------------- reference decoders


def keep_monotonic(events: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, int]:
    """Drop each ``(x, y, t, p)`` event whose t is below an earlier kept one; return the events and the drop count."""
    kept = []
    latest = None
    for event in events:
        if latest is not None and event[2] < latest:
            continue
        latest = event[2]
        kept.append(event)
    return as_events(kept), len(events) - len(kept)


def as_events(events: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Return ``(x, y, t, p)`` tuples as an EVENT_DTYPE array."""
    if not events:
        return make_events([], [], [], [])
    x, y, t, p = zip(*events)
    return make_events(x, y, t, p)


def reference_evt3(words) -> tuple[np.ndarray, int]:
    """Decode EVT 3.0 words one at a time, following the rules in the reader's docstring."""
    events = []
    y = None
    base_x = 0
    vector_polarity = 0
    high = None
    low = 0
    overflows = 0
    for word in words:
        kind, payload = word >> 12, word & 0xFFF
        time = None if high is None else overflows * 2**24 + high * 4096 + low
        if kind == 0x0:
            y = payload & 0x7FF
        elif kind == 0x2 and time is not None and y is not None:
            events.append((payload & 0x7FF, y, time, payload >> 11))
        elif kind == 0x3:
            base_x, vector_polarity = payload & 0x7FF, payload >> 11
        elif kind in (0x4, 0x5):
            width = 12 if kind == 0x4 else 8
            if time is not None and y is not None:
                events.extend((base_x + bit, y, time, vector_polarity) for bit in range(width) if payload >> bit & 1)
            base_x += width
        elif kind == 0x6:
            low = payload
        elif kind == 0x8:
            if high is not None and high - payload > 2048:
                overflows += 1
            if payload != high:
                low = 0
            high = payload
    return keep_monotonic(events)


def reference_evt2(words) -> tuple[np.ndarray, int]:
    """Decode EVT 2.0 words one at a time."""
    events = []
    high = None
    overflows = 0
    for word in words:
        kind = word >> 28
        if kind == 0x8:
            value = word & 0x0FFFFFFF
            if high is not None and (high % 2**28) - value > 2**27:
                overflows += 1
            high = overflows * 2**28 + value
        elif kind <= 1 and high is not None:
            events.append(((word >> 11) & 0x7FF, word & 0x7FF, high * 64 + ((word >> 22) & 0x3F), kind))
    return keep_monotonic(events)


def reference_nmnist(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an ATIS ``.bin`` file one record at a time, with y = 240 as an overflow marker."""
    events = []
    markers = 0
    for start in range(0, len(data), 5):
        x, y, b2, b3, b4 = data[start:start + 5]
        if y == 240:
            markers += 1
            continue
        t = ((b2 & 0x7F) << 16 | b3 << 8 | b4) + markers * 2**13
        events.append((x, y, t, b2 >> 7))
    return keep_monotonic(events)
