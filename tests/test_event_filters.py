"""Tests of reverb_edge.events.filters: downsample, crop, denoise, and parity with tonic 1.7."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge.errors import InputError
from reverb_edge.events import filters
from reverb_edge.events.filters import (
    CenterCrop,
    Crop,
    Denoise,
    Downsample,
    _denoise_reference,
    center_crop,
    crop,
    denoise,
    downsample,
)
from reverb_edge.events.types import EVENT_DTYPE, empty_events, make_events
from test_event_frames import nmnist_test_files, random_events, read_nmnist_events

REPO_ROOT = Path(__file__).resolve().parents[1]
SENSOR = (34, 26, 2)


@pytest.fixture
def tonic_transforms():
    return pytest.importorskip("tonic.transforms")


# ---------------------------------------------------------------------------
# downsample


def test_downsample_factor_formula(rng):
    events = random_events(rng, 500, sensor_size=SENSOR)
    for factor, new_size in [(1, (34, 26, 2)), (2, (17, 13, 2)), (3, (12, 9, 2)), ((4, 5), (9, 6, 2)), (34, (1, 1, 2))]:
        out, size = downsample(events, SENSOR, factor)
        fx, fy = factor if isinstance(factor, tuple) else (factor, factor)
        assert size == new_size
        np.testing.assert_array_equal(out["x"], events["x"] // fx)
        np.testing.assert_array_equal(out["y"], events["y"] // fy)
        np.testing.assert_array_equal(out["t"], events["t"])
        np.testing.assert_array_equal(out["p"], events["p"])
        assert out.dtype == EVENT_DTYPE
        assert out["x"].max() < size[0]
        assert out["y"].max() < size[1]


def test_downsample_target_size_formula(rng):
    events = random_events(rng, 500, sensor_size=SENSOR)
    out, size = downsample(events, SENSOR, target_size=(10, 7))
    assert size == (10, 7, 2)
    np.testing.assert_array_equal(out["x"], events["x"].astype(np.int64) * 10 // 34)
    np.testing.assert_array_equal(out["y"], events["y"].astype(np.int64) * 7 // 26)


@pytest.mark.parametrize(
    "factor, target_size, match",
    [(None, None, "factor and target_size"), (2, (10, 10), "factor and target_size"), (0, None, "factor"),
     ((2, 2, 2), None, "factor"), (None, (35, 10), "exceeds"), (None, (0, 10), "target_size")],
)
def test_downsample_invalid_options(factor, target_size, match):
    with pytest.raises(InputError, match=match):
        downsample(empty_events(), SENSOR, factor, target_size=target_size)
    with pytest.raises(InputError, match=match):
        Downsample(SENSOR, factor, target_size)


def test_downsample_empty_input():
    out, size = downsample(empty_events(), SENSOR, 2)
    assert out.dtype == EVENT_DTYPE
    assert len(out) == 0
    assert size == (17, 13, 2)


def test_downsample_factor_equals_tonic(tonic_transforms):
    # Every int16 coordinate, so the float product of tonic is checked against x // f exhaustively.
    coordinates = np.arange(32768)
    events = make_events(coordinates, coordinates[::-1], np.arange(32768), coordinates % 2)
    for factor in range(2, 40):
        ours, _ = downsample(events, (32768, 32768, 2), factor)
        theirs = tonic_transforms.Downsample(spatial_factor=1 / factor)(events)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"factor {factor}")


def test_downsample_target_equals_tonic_when_exact(rng, tonic_transforms):
    events = random_events(rng, 1000, sensor_size=SENSOR)
    ours, _ = downsample(events, SENSOR, target_size=(17, 13))
    theirs = tonic_transforms.Downsample(sensor_size=SENSOR, target_size=(17, 13))(events)
    np.testing.assert_array_equal(ours, theirs)


def test_downsample_target_tonic_rounds_down(tonic_transforms):
    events = make_events([180, 340, 360, 181], [0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 1, 1])
    ours, _ = downsample(events, (640, 480, 2), target_size=(224, 168))
    theirs = tonic_transforms.Downsample(sensor_size=(640, 480, 2), target_size=(224, 168))(events)
    np.testing.assert_array_equal(ours["x"], [63, 119, 126, 63])
    np.testing.assert_array_equal(theirs["x"], [62, 118, 125, 63])


# ---------------------------------------------------------------------------
# crop and center_crop


def test_crop_keeps_box_and_shifts(rng):
    events = random_events(rng, 500, sensor_size=SENSOR)
    out, size = crop(events, SENSOR, (5, 3, 10, 8))
    inside = (events["x"] >= 5) & (events["x"] < 15) & (events["y"] >= 3) & (events["y"] < 11)
    assert size == (10, 8, 2)
    assert out.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(out["t"], events["t"][inside])
    np.testing.assert_array_equal(out["x"], events["x"][inside] - 5)
    np.testing.assert_array_equal(out["y"], events["y"][inside] - 3)
    np.testing.assert_array_equal(out["p"], events["p"][inside])


def test_crop_box_past_sensor_pads():
    events = make_events([0, 33, 20], [0, 25, 10], [0, 1, 2], [1, 0, 1])
    out, size = crop(events, SENSOR, (-3, -2, 30, 20))
    assert size == (30, 20, 2)
    np.testing.assert_array_equal(out["x"], [3, 23])
    np.testing.assert_array_equal(out["y"], [2, 12])


def test_crop_empty_and_disjoint():
    out, size = crop(empty_events(), SENSOR, (0, 0, 5, 5))
    assert out.dtype == EVENT_DTYPE
    assert len(out) == 0
    events = make_events([30], [20], [0], [1])
    assert len(crop(events, SENSOR, (0, 0, 5, 5))[0]) == 0


@pytest.mark.parametrize("box", [(0, 0, 0, 5), (0, 0, 5), (0.5, 0, 5, 5), (0, 0, 40000, 5), None])
def test_crop_invalid_box(box):
    with pytest.raises(InputError, match="box"):
        crop(empty_events(), SENSOR, box)
    with pytest.raises(InputError, match="box"):
        Crop(SENSOR, box)


def test_center_crop_box(rng):
    events = random_events(rng, 300, sensor_size=SENSOR)
    out, size = center_crop(events, SENSOR, (20, 10))
    expected, _ = crop(events, SENSOR, (7, 8, 20, 10))
    assert size == (20, 10, 2)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("size", [16, (20, 10), (10, 20), (34, 26), (40, 30), (35, 27)])
def test_center_crop_equals_tonic(rng, tonic_transforms, size):
    events = random_events(rng, 500, sensor_size=SENSOR)
    ours, _ = center_crop(events, SENSOR, size)
    theirs = tonic_transforms.CenterCrop(sensor_size=SENSOR, size=size)(events.copy())
    np.testing.assert_array_equal(ours, theirs)


def test_spatial_transforms_forward(rng):
    events = random_events(rng, 300, sensor_size=SENSOR)
    cases = [
        (Downsample(SENSOR, 2), downsample(events, SENSOR, 2)),
        (Downsample(SENSOR, target_size=(8, 8)), downsample(events, SENSOR, target_size=(8, 8))),
        (Crop(SENSOR, (1, 2, 9, 9)), crop(events, SENSOR, (1, 2, 9, 9))),
        (CenterCrop(SENSOR, 12), center_crop(events, SENSOR, 12)),
    ]
    for transform, (expected, expected_size) in cases:
        np.testing.assert_array_equal(transform(events), expected)
        assert transform.output_sensor_size == expected_size
    with pytest.raises(AttributeError):
        cases[0][0].factor = 3


def test_spatial_transforms_keep_input(rng):
    events = random_events(rng, 200, sensor_size=SENSOR)
    copy = events.copy()
    downsample(events, SENSOR, 3)
    crop(events, SENSOR, (2, 2, 10, 10))
    center_crop(events, SENSOR, 40)
    denoise(events, SENSOR, 50)
    np.testing.assert_array_equal(events, copy)


# ---------------------------------------------------------------------------
# denoise


def test_denoise_neighbour_rule():
    events = make_events(
        [5, 6, 6, 7, 20, 20, 9],
        [5, 5, 6, 7, 20, 20, 9],
        [1000, 1500, 1600, 1700, 3000, 3100, 9000],
        [1, 1, 0, 0, 1, 1, 1],
    )
    out = denoise(events, SENSOR, 1000)
    # (6, 5) has (5, 5) 500 µs before. (6, 6) has (6, 5) above it. (7, 7) is only diagonal to (6, 6).
    # The second event at (20, 20) has a recent event only on its own pixel, and (9, 9) is isolated.
    np.testing.assert_array_equal(out["t"], [1500, 1600])


def test_denoise_window_is_strict():
    events = make_events([5, 6, 7], [5, 5, 5], [5000, 6000, 6999], [1, 1, 1])
    np.testing.assert_array_equal(denoise(events, SENSOR, 1000)["t"], [6999])
    np.testing.assert_array_equal(denoise(events, SENSOR, 1001)["t"], [6000, 6999])


def test_denoise_unseen_pixels_count_as_time_zero():
    events = make_events([3, 20, 20], [3, 20, 3], [10, 999, 1000], [1, 1, 1])
    np.testing.assert_array_equal(denoise(events, SENSOR, 1000)["t"], [10, 999])


def test_denoise_one_pixel_sensor_drops_all():
    events = make_events([0, 0], [0, 0], [0, 1], [1, 1])
    assert len(denoise(events, (1, 1, 2), 10_000)) == 0


def test_denoise_fractional_time_is_ceiling(rng):
    events = random_events(rng, 400, sensor_size=(8, 8, 2), t_min=5000, t_max=20000)
    np.testing.assert_array_equal(denoise(events, (8, 8, 2), 200.5), denoise(events, (8, 8, 2), 201))


@pytest.mark.parametrize("filter_time", [-1, float("nan"), float("inf"), "100", True])
def test_denoise_invalid_filter_time(filter_time):
    with pytest.raises(InputError, match="filter_time_us"):
        denoise(empty_events(), SENSOR, filter_time)
    with pytest.raises(InputError, match="filter_time_us"):
        Denoise(SENSOR, filter_time)


def test_denoise_unsorted_rejected():
    events = make_events([0, 1], [0, 0], [10, 5], [1, 1])
    with pytest.raises(InputError, match="backward"):
        denoise(events, SENSOR, 100)


def test_denoise_empty_input():
    out = denoise(empty_events(), SENSOR, 100)
    assert out.dtype == EVENT_DTYPE
    assert len(out) == 0


def test_denoise_transform_forwards(rng):
    events = random_events(rng, 300, sensor_size=SENSOR)
    np.testing.assert_array_equal(Denoise(SENSOR, 40)(events), denoise(events, SENSOR, 40))


@st.composite
def denoise_cases(draw):
    width = draw(st.integers(1, 5))
    height = draw(st.integers(1, 5))
    n_events = draw(st.integers(0, 40))
    times = sorted(draw(st.lists(st.integers(-50, 400), min_size=n_events, max_size=n_events)))
    xs = draw(st.lists(st.integers(0, width - 1), min_size=n_events, max_size=n_events))
    ys = draw(st.lists(st.integers(0, height - 1), min_size=n_events, max_size=n_events))
    filter_time = draw(st.sampled_from([0, 1, 2.5, 30, 100, 10**6]))
    return make_events(xs, ys, times, np.ones(n_events)), (width, height, 2), filter_time


@settings(derandomize=True, max_examples=300, deadline=None)
@given(case=denoise_cases())
def test_denoise_kernel_matches_reference(case):
    events, sensor_size, filter_time = case
    np.testing.assert_array_equal(denoise(events, sensor_size, filter_time), _denoise_reference(events, sensor_size, filter_time))


def test_denoise_equals_tonic_random(rng, tonic_transforms):
    checked = 0
    for sensor_size, n_events, t_max, filter_time in [
        ((8, 8, 2), 500, 100_000, 2000),
        ((34, 26, 2), 3000, 200_000, 5000),
        ((3, 1, 2), 60, 5000, 300),
        ((1, 9, 2), 80, 5000, 300),
        ((16, 16, 2), 1000, 50_000, 1000.5),
    ]:
        events = random_events(rng, n_events, sensor_size=sensor_size, t_max=t_max)
        ours = denoise(events, sensor_size, filter_time)
        theirs = tonic_transforms.Denoise(filter_time=filter_time)(events)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(ours, _denoise_reference(events, sensor_size, filter_time))
        checked += 0 < len(ours) < len(events)
    assert checked >= 3


def test_denoise_equals_tonic_nmnist(tonic_transforms):
    for path in nmnist_test_files():
        events = read_nmnist_events(path)
        for filter_time in (1000, 10_000):
            ours = denoise(events, (34, 34, 2), filter_time)
            theirs = tonic_transforms.Denoise(filter_time=filter_time)(events)
            np.testing.assert_array_equal(ours, theirs, err_msg=path.name)
            assert 0 < len(ours) < len(events)


def test_denoise_tonic_bounds_from_events(tonic_transforms):
    # Tonic takes the sensor bounds from the events, so with all events on (0, 0) no neighbour exists.
    events = make_events([0, 0], [0, 0], [0, 5], [1, 1])
    assert len(tonic_transforms.Denoise(filter_time=100)(events)) == 0
    assert len(denoise(events, SENSOR, 100)) == 2


def test_denoise_tonic_empty_input_fails(tonic_transforms):
    with pytest.raises(ValueError):
        tonic_transforms.Denoise(filter_time=100)(empty_events())
    assert len(denoise(empty_events(), SENSOR, 100)) == 0


NOJIT_SCRIPT = r"""
import numpy as np
from reverb_edge.events import filters
from reverb_edge.events.types import make_events

assert not hasattr(filters._denoise_kernel, "py_func"), "the JIT is still enabled"
rng = np.random.default_rng(5)
for width, height in [(1, 1), (1, 7), (6, 1), (9, 8)]:
    n = 300
    events = make_events(rng.integers(0, width, n), rng.integers(0, height, n), np.sort(rng.integers(0, 20000, n)), rng.integers(0, 2, n))
    for filter_time in (0, 150, 1000):
        ours = filters.denoise(events, (width, height, 2), filter_time)
        expected = filters._denoise_reference(events, (width, height, 2), filter_time)
        assert np.array_equal(ours, expected), (width, height, filter_time)
print("ok")
"""


def test_denoise_kernel_without_jit():
    environment = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run(
        [sys.executable, "-c", NOJIT_SCRIPT], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
