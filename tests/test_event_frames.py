"""Tests of reverb_edge.events.frames: the bin formulas, every-event-once, and parity with tonic 1.7."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import data_root
from reverb_edge.errors import InputError
from reverb_edge.events.frames import ToFrames, _count_frames, to_frames
from reverb_edge.events.types import EVENT_DTYPE, empty_events, make_events

SENSOR = (7, 5, 2)
SLICING = {
    "time_window": dict(time_window=40),
    "event_count": dict(event_count=4),
    "n_time_bins": dict(n_time_bins=3),
    "n_event_bins": dict(n_event_bins=3),
}


def random_events(rng, n_events, sensor_size=SENSOR, t_max=1000, t_min=0):
    """Return time-sorted random events, with repeated timestamps likely."""
    width, height, _ = sensor_size
    t = np.sort(rng.integers(t_min, t_max + 1, n_events))
    return make_events(
        rng.integers(0, width, n_events),
        rng.integers(0, height, n_events),
        t,
        rng.integers(0, 2, n_events),
    )


def frames_from_bins(events, bins, n_frames, sensor_size=SENSOR):
    """Count events into (n_frames, 2, H, W) from one bin index per event; -1 means no bin."""
    width, height, _ = sensor_size
    frames = np.zeros((n_frames, 2, height, width), np.int64)
    binned = bins >= 0
    np.add.at(frames, (bins[binned], events["p"][binned], events["y"][binned], events["x"][binned]), 1)
    return frames


def read_nmnist_events(path: Path) -> np.ndarray:
    """Decode an N-MNIST .bin file: 5-byte records of x, y, then bit 7 polarity and a 23-bit time."""
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((records[:, 2] & 0x7F) << 16) | (records[:, 3] << 8) | records[:, 4]
    return make_events(records[:, 0], records[:, 1], t, records[:, 2] >> 7)


def nmnist_test_files(count_per_digit: int = 1) -> list[Path]:
    """Return a few N-MNIST test recordings, or skip when the data folder is absent."""
    folder = data_root() / "nmnist" / "Test"
    files = [path for digit in range(10) for path in sorted(folder.glob(f"{digit}/*.bin"))[:count_per_digit]]
    if not files:
        pytest.skip(f"N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    return files


@pytest.fixture
def tonic_frames():
    """Return tonic's to_frame_numpy on a copy of the events, since tonic may write into them."""
    functional = pytest.importorskip("tonic.functional")

    def run(events, sensor_size=SENSOR, **options):
        return functional.to_frame_numpy(events.copy(), sensor_size, **options)

    return run


# ---------------------------------------------------------------------------
# Options


@pytest.mark.parametrize("options", [{}, dict(time_window=10, event_count=3), dict(n_time_bins=2, n_event_bins=2)])
def test_slicing_options_exactly_one(options):
    events = random_events(np.random.default_rng(0), 10)
    with pytest.raises(InputError) as error:
        to_frames(events, SENSOR, **options)
    for name in ("time_window", "event_count", "n_time_bins", "n_event_bins"):
        assert name in str(error.value)


@pytest.mark.parametrize(
    "options",
    [
        dict(time_window=0),
        dict(event_count=-1),
        dict(n_time_bins=2.5),
        dict(time_window=10, overlap=10),
        dict(event_count=4, overlap=-1),
        dict(n_time_bins=3, overlap=1),
        dict(n_event_bins=3, include_incomplete=False),
        dict(event_count=3, start_time=0),
        dict(time_window=10, clip=0),
        dict(time_window=10, dtype=np.complex64),
        dict(time_window=True),
    ],
)
def test_invalid_option_rejected(options):
    with pytest.raises(InputError):
        to_frames(empty_events(), SENSOR, **options)
    with pytest.raises(InputError):
        ToFrames(SENSOR, **options)


def test_integral_float_options_accepted(rng):
    events = random_events(rng, 100)
    pairs = [
        (dict(time_window=40.0, overlap=10.0, start_time=-5.0), dict(time_window=40, overlap=10, start_time=-5)),
        (dict(event_count=7.0, clip=2.0), dict(event_count=7, clip=2)),
        (dict(n_time_bins=3.0), dict(n_time_bins=3)),
        (dict(n_event_bins=3.0), dict(n_event_bins=3)),
    ]
    for float_options, int_options in pairs:
        np.testing.assert_array_equal(to_frames(events, SENSOR, **float_options), to_frames(events, SENSOR, **int_options))


def test_polarity_channels_need_two_polarities():
    events = make_events([1], [1], [0], [1])
    with pytest.raises(InputError, match="polarity_channels=False"):
        to_frames(events, (7, 5, 1), time_window=10)
    frames = to_frames(events, (7, 5, 1), time_window=10, polarity_channels=False)
    assert frames.shape == (1, 1, 5, 7)


@pytest.mark.parametrize(
    "x, y, p, match",
    [([7], [0], [0], "x ranges"), ([0], [-1], [0], "y ranges"), ([0], [0], [2], "p ranges")],
)
def test_events_outside_sensor_rejected(x, y, p, match):
    with pytest.raises(InputError, match=match):
        to_frames(make_events(x, y, [0], p), SENSOR, event_count=1)


def test_other_event_dtype_rejected():
    events = np.zeros(3, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    with pytest.raises(InputError, match="make_events"):
        to_frames(events, SENSOR, event_count=1)


def test_unsorted_times_rejected():
    events = make_events([0, 0, 0], [0, 0, 0], [5, 9, 7], [0, 1, 0])
    with pytest.raises(InputError, match="index 2"):
        to_frames(events, SENSOR, time_window=10)
    with pytest.raises(InputError, match="index 2"):
        to_frames(events, SENSOR, n_time_bins=2)
    assert to_frames(events, SENSOR, event_count=2).sum() == 3


def test_sensor_checked_before_time_order():
    """One pass over the events finds both faults, and the coordinate error is reported first."""
    events = make_events([0, 9, 0], [0, 0, 0], [5, 9, 7], [0, 1, 0])
    with pytest.raises(InputError, match="x ranges over"):
        to_frames(events, SENSOR, n_time_bins=2)


def test_integer_dtype_overflow_rejected():
    events = make_events(np.zeros(300), np.zeros(300), np.arange(300), np.ones(300))
    with pytest.raises(InputError, match="clip"):
        to_frames(events, SENSOR, n_time_bins=1, dtype=np.uint8)
    frames = to_frames(events, SENSOR, n_time_bins=1, dtype=np.uint8, clip=255)
    assert frames[0, 1, 0, 0] == 255


# ---------------------------------------------------------------------------
# Bin formulas


def test_time_window_formula(rng):
    for window in (1, 7, 40, 333, 5000):
        events = random_events(rng, 200)
        t = events["t"]
        duration = int(t[-1] - t[0])
        bins = (t - t[0]) // window
        expected = frames_from_bins(events, bins, duration // window + 1)
        np.testing.assert_array_equal(to_frames(events, SENSOR, time_window=window, dtype=np.int64), expected)


@pytest.mark.parametrize("include_incomplete", [True, False])
def test_time_window_overlap_formula(rng, include_incomplete):
    for window, overlap in [(40, 10), (40, 39), (100, 50), (7, 3), (2000, 1000)]:
        events = random_events(rng, 150)
        t = events["t"]
        stride = window - overlap
        duration = int(t[-1] - t[0])
        if duration >= window:
            count = (duration - window) // stride + (2 if include_incomplete else 1)
        else:
            count = 1 if include_incomplete else 0
        expected = np.zeros((count, 2, SENSOR[1], SENSOR[0]), np.int64)
        for k in range(count):
            begin = t[0] + k * stride
            inside = (t >= begin) & (t < begin + window)
            expected[k] = frames_from_bins(events[inside], np.zeros(inside.sum(), np.int64), 1)[0]
        frames = to_frames(
            events, SENSOR, time_window=window, overlap=overlap, include_incomplete=include_incomplete, dtype=np.int64
        )
        np.testing.assert_array_equal(frames, expected)
        if include_incomplete:
            assert frames[-1].sum() >= np.count_nonzero(t == t[-1])


def test_last_event_on_window_edge_kept():
    events = make_events([0, 1, 2], [0, 0, 0], [0, 50, 100], [1, 1, 1])
    frames = to_frames(events, SENSOR, time_window=50)
    assert frames.shape[0] == 3
    assert frames[2, 1, 0, 2] == 1


def test_incomplete_window_dropped_on_request():
    events = make_events([0, 1, 2], [0, 0, 0], [0, 50, 120], [1, 1, 1])
    frames = to_frames(events, SENSOR, time_window=50, include_incomplete=False)
    assert frames.shape[0] == 2
    assert frames.sum() == 2

    short = to_frames(events, SENSOR, time_window=500, include_incomplete=False)
    assert short.shape == (0, 2, 5, 7)


def test_start_time_adds_leading_frames():
    events = make_events([0, 1], [0, 0], [100, 130], [1, 0])
    frames = to_frames(events, SENSOR, time_window=50, start_time=0)
    assert frames.shape[0] == 3
    assert frames[:2].sum() == 0
    assert frames[2].sum() == 2


def test_start_time_drops_earlier_events():
    events = make_events([0, 1, 2], [0, 0, 0], [100, 130, 200], [1, 0, 1])
    assert to_frames(events, SENSOR, time_window=50, start_time=120).sum() == 2
    assert to_frames(events, SENSOR, n_time_bins=4, start_time=120).sum() == 2
    assert to_frames(events, SENSOR, time_window=50, start_time=300).shape[0] == 0
    assert to_frames(events, SENSOR, n_time_bins=4, start_time=300).shape == (4, 2, 5, 7)


@pytest.mark.parametrize("include_incomplete", [True, False])
def test_event_count_formula(rng, include_incomplete):
    for n_events, count, overlap in [(20, 4, 0), (21, 4, 0), (21, 4, 2), (3, 4, 0), (10, 1, 0), (30, 7, 6)]:
        events = random_events(rng, n_events)
        stride = count - overlap
        groups = []
        start = 0
        while start < n_events:
            group = events[start : start + count]
            if len(group) == count or include_incomplete:
                groups.append(group)
            if start + count >= n_events:
                break
            start += stride
        expected = np.zeros((len(groups), 2, SENSOR[1], SENSOR[0]), np.int64)
        for k, group in enumerate(groups):
            expected[k] = frames_from_bins(group, np.zeros(len(group), np.int64), 1)[0]
        frames = to_frames(
            events, SENSOR, event_count=count, overlap=overlap, include_incomplete=include_incomplete, dtype=np.int64
        )
        np.testing.assert_array_equal(frames, expected)


def test_n_time_bins_formula(rng):
    for n_bins in (1, 2, 3, 7, 64):
        events = random_events(rng, 300, t_min=17, t_max=1000)
        t = events["t"]
        duration = int(t[-1] - t[0])
        bins = np.minimum(n_bins - 1, (t - t[0]) * n_bins // duration)
        expected = frames_from_bins(events, bins, n_bins)
        np.testing.assert_array_equal(to_frames(events, SENSOR, n_time_bins=n_bins, dtype=np.int64), expected)


def test_n_time_bins_last_bin_closed():
    events = make_events([0, 1, 2, 3], [0, 0, 0, 0], [0, 29, 30, 90], [1, 1, 1, 1])
    frames = to_frames(events, SENSOR, n_time_bins=3)
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), [2, 1, 1])


def test_n_time_bins_single_timestamp_in_first_bin():
    events = make_events([0, 1], [0, 0], [500, 500], [1, 0])
    frames = to_frames(events, SENSOR, n_time_bins=4)
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), [2, 0, 0, 0])


def test_n_time_bins_at_largest_time():
    """Events at the largest int64 time go to bin 0 once each: no bin edge past that time is computed."""
    largest = np.iinfo(np.int64).max
    events = make_events([0, 1, 2], [0, 0, 0], [largest] * 3, [0, 1, 0])

    frames = to_frames(events, SENSOR, n_time_bins=6)
    assert frames[0].sum() == 3
    assert frames[1:].sum() == 0

    frames = to_frames(events, SENSOR, n_time_bins=3, start_time=largest)
    assert frames[0].sum() == 3
    assert frames[1:].sum() == 0


def test_start_time_outside_int64_rejected():
    events = make_events([0], [0], [5], [0])
    with pytest.raises(InputError, match="outside the int64 range"):
        to_frames(events, SENSOR, n_time_bins=2, start_time=-(2**63) - 1)


def test_n_event_bins_formula(rng):
    for n_events, n_bins in [(30, 3), (31, 3), (2, 5), (100, 7), (1, 1)]:
        events = random_events(rng, n_events)
        bins = np.arange(n_events) * n_bins // n_events
        expected = frames_from_bins(events, bins, n_bins)
        np.testing.assert_array_equal(to_frames(events, SENSOR, n_event_bins=n_bins, dtype=np.int64), expected)


# ---------------------------------------------------------------------------
# Output layout, channels, clip and dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8, np.bool_])
@pytest.mark.parametrize("mode", list(SLICING))
def test_empty_input_layout_and_dtype(mode, dtype):
    frames = to_frames(empty_events(), SENSOR, dtype=dtype, **SLICING[mode])
    expected_frames = 3 if mode.startswith("n_") else 0
    assert frames.shape == (expected_frames, 2, 5, 7)
    assert frames.dtype == np.dtype(dtype)
    assert not frames.any()

    single = to_frames(empty_events(), SENSOR, dtype=dtype, polarity_channels=False, **SLICING[mode])
    assert single.shape == (expected_frames, 1, 5, 7)


@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.float32, np.float64, np.int8, np.uint16, np.bool_])
def test_every_dtype_holds_the_counts(rng, dtype):
    """Every dtype the option check accepts gets the int64 counts cast to it, float16 and long double included."""
    events = random_events(rng, 200)
    counts = to_frames(events, SENSOR, n_time_bins=3, dtype=np.int64)

    frames = to_frames(events, SENSOR, n_time_bins=3, dtype=dtype)

    assert frames.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(frames, counts.astype(dtype))


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i4", ">u2", "<f4"])
def test_byte_order_of_dtype_kept(rng, dtype):
    """A dtype in the other byte order is counted in the native one and cast, not passed to Numba."""
    events = random_events(rng, 200)

    frames = to_frames(events, SENSOR, n_time_bins=3, dtype=dtype)

    assert frames.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(frames, to_frames(events, SENSOR, n_time_bins=3, dtype=np.int64))


def test_float_counts_match_int64_counts(rng):
    """Bins longer than ``exact`` go through the int64 counts, shorter ones straight into the float frame."""
    events = random_events(rng, 300)
    lo, hi = np.array([0, 100, 250]), np.array([100, 250, 300])
    bins = np.searchsorted(hi, np.arange(300), side="right")
    expected = frames_from_bins(events, bins, 3)
    counts = np.empty((2, 5, 7), np.int64)

    for exact in (2**24, 120, 0):
        frames = np.zeros((3, 2, 5, 7), np.float32)
        assert _count_frames(events["x"], events["y"], events["p"], lo, hi, -1, -1, exact, counts, frames) == -1
        np.testing.assert_array_equal(frames, expected)


@pytest.mark.parametrize("mode", list(SLICING))
def test_nonempty_layout_matches_empty(rng, mode):
    events = random_events(rng, 50)
    frames = to_frames(events, SENSOR, **SLICING[mode])
    assert frames.shape[1:] == (2, 5, 7)
    assert frames.dtype == np.float32
    assert frames.flags.c_contiguous


def test_polarity_channels_off_on_order():
    events = make_events([1, 2, 2], [3, 4, 4], [0, 1, 2], [0, 1, 1])
    frames = to_frames(events, SENSOR, n_time_bins=1)
    assert frames[0, 0, 3, 1] == 1
    assert frames[0, 1, 4, 2] == 2
    assert frames.sum() == 3


def test_polarities_summed_without_channels(rng):
    events = random_events(rng, 200)
    split = to_frames(events, SENSOR, time_window=100)
    summed = to_frames(events, SENSOR, time_window=100, polarity_channels=False)
    np.testing.assert_array_equal(summed[:, 0], split.sum(axis=1))


def test_clip_limits_counts(rng):
    events = random_events(rng, 500, t_max=50)
    counts = to_frames(events, SENSOR, n_time_bins=2, dtype=np.int64)
    binary = to_frames(events, SENSOR, n_time_bins=2, clip=1)
    np.testing.assert_array_equal(binary, (counts > 0).astype(np.float32))
    clipped = to_frames(events, SENSOR, n_time_bins=2, clip=3, dtype=np.int64)
    np.testing.assert_array_equal(clipped, np.minimum(counts, 3))


def test_input_events_unchanged(rng):
    events = random_events(rng, 100)
    copy = events.copy()
    for options in SLICING.values():
        to_frames(events, SENSOR, **options)
    to_frames(events, (7, 5, 1), time_window=50, polarity_channels=False)
    np.testing.assert_array_equal(events, copy)


def test_transform_forwards_options(rng):
    events = random_events(rng, 200)
    transform = ToFrames(SENSOR, time_window=60, overlap=20, clip=2, dtype=np.int32)
    expected = to_frames(events, SENSOR, time_window=60, overlap=20, clip=2, dtype=np.int32)
    np.testing.assert_array_equal(transform(events), expected)
    assert transform(events).dtype == np.int32
    with pytest.raises(AttributeError):
        transform.time_window = 10


# ---------------------------------------------------------------------------
# Every event is counted exactly once


@st.composite
def event_streams(draw):
    width = draw(st.integers(1, 6))
    height = draw(st.integers(1, 6))
    n_events = draw(st.integers(0, 60))
    t_span = draw(st.sampled_from([0, 1, 5, 100, 10**6]))
    times = sorted(draw(st.lists(st.integers(0, t_span), min_size=n_events, max_size=n_events)))
    xs = draw(st.lists(st.integers(0, width - 1), min_size=n_events, max_size=n_events))
    ys = draw(st.lists(st.integers(0, height - 1), min_size=n_events, max_size=n_events))
    ps = draw(st.lists(st.integers(0, 1), min_size=n_events, max_size=n_events))
    return make_events(xs, ys, times, ps), (width, height, 2)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    stream=event_streams(),
    mode=st.sampled_from(list(SLICING)),
    size=st.integers(1, 2000),
    start_offset=st.sampled_from([None, 0, 1, 37]),
)
def test_every_event_counted_once(stream, mode, size, start_offset):
    events, sensor_size = stream
    options = {mode: size if mode in ("time_window", "event_count") else 1 + size % 12}
    if start_offset is not None and mode in ("time_window", "n_time_bins") and len(events):
        options["start_time"] = int(events["t"][0]) - start_offset
    frames = to_frames(events, sensor_size, dtype=np.int64, **options)
    assert frames.sum() == len(events)
    assert frames.shape[1:] == (2, sensor_size[1], sensor_size[0])
    assert (frames >= 0).all()


# ---------------------------------------------------------------------------
# Parity with tonic 1.7 where both keep the same events


def test_tonic_equal_complete_windows(rng, tonic_frames):
    for window, overlap in [(40, 0), (40, 10), (100, 99), (333, 0), (250, 100)]:
        events = random_events(rng, 300)
        ours = to_frames(events, SENSOR, time_window=window, overlap=overlap, include_incomplete=False)
        theirs = tonic_frames(events, time_window=window, overlap=overlap, include_incomplete=False)
        np.testing.assert_array_equal(ours, theirs)


def test_tonic_equal_tail_off_edge(rng, tonic_frames):
    # With include_incomplete=True tonic keeps the same windows unless (D - w) is a multiple of the stride.
    checked = 0
    for window, overlap in [(40, 0), (40, 10), (70, 30), (333, 0), (5000, 0)]:
        events = random_events(rng, 300)
        duration = int(events["t"][-1] - events["t"][0])
        if duration >= window and (duration - window) % (window - overlap) == 0:
            continue
        ours = to_frames(events, SENSOR, time_window=window, overlap=overlap)
        theirs = tonic_frames(events, time_window=window, overlap=overlap, include_incomplete=True)
        np.testing.assert_array_equal(ours, theirs)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("include_incomplete", [True, False])
def test_tonic_equal_event_count(rng, tonic_frames, include_incomplete):
    for n_events, count, overlap in [(100, 10, 0), (101, 10, 0), (101, 10, 3), (50, 50, 0)]:
        events = random_events(rng, n_events)
        ours = to_frames(events, SENSOR, event_count=count, overlap=overlap, include_incomplete=include_incomplete)
        theirs = tonic_frames(events, event_count=count, overlap=overlap, include_incomplete=include_incomplete)
        np.testing.assert_array_equal(ours, theirs)


def test_tonic_equal_n_event_bins_divisible(rng, tonic_frames):
    events = random_events(rng, 120)
    np.testing.assert_array_equal(to_frames(events, SENSOR, n_event_bins=6), tonic_frames(events, n_event_bins=6))


def test_tonic_equal_sensor_size_order(rng, tonic_frames):
    sensor_size = (11, 3, 2)
    events = random_events(rng, 200, sensor_size=sensor_size)
    ours = to_frames(events, sensor_size, event_count=50)
    theirs = tonic_frames(events, sensor_size, event_count=50)
    assert ours.shape == theirs.shape == (4, 2, 3, 11)
    np.testing.assert_array_equal(ours, theirs)


def test_tonic_equal_n_time_bins_except_last_time(rng, tonic_frames):
    # With D divisible by n the bin edges agree, and only the events at t_last differ.
    events = random_events(rng, 300, t_max=900)
    events["t"][0], events["t"][-1] = 0, 900
    ours = to_frames(events, SENSOR, n_time_bins=3, dtype=np.int64)
    theirs = tonic_frames(events, n_time_bins=3)
    np.testing.assert_array_equal(ours[:2], theirs[:2])
    at_end = events[events["t"] == 900]
    np.testing.assert_array_equal(ours[2] - theirs[2], frames_from_bins(at_end, np.zeros(len(at_end), np.int64), 1)[0])


# ---------------------------------------------------------------------------
# Differences from tonic 1.7, one test each


def test_tonic_drops_event_on_last_edge(tonic_frames):
    events = make_events([0, 1, 2], [0, 0, 0], [0, 50, 100], [1, 1, 1])
    theirs = tonic_frames(events, time_window=50, include_incomplete=True)
    ours = to_frames(events, SENSOR, time_window=50)
    assert theirs.shape[0] == 2
    assert theirs.sum() == 2
    assert ours.shape[0] == 3
    assert ours.sum() == 3


def test_tonic_default_drops_tail_window():
    tonic_transforms = pytest.importorskip("tonic.transforms")
    events = make_events([0, 1, 2], [0, 0, 0], [0, 50, 70], [1, 1, 1])
    assert tonic_transforms.ToFrame(SENSOR, time_window=50)(events.copy()).sum() == 1
    assert ToFrames(SENSOR, time_window=50)(events).sum() == 3


def test_tonic_keeps_short_recording_window(tonic_frames):
    events = make_events([0, 1], [0, 0], [0, 30], [1, 1])
    assert tonic_frames(events, time_window=50, include_incomplete=False).shape[0] == 1
    assert to_frames(events, SENSOR, time_window=50, include_incomplete=False).shape[0] == 0


def test_tonic_keeps_short_event_group(tonic_frames):
    events = make_events([0, 1, 2], [0, 0, 0], [0, 1, 2], [1, 1, 1])
    assert tonic_frames(events, event_count=5, include_incomplete=False).shape[0] == 1
    assert to_frames(events, SENSOR, event_count=5, include_incomplete=False).shape[0] == 0


def test_tonic_n_time_bins_drops_tail(rng, tonic_frames):
    events = random_events(rng, 300, t_max=1000)
    events["t"][0], events["t"][-1] = 0, 1000
    theirs = tonic_frames(events, n_time_bins=3)
    # Tonic's bins are 1000 // 3 = 333 µs wide, so events at t >= 999 are in none.
    assert theirs.sum() == np.count_nonzero(events["t"] < 999)
    assert theirs.sum() < len(events)
    assert to_frames(events, SENSOR, n_time_bins=3).sum() == len(events)


def test_tonic_n_event_bins_drops_remainder(rng, tonic_frames):
    events = random_events(rng, 101)
    assert tonic_frames(events, n_event_bins=4).sum() == 100
    assert to_frames(events, SENSOR, n_event_bins=4).sum() == 101


def test_tonic_empty_input(tonic_frames):
    with pytest.raises(IndexError):
        tonic_frames(empty_events(), time_window=50)
    with pytest.raises(IndexError):
        tonic_frames(empty_events(), n_time_bins=3)
    assert tonic_frames(empty_events(), event_count=5).shape == (1, 2, 5, 7)
    assert to_frames(empty_events(), SENSOR, event_count=5).shape == (0, 2, 5, 7)


def test_tonic_transform_empty_layout():
    tonic_transforms = pytest.importorskip("tonic.transforms")
    theirs = tonic_transforms.ToFrame(SENSOR, time_window=50)(empty_events())
    # Tonic's ToFrame swaps width and height and returns float64 on empty input only.
    assert theirs.shape == (1, 2, 7, 5)
    assert theirs.dtype == np.float64
    ours = ToFrames(SENSOR, time_window=50)(empty_events())
    assert ours.shape == (0, 2, 5, 7)
    assert ours.dtype == np.float32


def test_tonic_frames_int16(rng, tonic_frames):
    events = random_events(rng, 50)
    assert tonic_frames(events, event_count=10).dtype == np.int16
    assert to_frames(events, SENSOR, event_count=10).dtype == np.float32


def test_tonic_single_polarity_writes_input(tonic_frames):
    functional = pytest.importorskip("tonic.functional")
    events = make_events([0, 1, 2], [0, 0, 0], [0, 1, 2], [1, 1, 1])
    ours = to_frames(events, (7, 5, 1), event_count=3, polarity_channels=False)
    theirs = functional.to_frame_numpy(events, (7, 5, 1), event_count=3)
    np.testing.assert_array_equal(ours, theirs)
    assert not events["p"].any()  # tonic set every p to 0 in the caller's array


def test_tonic_overlap_fraction_with_bins(rng, tonic_frames):
    events = random_events(rng, 100)
    assert tonic_frames(events, n_time_bins=4, overlap=0.1).shape[0] == 4
    with pytest.raises(InputError, match="cannot overlap"):
        to_frames(events, SENSOR, n_time_bins=4, overlap=0.1)


def test_tonic_ignores_start_time_with_time_bins(rng, tonic_frames):
    events = random_events(rng, 100, t_min=500, t_max=900)
    theirs = tonic_frames(events, n_time_bins=4, start_time=100)
    np.testing.assert_array_equal(theirs, tonic_frames(events, n_time_bins=4))
    ours = to_frames(events, SENSOR, n_time_bins=4, start_time=100)
    assert ours[0].sum() == 0
    assert ours.sum() == 100


# ---------------------------------------------------------------------------
# Real N-MNIST recordings


def test_nmnist_every_event_kept():
    for path in nmnist_test_files():
        events = read_nmnist_events(path)
        for options in (dict(time_window=10_000), dict(n_time_bins=10), dict(event_count=1000), dict(n_event_bins=7)):
            frames = to_frames(events, (34, 34, 2), dtype=np.int64, **options)
            assert frames.sum() == len(events), (path.name, options)


def test_nmnist_matches_tonic(tonic_frames):
    for path in nmnist_test_files():
        events = read_nmnist_events(path)
        ours = to_frames(events, (34, 34, 2), time_window=10_000, dtype=np.int64)
        theirs = tonic_frames(events, (34, 34, 2), time_window=10_000, include_incomplete=True)
        # Tonic has the same windows, but it may lack the last one when t_last - t_0 is a multiple of 10 ms.
        assert len(ours) - len(theirs) in (0, 1)
        np.testing.assert_array_equal(ours[: len(theirs)], theirs)
        assert ours[len(theirs) :].sum() == len(events) - theirs.sum()
        complete = to_frames(events, (34, 34, 2), time_window=10_000, include_incomplete=False)
        np.testing.assert_array_equal(complete, tonic_frames(events, (34, 34, 2), time_window=10_000))
