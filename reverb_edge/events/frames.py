"""Accumulate event streams into frame tensors (T, P, H, W), the input of a spiking network.

The slicing options follow ``tonic.functional.to_frame_numpy`` (tonic 1.7), with
one rule changed: every event at or after the start time lands in a bin,
including the last one, unless ``include_incomplete=False`` drops the tail on
purpose. ``to_frames`` documents where the bins differ from tonic.

The input checks of this module are shared with ``reverb_edge.events.filters``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from ..errors import InputError
from ..kernels.config import NJIT_OPTIONS
from .types import EVENT_DTYPE

# Coordinates are int16, so no sensor axis can be longer than this.
MAX_SENSOR_AXIS = 32768

_SLICING_OPTIONS = ("time_window", "event_count", "n_time_bins", "n_event_bins")


def to_frames(
    events: np.ndarray,
    sensor_size: tuple[int, int, int],
    *,
    time_window: int | None = None,
    event_count: int | None = None,
    n_time_bins: int | None = None,
    n_event_bins: int | None = None,
    overlap: int = 0,
    include_incomplete: bool = True,
    start_time: int | None = None,
    polarity_channels: bool = True,
    clip: int | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Count events per pixel in T consecutive bins and return frames of shape (T, P, H, W).

    Exactly one of ``time_window``, ``event_count``, ``n_time_bins`` and
    ``n_event_bins`` selects the bins. In the formulas, ``t`` is an event time
    in µs, ``i`` its 0-based index and N the number of events. ``t_last`` is
    the time of the last event, and ``S`` is the start time: ``start_time``,
    else the time of the first event. ``D = t_last - S``, and ``//`` is floor
    division.

    ``time_window=w`` with ``overlap=o`` (µs, 0 <= o < w), stride ``s = w - o``:
        window k is the half-open interval [S + k*s, S + k*s + w). It is
        complete when S + k*s + w <= t_last. With ``include_incomplete=True``
        there are K = (D - w) // s + 2 windows when D >= w, else K = 1, so the
        last window always contains ``t_last``. With ``include_incomplete=False``
        only the K = (D - w) // s + 1 complete windows are kept (K = 0 when
        D < w). K = 0 when no event is at or after S. Without overlap an
        event at or after S goes to bin (t - S) // w.
    ``event_count=n`` with ``overlap=o`` (events, 0 <= o < n), stride ``s = n - o``:
        group k contains the events with index in [k*s, min(k*s + n, N)), and
        groups follow until one reaches the last event. The last group may
        be incomplete, with fewer than n events, and is then kept unless
        ``include_incomplete=False``.
    ``n_time_bins=n``:
        the interval [S, t_last] is split into n equal half-open bins, and
        the last bin also contains ``t_last``: bin = min(n - 1, (t - S) * n // D),
        evaluated exactly in integers. When D == 0 every kept event goes to
        bin 0.
    ``n_event_bins=n``:
        event i goes to bin i * n // N, so the bins contain N // n or N // n + 1
        consecutive events and every event is counted.

    With a time option, events before ``start_time`` are in no bin. Otherwise,
    with ``overlap=0`` and ``include_incomplete=True``, every event is counted
    exactly once, so ``frames.sum() == len(events)`` when ``clip`` is None.

    Differences from ``tonic.functional.to_frame_numpy`` in tonic 1.7. With
    ``time_window`` and ``include_incomplete=True``, tonic has one window
    fewer when D - w is a multiple of s, because its last window then ends
    exactly at ``t_last``, so it drops the events at ``t_last``. With
    ``n_time_bins`` it uses the bin width D // n, so it drops the events at or
    after S + n * (D // n), including ``t_last``. With ``n_event_bins`` it
    drops the last N % n events. With ``include_incomplete=False`` tonic
    still returns one window (or group) when the recording is shorter than
    one. Tonic also defaults to ``include_incomplete=False``, fails on empty
    input with ``time_window`` or ``n_time_bins``, returns int16 frames, takes
    ``overlap`` as a fraction of a bin with ``n_time_bins`` and
    ``n_event_bins``, and ignores ``start_time`` with ``n_time_bins``.

    Args:
        events: time-sorted events of ``EVENT_DTYPE``. The order is checked
            only with the time options.
        sensor_size: (width, height, polarities), the order tonic uses.
        time_window: window length in µs.
        event_count: number of events per group.
        n_time_bins: number of bins of equal duration.
        n_event_bins: number of bins of (nearly) equal event count.
        overlap: overlap of neighbouring windows in µs (``time_window``) or
            events (``event_count``). Must be 0 with the two bin options.
        include_incomplete: keep the incomplete tail window or group. It can
            only be False with ``time_window`` or ``event_count``.
        start_time: start S in µs for ``time_window`` and ``n_time_bins``.
            A start before the first event adds leading empty bins.
        polarity_channels: if True, P = 2 channels, OFF (p = 0) in channel 0
            and ON (p = 1) in channel 1, which needs polarities == 2. If
            False, P = 1 and both polarities are summed.
        clip: if set, counts above it are clipped to it (``clip=1`` gives
            binary frames).
        dtype: output dtype, an integer, float or bool type.

    Returns:
        An array (T, P, H, W) of ``dtype``. Empty input gives T = 0 with
        ``time_window`` or ``event_count``, and T = n zero frames with
        ``n_time_bins=n`` or ``n_event_bins=n``.

    Raises:
        InputError: if not exactly one slicing option is set, on an invalid
            option, on events of another dtype, with coordinates outside the
            sensor or polarities other than 0 and 1, on unsorted times with a
            time option, or if a count does not fit an integer ``dtype``.
    """
    options = _check_frame_options(
        "to_frames",
        sensor_size,
        time_window=time_window,
        event_count=event_count,
        n_time_bins=n_time_bins,
        n_event_bins=n_event_bins,
        overlap=overlap,
        include_incomplete=include_incomplete,
        start_time=start_time,
        polarity_channels=polarity_channels,
        clip=clip,
        dtype=dtype,
    )
    mode = options["mode"]
    width, height, _ = check_events("to_frames", events, sensor_size, sorted_times=mode in ("time_window", "n_time_bins"))
    size = options["size"]
    overlap = options["overlap"]
    start_time = options["start_time"]
    times = events["t"]

    if mode == "time_window":
        lo, hi = _time_window_ranges(times, size, overlap, include_incomplete, start_time)
    elif mode == "event_count":
        lo, hi = _event_count_ranges(len(events), size, overlap, include_incomplete)
    elif mode == "n_time_bins":
        lo, hi = _time_bin_ranges(times, size, start_time)
    else:
        lo, hi = _event_bin_ranges(len(events), size)

    channels = 2 if polarity_channels else 1
    return _accumulate("to_frames", events, lo, hi, channels, height, width, options["clip"], options["dtype"])


@dataclass(frozen=True)
class ToFrames:
    """Transform that applies :func:`to_frames` with fixed options; see there for the bins.

    The options are checked when the transform is built, and ``__call__``
    only forwards them.
    """

    sensor_size: tuple[int, int, int]
    time_window: int | None = None
    event_count: int | None = None
    n_time_bins: int | None = None
    n_event_bins: int | None = None
    overlap: int = 0
    include_incomplete: bool = True
    start_time: int | None = None
    polarity_channels: bool = True
    clip: int | None = None
    dtype: Any = np.float32

    def __post_init__(self):
        _check_frame_options(
            "ToFrames",
            self.sensor_size,
            time_window=self.time_window,
            event_count=self.event_count,
            n_time_bins=self.n_time_bins,
            n_event_bins=self.n_event_bins,
            overlap=self.overlap,
            include_incomplete=self.include_incomplete,
            start_time=self.start_time,
            polarity_channels=self.polarity_channels,
            clip=self.clip,
            dtype=self.dtype,
        )

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return to_frames(
            events,
            self.sensor_size,
            time_window=self.time_window,
            event_count=self.event_count,
            n_time_bins=self.n_time_bins,
            n_event_bins=self.n_event_bins,
            overlap=self.overlap,
            include_incomplete=self.include_incomplete,
            start_time=self.start_time,
            polarity_channels=self.polarity_channels,
            clip=self.clip,
            dtype=self.dtype,
        )


# ---------------------------------------------------------------------------
# Input checks, shared with reverb_edge.events.filters


def check_int(caller: str, name: str, value, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise ``InputError``.

    Integral floats such as ``10e3`` are accepted because tonic users often
    write times that way. Booleans are rejected.
    """
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{caller}: {name} is {value!r}, expected an int")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        number = int(value)
    else:
        raise InputError(f"{caller}: {name} is {value!r}, expected an int")
    if minimum is not None and number < minimum:
        raise InputError(f"{caller}: {name} is {number}, expected an int >= {minimum}")
    return number


def check_sensor_size(caller: str, sensor_size) -> tuple[int, int, int]:
    """Return ``sensor_size`` as (width, height, polarities), or raise ``InputError``."""
    if not isinstance(sensor_size, (tuple, list)) or len(sensor_size) != 3:
        raise InputError(
            f"{caller}: sensor_size is {sensor_size!r}, expected (width, height, polarities)"
        )
    width = check_int(caller, "sensor_size[0] (width)", sensor_size[0], 1)
    height = check_int(caller, "sensor_size[1] (height)", sensor_size[1], 1)
    polarities = check_int(caller, "sensor_size[2] (polarities)", sensor_size[2], 1)
    if width > MAX_SENSOR_AXIS or height > MAX_SENSOR_AXIS:
        raise InputError(
            f"{caller}: sensor_size {tuple(sensor_size)} exceeds {MAX_SENSOR_AXIS} pixels "
            "on an axis, the range of the int16 coordinates"
        )
    if polarities not in (1, 2):
        raise InputError(f"{caller}: sensor_size[2] (polarities) is {polarities}, expected 1 or 2")
    return width, height, polarities


def check_events(caller: str, events, sensor_size, sorted_times: bool = False) -> tuple[int, int, int]:
    """Check that ``events`` fit the sensor and return its (width, height, polarities).

    Raises ``InputError`` on another dtype, coordinates outside the sensor or a
    polarity other than 0 and 1, and with ``sorted_times`` on times that go
    backward (:func:`check_sorted`, in the same pass over the events).
    """
    width, height, polarities = check_sensor_size(caller, sensor_size)
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        found = f"{events.dtype} {events.shape}" if isinstance(events, np.ndarray) else type(events).__name__
        raise InputError(
            f"{caller}: events are {found}, expected a 1-D array of EVENT_DTYPE; "
            "convert them with reverb_edge.events.make_events(x, y, t, p)"
        )
    if len(events) == 0:
        return width, height, polarities

    bounds = _field_bounds(events["x"], events["y"], events["p"], events["t"], sorted_times)
    for name, size, (low, high) in (("x", width, bounds[0:2]), ("y", height, bounds[2:4])):
        if low < 0 or high >= size:
            raise InputError(
                f"{caller}: {name} ranges over [{low}, {high}], outside the sensor's [0, {size - 1}]; "
                "pass the sensor_size the events were recorded with"
            )
    low, high = bounds[4:6]
    if low < 0 or high > 1:
        raise InputError(f"{caller}: p ranges over [{low}, {high}], expected 0 (OFF) and 1 (ON) only")
    if bounds[6] >= 0:
        _raise_backward(caller, events["t"], bounds[6])
    return width, height, polarities


def check_sorted(caller: str, times: np.ndarray) -> None:
    """Raise ``InputError`` unless ``times`` is non-decreasing."""
    index = _first_backward(times)
    if index >= 0:
        _raise_backward(caller, times, index)


def _raise_backward(caller: str, times: np.ndarray, index: int) -> None:
    raise InputError(
        f"{caller}: event times go backward at index {index} "
        f"({int(times[index - 1])} then {int(times[index])} µs); "
        "sort the events by t, for example with np.sort(events, order='t', kind='stable')"
    )


# ---------------------------------------------------------------------------
# Option checks and bin ranges


def _check_frame_options(
    caller,
    sensor_size,
    *,
    time_window,
    event_count,
    n_time_bins,
    n_event_bins,
    overlap,
    include_incomplete,
    start_time,
    polarity_channels,
    clip,
    dtype,
) -> dict:
    """Check the options of ``to_frames`` and return them normalised: ints, and a NumPy dtype."""
    _, _, polarities = check_sensor_size(caller, sensor_size)
    values = dict(zip(_SLICING_OPTIONS, (time_window, event_count, n_time_bins, n_event_bins)))
    chosen = [name for name, value in values.items() if value is not None]
    if len(chosen) != 1:
        chosen_names = ", ".join(chosen) if chosen else "none"
        raise InputError(
            f"{caller}: set exactly one of time_window, event_count, n_time_bins and "
            f"n_event_bins (set: {chosen_names})"
        )
    mode = chosen[0]
    size = check_int(caller, mode, values[mode], 1)

    if mode in ("n_time_bins", "n_event_bins") and overlap != 0:
        raise InputError(
            f"{caller}: overlap is {overlap!r}, but {mode} bins cannot overlap; "
            "use time_window or event_count with an overlap"
        )
    overlap = check_int(caller, "overlap", overlap, 0)
    if mode in ("time_window", "event_count") and overlap >= size:
        raise InputError(f"{caller}: overlap is {overlap}, expected less than {mode}={size}")
    if mode in ("n_time_bins", "n_event_bins") and not include_incomplete:
        raise InputError(
            f"{caller}: include_incomplete=False has no effect with {mode}, whose bins "
            "cover every event; leave it True"
        )
    if start_time is not None:
        start_time = check_int(caller, "start_time", start_time)
        if not -(2**63) <= start_time < 2**63:
            raise InputError(f"{caller}: start_time {start_time} is outside the int64 range of event times")
        if mode in ("event_count", "n_event_bins"):
            raise InputError(
                f"{caller}: start_time applies to time_window and n_time_bins only, not to {mode}"
            )

    if polarity_channels and polarities != 2:
        raise InputError(
            f"{caller}: polarity_channels=True needs a sensor with 2 polarities, but "
            f"sensor_size is {tuple(sensor_size)}; pass polarity_channels=False to sum them"
        )
    if clip is not None:
        clip = check_int(caller, "clip", clip, 1)
    try:
        out_dtype = np.dtype(dtype)
    except TypeError as err:
        raise InputError(f"{caller}: dtype {dtype!r} is not a NumPy dtype") from err
    if out_dtype.kind not in "biuf":
        raise InputError(f"{caller}: dtype is {out_dtype}, expected an integer, float or bool type")
    return {
        "mode": mode,
        "size": size,
        "overlap": overlap,
        "start_time": start_time,
        "clip": clip,
        "dtype": out_dtype,
    }


def _time_window_ranges(times, window, overlap, include_incomplete, start_time):
    """Return the index ranges [lo, hi) of the events in each time window."""
    if len(times) == 0:
        return _no_ranges()
    stride = window - overlap
    start = int(times[0]) if start_time is None else start_time
    duration = int(times[-1]) - start
    if duration < 0:
        return _no_ranges()

    if duration >= window:
        complete = (duration - window) // stride + 1
        n_windows = complete + 1 if include_incomplete else complete
    else:
        n_windows = 1 if include_incomplete else 0
    window_starts = start + stride * np.arange(n_windows, dtype=np.int64)
    lo = np.searchsorted(times, window_starts, side="left")
    hi = np.searchsorted(times, window_starts + window, side="left")
    return lo, hi


def _event_count_ranges(n_events, count, overlap, include_incomplete):
    """Return the index ranges [lo, hi) of the events in each group of ``count`` events."""
    if n_events == 0:
        return _no_ranges()
    stride = count - overlap
    complete = (n_events - count) // stride + 1 if n_events >= count else 0
    covered = (complete - 1) * stride + count if complete else 0
    n_groups = complete + 1 if include_incomplete and covered < n_events else complete
    lo = stride * np.arange(n_groups, dtype=np.int64)
    hi = np.minimum(lo + count, n_events)
    return lo, hi


def time_bin_ranges(events: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Return index ranges (lo, hi) so that ``events[lo[k]:hi[k]]`` is bin k of ``to_frames(n_time_bins=n_bins)``."""
    n_bins = check_int("time_bin_ranges", "n_bins", n_bins, minimum=1)
    check_sorted("time_bin_ranges", events["t"])
    return _time_bin_ranges(events["t"], n_bins, None)


def _time_bin_ranges(times, n_bins, start_time):
    """Return the index ranges [lo, hi) of the events in each of ``n_bins`` equal time bins.

    Event t is in bin k when k <= (t - S) * n / D < k + 1, that is when
    S + ceil(k * D / n) <= t < S + ceil((k + 1) * D / n) for integer t.
    """
    n_events = len(times)
    if n_events == 0:
        return np.zeros(n_bins, np.int64), np.zeros(n_bins, np.int64)
    start = int(times[0]) if start_time is None else start_time
    duration = int(times[-1]) - start
    if duration < 0:
        return np.full(n_bins, n_events, np.int64), np.full(n_bins, n_events, np.int64)
    if duration > 0 and duration > (2**63 - 1) // n_bins:
        raise InputError(
            f"to_frames: n_time_bins={n_bins} times the duration {duration} µs overflows int64"
        )

    return _time_bin_edges(times, n_bins, start, duration)


@njit(**NJIT_OPTIONS)
def _time_bin_edges(times, n_bins, start, duration):
    """Return the ranges of :func:`_time_bin_ranges` for a duration of 0 or more, without overflow."""
    lo = np.empty(n_bins, np.int64)
    hi = np.empty(n_bins, np.int64)
    for k in range(n_bins):
        if duration == 0:
            # Every event at or after the start is at the start, in bin 0. No start + 1 here: the start
            # may be the largest int64.
            lo[k] = np.searchsorted(times, start, side="left") if k == 0 else len(times)
        else:
            lo[k] = np.searchsorted(times, start - ((-k * duration) // n_bins), side="left")  # start + ceil(k * D / n)
    hi[:-1] = lo[1:]
    hi[-1] = len(times)  # the last bin is closed, so it ends after the last event
    return lo, hi


def _event_bin_ranges(n_events, n_bins):
    """Return the index ranges [lo, hi) of ``n_bins`` bins where event i is in bin i * n // N."""
    k = np.arange(n_bins + 1, dtype=np.int64)
    bounds = -((-k * n_events) // n_bins)  # ceil(k * N / n)
    return bounds[:-1], bounds[1:]


def _no_ranges():
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def _accumulate(caller, events, lo, hi, channels, height, width, clip, dtype) -> np.ndarray:
    """Count events[lo[k]:hi[k]] per channel and pixel into frame k of a (K, P, H, W) array of ``dtype``.

    Frames are counted one at a time, so the int64 counts never take more
    memory than one frame.
    """
    frames = np.zeros((len(lo), channels, height, width), dtype=dtype)
    counts = np.empty((channels, height, width), np.int64)
    largest = int(np.iinfo(dtype).max) if dtype.kind in "iu" else -1
    target = frames
    if dtype.kind == "b":
        # A bool frame marks the pixels with an event: the count clipped to 1, written as a byte.
        clip, target = 1, frames.view(np.uint8)
    elif dtype.kind == "f" and dtype.itemsize not in (4, 8):
        # Numba has no float16 and no long double: count into float64 frames, which hold every count
        # below 2**53 exactly, and cast once.
        target = np.zeros(frames.shape, np.float64)
    elif not dtype.isnative:
        # Numba takes native byte order only: count in it, and cast once.
        target = np.zeros(frames.shape, dtype.newbyteorder("="))
    # Float32 represents every integer up to 2**24 exactly, float64 up to 2**53.
    exact = {4: 2**24, 8: 2**53}[target.dtype.itemsize] if target.dtype.kind == "f" else 0
    failed = _count_frames(events["x"], events["y"], events["p"], lo, hi, -1 if clip is None else clip, largest,
                           exact, counts, target)
    if failed >= 0:
        raise InputError(
            f"{caller}: frame {failed} has {int(counts.max())} events on one pixel, above the max "
            f"{largest} of dtype {dtype}; set clip or pass a wider dtype"
        )
    if target.dtype != dtype and dtype.kind != "b":
        frames[...] = target
    return frames


# The passes over events are Numba loops. NumPy makes a strided pass (and often a copy) per field
# and per reduction of the structured array, and one bincount per frame. On the 100 N-MNIST test
# recordings of the shared data (3,856 events on average), to_frames into 6 frames took 100 us
# per recording with those passes and 48 us with these (fastest of five passes, one thread). One
# pass for the bounds and the order, the bin edges in Numba and float counts straight into the
# frames then brought it to 30 us (fastest of nine passes).


@njit(**NJIT_OPTIONS)
def _field_bounds(x, y, p, t, order):
    """Return (min x, max x, min y, max y, min p, max p, i) of a non-empty event array's fields.

    With ``order``, i is the first index whose time is below the one before
    it, or -1 when the times never go back. Without ``order``, i is -1.
    """
    x_low, x_high, y_low, y_high, p_low, p_high = x[0], x[0], y[0], y[0], p[0], p[0]
    backward = -1
    for i in range(1, len(x)):
        x_low, x_high = min(x_low, x[i]), max(x_high, x[i])
        y_low, y_high = min(y_low, y[i]), max(y_high, y[i])
        p_low, p_high = min(p_low, p[i]), max(p_high, p[i])
        if order and backward < 0 and t[i] < t[i - 1]:
            backward = i
    return int(x_low), int(x_high), int(y_low), int(y_high), int(p_low), int(p_high), backward


@njit(**NJIT_OPTIONS)
def _event_bins(events, width, height, n_bins):
    """Return (lo, hi, ok): the ranges of :func:`to_frames` with ``n_time_bins=n_bins`` for a compiled caller.

    ``ok`` is False when the caller must take the checked path of
    ``to_frames``, which raises the error. That is the case when ``events``
    is empty, has a coordinate outside width x height or a polarity other
    than 0 and 1, or goes backward in time. It is also the case when the
    duration overflows the bin formula, or when a bin has more than 2**24
    events, the largest count float32 holds exactly.
    """
    lo = np.zeros(n_bins, np.int64)
    hi = np.zeros(n_bins, np.int64)
    if len(events) == 0:
        return lo, hi, False
    x_low, x_high, y_low, y_high, p_low, p_high, backward = _field_bounds(events.x, events.y, events.p, events.t, True)
    if x_low < 0 or x_high >= width or y_low < 0 or y_high >= height or p_low < 0 or p_high > 1 or backward >= 0:
        return lo, hi, False
    start = np.int64(events[0].t)
    duration = np.int64(events[len(events) - 1].t) - start
    # The times are sorted, so a negative duration is one that overflowed int64.
    if duration < 0 or duration > (2**63 - 1) // n_bins:
        return lo, hi, False
    lo, hi = _time_bin_edges(events.t, n_bins, start, duration)
    for k in range(n_bins):
        if hi[k] - lo[k] > 2**24:
            return lo, hi, False
    return lo, hi, True


@njit(**NJIT_OPTIONS)
def _bin_channels_last(events, lo, hi, out, two):
    """Count events[lo:hi] into ``out``, one channels-last (H, W, C) float32 frame: C = 2 by polarity (``two``), or 1.

    The frame equals that bin of :func:`to_frames` moved to channels-last.
    :func:`_event_bins` has checked the coordinates and the bin's size.
    """
    flat = out.reshape(-1)
    flat[:] = 0.0
    _, width, channels = out.shape
    for i in range(lo, hi):
        event = events[i]
        flat[np.uint64((np.int64(event.y) * width + event.x) * channels + (event.p if two else 0))] += 1.0


@njit(**NJIT_OPTIONS)
def _first_backward(times):
    """Return the first index whose time is below the one before it, or -1 when the times never go back."""
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            return i
    return -1


@njit(**NJIT_OPTIONS)
def _count_frames(x, y, p, lo, hi, clip, largest, exact, counts, frames):
    """Count events[lo[k]:hi[k]] per channel and pixel into frames[k], through the int64 frame ``counts``.

    The channel is p with two channels, else 0. Counts above ``clip`` (if
    >= 0) become ``clip``. Returns -1, or the first frame with a count
    above ``largest`` (if >= 0), which is left unwritten with its counts in
    ``counts``. Without ``clip``, a bin of at most ``exact`` events is
    counted straight into its frame (zeroed, of a float type that holds
    every count up to ``exact``).
    """
    two = counts.shape[0] == 2
    _, height, width = counts.shape
    flat_counts = counts.reshape(-1)
    for k in range(len(lo)):
        if hi[k] <= lo[k]:
            continue
        if clip < 0 and hi[k] - lo[k] <= exact:
            flat_frame = frames[k].reshape(-1)
            for i in range(lo[k], hi[k]):
                # Unsigned: x and y are checked to be inside the sensor, and Numba then adds no test for negatives.
                flat_frame[np.uint64(((p[i] if two else 0) * height + y[i]) * width + x[i])] += 1
            continue
        flat_counts[:] = 0
        for i in range(lo[k], hi[k]):
            flat_counts[np.uint64(((p[i] if two else 0) * height + y[i]) * width + x[i])] += 1
        if clip >= 0:
            for j in range(len(flat_counts)):
                flat_counts[j] = min(flat_counts[j], clip)
        if largest >= 0 and flat_counts.max() > largest:
            return k
        flat_frame = frames[k].reshape(-1)
        for j in range(len(flat_counts)):
            flat_frame[j] = flat_counts[j]
    return -1
