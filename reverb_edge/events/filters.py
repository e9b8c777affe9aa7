"""Spatial transforms and the background-activity filter for event streams.

Each operation is a pure function that returns new events of ``EVENT_DTYPE``
in the input order, and a frozen dataclass transform that forwards its fields
to it. The functions return the new sensor size next to the events, and the
transforms return the events only, so that they chain, and expose the new
size as ``output_sensor_size``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..errors import InputError
from ..kernels.config import NJIT_OPTIONS
from .frames import MAX_SENSOR_AXIS, check_events, check_int, check_sensor_size, check_sorted

SensorSize = tuple[int, int, int]


def downsample(
    events: np.ndarray,
    sensor_size: SensorSize,
    factor: int | tuple[int, int] | None = None,
    *,
    target_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, SensorSize]:
    """Map events onto a coarser pixel grid, keeping every event.

    With ``factor=f`` (or ``(fx, fy)``): x' = x // fx and y' = y // fy, and the
    new sensor is (ceil(W / fx), ceil(H / fy), P). This equals
    ``tonic.transforms.Downsample(spatial_factor=1 / f)`` in tonic 1.7, whose
    float product truncates to the same integers for every int16 coordinate
    and factors 2 to 39 (checked exhaustively). Tonic keeps the sensor size.

    With ``target_size=(W', H')``, 1 <= W' <= W and 1 <= H' <= H:
    x' = x * W' // W and y' = y * H' // H, computed exactly in integers.
    Tonic's ``Downsample(sensor_size, target_size)`` multiplies by the float
    W' / W, which can round one pixel lower (x = 180, W = 640, W' = 224 gives
    62 there and 63 here).

    Raises:
        InputError: if both or neither of ``factor`` and ``target_size`` are
            given, on an invalid factor or target size, or on invalid events.
    """
    new_size, divisor, multiplier = _downsample_geometry("downsample", sensor_size, factor, target_size)
    check_events("downsample", events, sensor_size)
    out = events.copy()
    for axis, name in enumerate("xy"):
        coordinate = events[name].astype(np.int64)
        out[name] = coordinate * multiplier[axis] // divisor[axis]
    return out, new_size


def crop(events: np.ndarray, sensor_size: SensorSize, box: tuple[int, int, int, int]) -> tuple[np.ndarray, SensorSize]:
    """Keep the events inside ``box = (x0, y0, w, h)`` and shift them to x - x0, y - y0.

    An event is kept when x0 <= x < x0 + w and y0 <= y < y0 + h. The box may
    reach past the sensor (x0 < 0 pads on the left), and the new sensor is
    (w, h, P).

    Raises:
        InputError: on an invalid box or invalid events.
    """
    new_size = _crop_geometry("crop", sensor_size, box)
    check_events("crop", events, sensor_size)
    return _crop_events(events, box), new_size


def center_crop(events: np.ndarray, sensor_size: SensorSize, size: int | tuple[int, int]) -> tuple[np.ndarray, SensorSize]:
    """Crop a (w, h) box, or a square for an int ``size``, from the centre of the sensor.

    The box is x0 = (W - w) // 2, y0 = (H - h) // 2, like
    ``tonic.transforms.CenterCrop`` in tonic 1.7, whose ``size`` is also
    (width, height) in its code, although its docstring documents (h, w). A size
    larger than the sensor pads the events, so x0 is then negative. The rest
    is :func:`crop`.
    """
    box = _center_box("center_crop", sensor_size, size)
    return crop(events, sensor_size, box)


def denoise(events: np.ndarray, sensor_size: SensorSize, filter_time_us: float) -> np.ndarray:
    """Drop events that have no recent event at a 4-connected neighbour pixel.

    This is the filter of ``tonic.functional.denoise_numpy`` in tonic 1.7.
    The events are visited in order. Event i at (x, y, t) is kept when one
    of its neighbours (x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1) on the
    sensor has ``t - last < filter_time_us``. Here ``last`` is the time of
    that neighbour's latest earlier event. The event's own pixel and the
    diagonal pixels do not count. A pixel without an earlier event has
    ``last = 0``, as in tonic.

    NOTE: because of ``last = 0``, every event with 0 <= t < filter_time_us
    is kept on a sensor larger than one pixel, so a recording that starts
    near t = 0 is not filtered during its first ``filter_time_us``.

    The one difference is that tonic takes the sensor bounds from the largest
    x and y in the events, which changes the result only when every event
    sits on pixel (0, 0) or when times are negative.

    Args:
        events: time-sorted events of ``EVENT_DTYPE``.
        sensor_size: (width, height, polarities).
        filter_time_us: time in µs, >= 0. A fractional value acts as its
            ceiling, because the times are integers.

    Raises:
        InputError: on invalid events, unsorted times or a negative or
            non-finite ``filter_time_us``.
    """
    filter_time = _check_filter_time("denoise", filter_time_us)
    width, height, _ = check_events("denoise", events, sensor_size)
    check_sorted("denoise", events["t"])
    keep = np.zeros(len(events), dtype=np.bool_)
    _denoise_kernel(events["x"], events["y"], events["t"], width, height, filter_time, keep)
    return events[keep]


@njit(**NJIT_OPTIONS)
def _denoise_kernel(x, y, t, width, height, filter_time, keep):
    last = np.zeros((height, width), dtype=np.int64)  # tonic's start value: every pixel fired at t = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        ti = t[i]
        recent = False
        if xi > 0 and ti - last[yi, xi - 1] < filter_time:
            recent = True
        if xi < width - 1 and ti - last[yi, xi + 1] < filter_time:
            recent = True
        if yi > 0 and ti - last[yi - 1, xi] < filter_time:
            recent = True
        if yi < height - 1 and ti - last[yi + 1, xi] < filter_time:
            recent = True
        keep[i] = recent
        last[yi, xi] = ti


def _denoise_reference(events: np.ndarray, sensor_size: SensorSize, filter_time_us: float) -> np.ndarray:
    """Plain-Python twin of :func:`denoise`, with the same arguments, used by the tests."""
    filter_time = _check_filter_time("denoise", filter_time_us)
    width, height, _ = check_events("denoise", events, sensor_size)
    check_sorted("denoise", events["t"])
    latest = {}
    keep = []
    for x, y, t in zip(events["x"].tolist(), events["y"].tolist(), events["t"].tolist()):
        neighbours = [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)]
        on_sensor = [(nx, ny) for nx, ny in neighbours if 0 <= nx < width and 0 <= ny < height]
        keep.append(any(t - latest.get(pixel, 0) < filter_time for pixel in on_sensor))
        latest[(x, y)] = t
    return events[np.array(keep, dtype=np.bool_)]


@dataclass(frozen=True)
class Downsample:
    """Transform that applies :func:`downsample` and returns the events only."""

    sensor_size: SensorSize
    factor: int | tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None

    def __post_init__(self):
        _downsample_geometry("Downsample", self.sensor_size, self.factor, self.target_size)

    @property
    def output_sensor_size(self) -> SensorSize:
        return _downsample_geometry("Downsample", self.sensor_size, self.factor, self.target_size)[0]

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return downsample(events, self.sensor_size, self.factor, target_size=self.target_size)[0]


@dataclass(frozen=True)
class Crop:
    """Transform that applies :func:`crop` with ``box = (x0, y0, w, h)`` and returns the events only."""

    sensor_size: SensorSize
    box: tuple[int, int, int, int]

    def __post_init__(self):
        _crop_geometry("Crop", self.sensor_size, self.box)

    @property
    def output_sensor_size(self) -> SensorSize:
        return _crop_geometry("Crop", self.sensor_size, self.box)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return crop(events, self.sensor_size, self.box)[0]


@dataclass(frozen=True)
class CenterCrop:
    """Transform that applies :func:`center_crop` and returns the events only."""

    sensor_size: SensorSize
    size: int | tuple[int, int]

    def __post_init__(self):
        _center_box("CenterCrop", self.sensor_size, self.size)

    @property
    def output_sensor_size(self) -> SensorSize:
        box = _center_box("CenterCrop", self.sensor_size, self.size)
        return _crop_geometry("CenterCrop", self.sensor_size, box)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return center_crop(events, self.sensor_size, self.size)[0]


@dataclass(frozen=True)
class Denoise:
    """Transform that applies :func:`denoise`."""

    sensor_size: SensorSize
    filter_time_us: float

    def __post_init__(self):
        check_sensor_size("Denoise", self.sensor_size)
        _check_filter_time("Denoise", self.filter_time_us)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return denoise(events, self.sensor_size, self.filter_time_us)


def _downsample_geometry(caller, sensor_size, factor, target_size):
    """Return the new sensor size and the per-axis divisor and multiplier of the coordinates."""
    width, height, polarities = check_sensor_size(caller, sensor_size)
    if (factor is None) == (target_size is None):
        raise InputError(f"{caller}: pass exactly one of factor and target_size")
    if factor is not None:
        fx, fy = _int_pair(caller, "factor", factor, 1)
        new_size = (-(-width // fx), -(-height // fy), polarities)
        return new_size, (fx, fy), (1, 1)
    target_width, target_height = _int_pair(caller, "target_size", target_size, 1)
    if target_width > width or target_height > height:
        raise InputError(
            f"{caller}: target_size {(target_width, target_height)} exceeds the sensor's "
            f"{(width, height)}; downsample only shrinks the grid"
        )
    return (target_width, target_height, polarities), (width, height), (target_width, target_height)


def _crop_geometry(caller, sensor_size, box) -> SensorSize:
    """Check ``box = (x0, y0, w, h)`` and return the cropped sensor size (w, h, P)."""
    _, _, polarities = check_sensor_size(caller, sensor_size)
    if not isinstance(box, (tuple, list)) or len(box) != 4:
        raise InputError(f"{caller}: box is {box!r}, expected (x0, y0, width, height)")
    check_int(caller, "box[0] (x0)", box[0])
    check_int(caller, "box[1] (y0)", box[1])
    box_width = check_int(caller, "box[2] (width)", box[2], 1)
    box_height = check_int(caller, "box[3] (height)", box[3], 1)
    if box_width > MAX_SENSOR_AXIS or box_height > MAX_SENSOR_AXIS:
        raise InputError(
            f"{caller}: box size {(box_width, box_height)} exceeds {MAX_SENSOR_AXIS} pixels, "
            "the range of the int16 coordinates"
        )
    return box_width, box_height, polarities


def _crop_events(events, box):
    x0, y0, box_width, box_height = (int(value) for value in box)
    x = events["x"].astype(np.int64) - x0
    y = events["y"].astype(np.int64) - y0
    inside = (x >= 0) & (x < box_width) & (y >= 0) & (y < box_height)
    out = events[inside]
    out["x"] = x[inside]
    out["y"] = y[inside]
    return out


def _center_box(caller, sensor_size, size) -> tuple[int, int, int, int]:
    width, height, _ = check_sensor_size(caller, sensor_size)
    box_width, box_height = _int_pair(caller, "size", size, 1)
    return ((width - box_width) // 2, (height - box_height) // 2, box_width, box_height)


def _int_pair(caller, name, value, minimum) -> tuple[int, int]:
    """Return an int or a pair of ints as a (width-axis, height-axis) pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError(f"{caller}: {name} is {value!r}, expected an int or a (width, height) pair")
        return check_int(caller, f"{name}[0]", value[0], minimum), check_int(caller, f"{name}[1]", value[1], minimum)
    number = check_int(caller, name, value, minimum)
    return number, number


def _check_filter_time(caller, filter_time_us) -> int:
    """Return ``ceil(filter_time_us)``, which gives the same result for integer time differences."""
    if isinstance(filter_time_us, (bool, np.bool_)) or not isinstance(filter_time_us, numbers.Real):
        raise InputError(f"{caller}: filter_time_us is {filter_time_us!r}, expected a number of µs")
    if not math.isfinite(filter_time_us) or filter_time_us < 0:
        raise InputError(f"{caller}: filter_time_us is {filter_time_us!r}, expected a finite value >= 0")
    return math.ceil(filter_time_us)
