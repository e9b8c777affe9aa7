"""The one event representation used across the SDK.

An event stream is a NumPy structured array of :data:`EVENT_DTYPE`, ordered by
time, with the fields that tonic uses, looked up by name:

- ``x``, ``y``: pixel column and row (int16), 0 <= x < width, 0 <= y < height;
- ``t``: timestamp in microseconds (int64), monotonic non-decreasing;
- ``p``: polarity (int8), 1 for ON (brightness increase), 0 for OFF.

The sensor size travels beside the array as ``(width, height, polarities)``,
the order tonic uses for ``sensor_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])


def empty_events() -> np.ndarray:
    """Return an empty event array of :data:`EVENT_DTYPE`."""
    return np.zeros(0, dtype=EVENT_DTYPE)


def make_events(x, y, t, p) -> np.ndarray:
    """Build an event array from four equally long sequences (no sorting, no range checks)."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (len(x) == len(y) == len(t) == len(p)):
        raise InputError(f"x, y, t, p must have the same length, got {len(x)}, {len(y)}, {len(t)}, {len(p)}")
    events = np.empty(len(x), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


@dataclass
class Recording:
    """Events read from one file, with the sensor they came from and what the reader had to fix.

    ``sensor_size`` is (width, height, 2). ``dropped_backward`` counts events whose
    timestamp jumped backward in isolation and were dropped to keep ``t`` monotonic.
    ``unwrapped`` counts timestamp counter overflows that were undone.
    """

    events: np.ndarray
    sensor_size: tuple[int, int, int]
    format: str
    dropped_backward: int = 0
    unwrapped: int = 0
    metadata: dict = field(default_factory=dict)
