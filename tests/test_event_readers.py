"""Event-file readers: real sample files, crafted bytes, errors, chunking and memory.

Cross-checks use tonic (N-MNIST, AEDAT 4.0) and expelliarmus (EVT 2.0, EVT 3.0,
DAT) when they are installed; those tests skip otherwise.
"""

from __future__ import annotations

import csv
import gc
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import data_root
from reverb_edge.errors import InputError, MissingExtraError
from reverb_edge.events import EVENT_DTYPE
from reverb_edge.events.readers import FORMATS, EventStream, detect_format, iter_events, read_events
from event_builders import (
    aedat2_bytes,
    aedat2_header,
    aedat3_header,
    aedat3_other_packet,
    aedat3_polarity_packet,
    dat_bytes,
    davis_address,
    dvs128_address,
    evt2_bytes,
    evt2_cd,
    evt2_time_high,
    evt3_addr_x,
    evt3_addr_y,
    evt3_bytes,
    evt3_time,
    evt3_time_high,
    evt3_time_low,
    evt3_vect_12,
    evt3_vect_8,
    evt3_vect_base_x,
    nmnist_bytes,
    raw_header,
    reference_evt3,
    reference_nmnist,
)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The folder of single event-camera recordings; tests that use it skip when it is absent."""
    folder = data_root() / "event-samples"
    if not (folder / "nmnist_sample_tonic.bin").is_file():
        pytest.skip(f"event sample files not found in {folder}; set REVERB_DATA to the data folder")
    return folder


@pytest.fixture(scope="session")
def nmnist_files() -> list[tuple[Path, int]]:
    """N-MNIST ``.bin`` files with their labels, from ``nmnist/index.csv``; skips when absent."""
    folder = data_root() / "nmnist"
    index = folder / "index.csv"
    if not index.is_file():
        pytest.skip(f"N-MNIST files not found in {folder}; set REVERB_DATA to the data folder")
    with open(index, newline="") as file:
        return [(folder / row["path"], int(row["label"])) for row in csv.DictReader(file)]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def chunked(path, chunk_events, read_size=65536, **kwargs) -> np.ndarray:
    chunks = list(iter_events(path, chunk_events=chunk_events, read_size=read_size, **kwargs))
    assert all(chunk.dtype == EVENT_DTYPE for chunk in chunks)
    assert all(len(chunk) == chunk_events for chunk in chunks[:-1])
    return np.concatenate(chunks) if chunks else np.zeros(0, EVENT_DTYPE)


def fields(events: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in events]


# ------------------------------------------------------------------ real files

# (file, format, events, sensor, time span in µs with tolerance)
SAMPLES = [
    ("nmnist_sample_tonic.bin", "nmnist", 4325, (34, 34), 310_000, 10_000),
    ("ncars_sample_tonic.dat", "dat", 2009, None, 100_000, 1_000),
    ("NCARS_obj_004397_td.dat", "dat", 4407, None, 100_000, 1_000),
    ("prophesee_evt2_gen3_sparklers.raw", "evt2", 521_252, (640, 480), 95_900, 100),
    ("prophesee_evt3_gen41_sample.raw", "evt3", 219_596, (1280, 720), 8_800, 100),
    ("dvxplorer_sample.aedat4", "aedat4", 111_954, (320, 240), 590_000, 5_000),
]


@pytest.mark.parametrize("name, format, count, sensor, span, tolerance", SAMPLES, ids=[s[0] for s in SAMPLES])
def test_sample_file_counts_ranges_and_span(samples_dir, name, format, count, sensor, span, tolerance):
    path = samples_dir / name
    if format == "aedat4":
        pytest.importorskip("aedat", reason="AEDAT 4.0 needs the aedat package (the dvs extra)")
    assert detect_format(path) == format
    recording = read_events(path)
    events = recording.events
    assert recording.format == format
    assert events.dtype == EVENT_DTYPE
    assert len(events) == count
    if sensor is not None:
        assert recording.sensor_size == (*sensor, 2)
    width, height, _ = recording.sensor_size
    assert events["x"].min() >= 0
    assert events["x"].max() < width
    assert events["y"].min() >= 0
    assert events["y"].max() < height
    assert set(np.unique(events["p"])) == {0, 1}
    assert (np.diff(events["t"]) >= 0).all()
    assert abs(int(events["t"][-1] - events["t"][0]) - span) <= tolerance
    assert recording.dropped_backward == 0


def test_dat_sensor_size_is_extent_without_header_size(samples_dir):
    recording = read_events(samples_dir / "ncars_sample_tonic.dat")
    events = recording.events
    assert recording.sensor_size == (int(events["x"].max()) + 1, int(events["y"].max()) + 1, 2)
    assert "largest coordinates" in recording.metadata["sensor_size_source"]
    stream = iter_events(samples_dir / "ncars_sample_tonic.dat")
    assert stream.sensor_size == recording.sensor_size


def test_evt3_sample_time_span_not_inflated(samples_dir):
    recording = read_events(samples_dir / "prophesee_evt3_gen41_sample.raw")
    span = int(recording.events["t"][-1] - recording.events["t"][0])
    # A decoder that adds 4,096 µs on every TIME_LOW decrease reports about 53.9 ms.
    assert 8_700 <= span <= 8_900
    assert recording.unwrapped == 0


def test_aedat2_header_only_sample_has_no_events(samples_dir):
    # The file stops inside jAER's preferences block, after a complete line.
    path = samples_dir / "aedat2_header_only.aedat"
    recording = read_events(path)
    assert recording.format == "aedat2"
    assert recording.events.dtype == EVENT_DTYPE
    assert len(recording.events) == 0
    assert recording.sensor_size == (346, 260, 2)
    assert recording.metadata["camera"] == "eu.seebetter.ini.chips.davis.Davis346red"


def test_aedat2_header_cut_mid_line_has_no_events(tmp_path):
    path = write(tmp_path, "cut_header.aedat", aedat2_header() + b"#Start of Preferences for th")
    with pytest.warns(UserWarning, match="ends inside a header line"):
        recording = read_events(path)
    assert len(recording.events) == 0
    assert recording.events.dtype == EVENT_DTYPE
    assert recording.metadata["header_cut_off"] is True


@pytest.mark.parametrize("name", [s[0] for s in SAMPLES])
def test_sample_file_chunked_equals_whole(samples_dir, name):
    if name.endswith(".aedat4"):
        pytest.importorskip("aedat", reason="AEDAT 4.0 needs the aedat package (the dvs extra)")
    path = samples_dir / name
    whole = read_events(path).events
    small = whole.size < 10_000
    # Read sizes that are no multiple of the record size split records between reads.
    for chunk_events, read_size in [(7, 1002), (4096, 4099), (65536, 65536)] + ([(1, 5), (3, 6)] if small else []):
        assert np.array_equal(chunked(path, chunk_events, read_size), whole), (chunk_events, read_size)


def test_nmnist_real_files(nmnist_files):
    for path, label in nmnist_files[:50]:
        recording = read_events(path)
        assert len(recording.events) == path.stat().st_size // 5
        assert recording.sensor_size == (34, 34, 2)
        assert recording.events["t"][-1] < 400_000
        assert path.parent.name == str(label)


def test_nmnist_against_tonic(samples_dir, nmnist_files):
    tonic_io = pytest.importorskip("tonic.io", reason="tonic is an optional cross-check")
    for path in [samples_dir / "nmnist_sample_tonic.bin"] + [p for p, _ in nmnist_files[::50]]:
        expected = tonic_io.read_mnist_file(str(path), dtype=tonic_io.events_struct)
        events = read_events(path).events
        for name in "xytp":
            assert np.array_equal(events[name].astype(np.int64), expected[name].astype(np.int64)), (path, name)


def test_aedat4_against_tonic(samples_dir):
    pytest.importorskip("aedat", reason="AEDAT 4.0 needs the aedat package (the dvs extra)")
    tonic_io = pytest.importorskip("tonic.io", reason="tonic is an optional cross-check")
    expected = tonic_io.read_aedat4(str(samples_dir / "dvxplorer_sample.aedat4"))
    events = read_events(samples_dir / "dvxplorer_sample.aedat4").events
    for ours, theirs in [("x", "x"), ("y", "y"), ("t", "t"), ("p", "on")]:
        assert np.array_equal(events[ours].astype(np.int64), expected[theirs].astype(np.int64)), ours


@pytest.mark.parametrize(
    "name, encoding",
    [
        ("prophesee_evt2_gen3_sparklers.raw", "evt2"),
        ("prophesee_evt3_gen41_sample.raw", "evt3"),
        ("NCARS_obj_004397_td.dat", "dat"),
        ("ncars_sample_tonic.dat", "dat"),
    ],
)
def test_prophesee_against_expelliarmus(samples_dir, name, encoding):
    expelliarmus = pytest.importorskip("expelliarmus", reason="expelliarmus is an optional cross-check")
    expected = expelliarmus.Wizard(encoding=encoding).read(str(samples_dir / name))
    events = read_events(samples_dir / name).events
    assert len(events) == len(expected)
    for field in "xyp":
        assert np.array_equal(events[field].astype(np.int64), expected[field].astype(np.int64)), field
    if encoding == "evt3":
        # expelliarmus 1.1.12 adds 4,096 µs at every TIME_LOW decrease, so only
        # the first timestamp agrees.
        assert events["t"][0] == expected["t"][0]
    else:
        assert np.array_equal(events["t"], expected["t"])


def test_evt3_sample_against_reference(samples_dir):
    path = samples_dir / "prophesee_evt3_gen41_sample.raw"
    data = path.read_bytes()
    start = data.index(b"% system_ID 48\n") + len(b"% system_ID 48\n")
    expected, dropped = reference_evt3(np.frombuffer(data[start:], dtype="<u2").astype(int).tolist())
    recording = read_events(path)
    assert np.array_equal(recording.events, expected)
    assert recording.dropped_backward == dropped == 0


# ------------------------------------------------------------------ crafted: three events over 500 µs

THREE = [(1, 2, 1, 100), (3, 4, 0, 350), (5, 6, 1, 600)]  # (x, y, p, t)
THREE_EXPECTED = [(x, y, t, p) for x, y, p, t in THREE]


def three_event_files(tmp_path: Path) -> dict[str, Path]:
    """Write each format with the events of THREE; return the paths by format name."""
    paths = {
        "nmnist": write(tmp_path, "three.bin", nmnist_bytes(THREE)),
        "aedat2": write(
            tmp_path, "three.aedat",
            aedat2_bytes([dvs128_address(x, y, p) for x, y, p, _ in THREE], [t for *_, t in THREE]),
        ),
        "aedat3": write(tmp_path, "three_v3.aedat", aedat3_header() + aedat3_polarity_packet(THREE)),
        "dat": write(tmp_path, "three.dat", dat_bytes(THREE, (304, 240))),
    }
    evt2_words = []
    for x, y, p, t in THREE:
        evt2_words += [evt2_time_high(t), evt2_cd(x, y, p, t)]
    paths["evt2"] = write(tmp_path, "three_evt2.raw", evt2_bytes(evt2_words, ("% geometry 640x480",)))
    evt3_words = []
    for x, y, p, t in THREE:
        evt3_words += evt3_time(t) + [evt3_addr_y(y), evt3_addr_x(x, p)]
    paths["evt3"] = write(tmp_path, "three_evt3.raw", evt3_bytes(evt3_words, ("% geometry 1280x720",)))
    events = np.zeros(3, dtype=[("t", "<f8"), ("p", "?"), ("x", "<u2"), ("y", "<i8")])
    for row, (x, y, p, t) in enumerate(THREE):
        events[row] = (t, bool(p), x, y)
    np.save(tmp_path / "three.npy", events)
    paths["npy"] = tmp_path / "three.npy"
    np.savez_compressed(tmp_path / "three.npz", events=events, sensor_size=np.array([34, 34, 2]))
    paths["npz"] = tmp_path / "three.npz"
    return paths


def test_three_events_every_format(tmp_path):
    paths = three_event_files(tmp_path)
    assert set(paths) == set(FORMATS) - {"aedat4"}
    for format, path in paths.items():
        assert detect_format(path) == format
        recording = read_events(path)
        assert recording.format == format
        assert fields(recording.events) == THREE_EXPECTED, format
        assert int(recording.events["t"][-1] - recording.events["t"][0]) == 500
        for chunk_events in (1, 2, 7):
            assert np.array_equal(chunked(path, chunk_events, read_size=1), recording.events), (format, chunk_events)


def test_three_events_sensor_sizes(tmp_path):
    paths = three_event_files(tmp_path)
    expected = {
        "nmnist": (34, 34, 2), "aedat2": (128, 128, 2), "aedat3": (128, 128, 2), "dat": (304, 240, 2),
        "evt2": (640, 480, 2), "evt3": (1280, 720, 2), "npy": (6, 7, 2), "npz": (34, 34, 2),
    }
    for format, path in paths.items():
        assert read_events(path).sensor_size == expected[format], format
        assert iter_events(path).sensor_size == expected[format], format


# ------------------------------------------------------------------ crafted: zero events


def zero_event_files(tmp_path: Path) -> dict[str, Path]:
    empty = np.zeros(0, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    np.save(tmp_path / "empty.npy", empty)
    np.savez(tmp_path / "empty.npz", events=empty)
    return {
        "nmnist": write(tmp_path, "empty.bin", b""),
        "aedat2": write(tmp_path, "empty.aedat", aedat2_header()),
        "aedat3": write(tmp_path, "empty_v3.aedat", aedat3_header()),
        "dat": write(tmp_path, "empty.dat", dat_bytes([])),
        "dat-header-only": write(tmp_path, "header_only.dat", b"% Data file containing CD events\n% Version 2\n"),
        "evt2": write(tmp_path, "empty_evt2.raw", evt2_bytes([])),
        "evt3": write(tmp_path, "empty_evt3.raw", evt3_bytes([])),
        "evt3-no-time": write(tmp_path, "no_time.raw", evt3_bytes([evt3_addr_y(3), evt3_addr_x(4, 1)])),
        "npy": tmp_path / "empty.npy",
        "npz": tmp_path / "empty.npz",
    }


def test_zero_events_same_dtype_every_format(tmp_path):
    for name, path in zero_event_files(tmp_path).items():
        recording = read_events(path)
        assert recording.events.dtype == EVENT_DTYPE, name
        assert recording.events.shape == (0,), name
        assert list(iter_events(path)) == [], name
        assert recording.dropped_backward == 0


def test_zero_events_unknown_sensor_is_zero_size(tmp_path):
    recording = read_events(zero_event_files(tmp_path)["dat"])
    assert recording.sensor_size == (0, 0, 2)


# ------------------------------------------------------------------ crafted: timestamps


def test_aedat2_timestamps_unwrap_past_32_bits(tmp_path):
    times = [2**32 - 10, 2**32 - 5, 3, 8]
    addresses = [dvs128_address(10, 20, 1)] * 4
    path = write(tmp_path, "wrap.aedat", aedat2_bytes(addresses, times))
    recording = read_events(path)
    assert recording.events["t"].tolist() == [2**32 - 10, 2**32 - 5, 2**32 + 3, 2**32 + 8]
    assert recording.unwrapped == 1
    assert recording.dropped_backward == 0
    for chunk_events, read_size in [(1, 8), (3, 16), (2, 1)]:
        assert np.array_equal(chunked(path, chunk_events, read_size), recording.events)


def test_evt3_time_crosses_2_pow_24(tmp_path):
    before = 2**24 - 3
    after = 2**24 + 5  # stored as 5 after the 24-bit counter wraps
    words = evt3_time(before) + [evt3_addr_y(7), evt3_addr_x(1, 1)]
    words += evt3_time(2**24 - 1) + [evt3_addr_x(2, 0)]
    words += evt3_time(after) + [evt3_addr_x(3, 1), evt3_vect_base_x(10, 0), evt3_vect_12(0b101)]
    path = write(tmp_path, "wrap_evt3.raw", evt3_bytes(words, ("% format EVT3;height=720;width=1280",)))
    recording = read_events(path)
    assert recording.events["t"].tolist() == [before, 2**24 - 1, after, after, after]
    assert recording.events["x"].tolist() == [1, 2, 3, 10, 12]
    assert recording.unwrapped == 1
    assert recording.sensor_size == (1280, 720, 2)
    for chunk_events, read_size in [(1, 2), (2, 4), (4, 3)]:
        assert np.array_equal(chunked(path, chunk_events, read_size), recording.events)


def test_evt3_backward_glitch_dropped_and_counted(tmp_path):
    # TIME_LOW jumps 12 µs ahead after a repeated TIME_HIGH, as in the Gen4.1
    # sample, but here an event is stamped with the early time.
    words = evt3_time(1000) + [evt3_addr_y(1), evt3_addr_x(1, 1)]
    words += [evt3_time_high(1000), evt3_time_low(1012), evt3_addr_x(2, 1)]
    words += [evt3_time_low(1001), evt3_addr_x(3, 1), evt3_time_low(1013), evt3_addr_x(4, 1)]
    path = write(tmp_path, "glitch.raw", evt3_bytes(words, ("% geometry 64x64",)))
    with pytest.warns(UserWarning, match="dropped 1 events whose timestamps went backward"):
        recording = read_events(path)
    assert recording.events["x"].tolist() == [1, 2, 4]
    assert recording.events["t"].tolist() == [1000, 1012, 1013]
    assert recording.dropped_backward == 1


def test_evt3_new_time_high_resets_time_low(tmp_path):
    words = evt3_time(4095) + [evt3_addr_y(1), evt3_addr_x(1, 1), evt3_time_high(4096), evt3_addr_x(2, 0)]
    recording = read_events(write(tmp_path, "reset.raw", evt3_bytes(words, ("% geometry 64x64",))))
    assert recording.events["t"].tolist() == [4095, 4096]


def test_evt3_vectors_and_skipped_words(tmp_path):
    words = evt3_time(50) + [evt3_addr_y(9), evt3_vect_base_x(100, 1), evt3_vect_12(0b100000000001)]
    words += [0x7005, 0xA001, 0xE123, 0xF456, evt3_vect_8(0b10000001), evt3_addr_x(5, 0)]
    recording = read_events(write(tmp_path, "vectors.raw", evt3_bytes(words, ("% geometry 320x240",))))
    assert fields(recording.events) == [
        (100, 9, 50, 1), (111, 9, 50, 1), (112, 9, 50, 1), (119, 9, 50, 1), (5, 9, 50, 0),
    ]


def test_evt2_time_high_and_low_bits(tmp_path):
    words = [evt2_time_high(2**20 + 64), evt2_cd(3, 4, 1, 2**20 + 64 + 5), 0xA0000001, 0xE0000000]
    words += [evt2_time_high(2**20 + 128), evt2_cd(5, 6, 0, 2**20 + 130)]
    recording = read_events(write(tmp_path, "t.raw", evt2_bytes(words, ("% geometry 640x480",))))
    assert fields(recording.events) == [(3, 4, 2**20 + 69, 1), (5, 6, 2**20 + 130, 0)]


def test_nmnist_overflow_marker_adds_2_pow_13(tmp_path):
    data = nmnist_bytes([(1, 1, 1, 10), (255, 240, 0, 0), (2, 2, 0, 5)])
    path = write(tmp_path, "marker.bin", data)
    recording = read_events(path)
    expected, _ = reference_nmnist(data)
    assert np.array_equal(recording.events, expected)
    assert recording.events["t"].tolist() == [10, 2**13 + 5]
    assert recording.unwrapped == 1


# ------------------------------------------------------------------ crafted: headers and layouts


def test_aedat2_crlf_and_lf_headers(tmp_path):
    addresses = [dvs128_address(0, 0, 1), dvs128_address(127, 127, 0)]
    for line_end in (b"\r\n", b"\n"):
        path = write(tmp_path, "h.aedat", aedat2_bytes(addresses, [5, 9], aedat2_header(line_end=line_end)))
        recording = read_events(path)
        assert fields(recording.events) == [(0, 0, 5, 1), (127, 127, 9, 0)]
        assert recording.metadata["header_lines"] == 5


def test_aedat2_header_byte_like_hash_is_data(tmp_path):
    # The first record's address byte is 0x23 ('#'), but the "line" it starts is not text.
    address = davis_address(3, 260 - 1 - 140, 1, 346, 260)
    assert address >> 24 == 0x23
    header = aedat2_header("eu.seebetter.ini.chips.davis.Davis346red")
    recording = read_events(write(tmp_path, "hash.aedat", aedat2_bytes([address], [17], header)))
    assert fields(recording.events) == [(3, 119, 17, 1)]


def test_aedat2_without_chip_assumes_dvs128(tmp_path):
    path = write(tmp_path, "nochip.aedat", aedat2_bytes([dvs128_address(4, 5, 0)], [1], aedat2_header(chip=None)))
    recording = read_events(path)
    assert recording.sensor_size == (128, 128, 2)
    assert "assumed" in recording.metadata["aedat2_layout"]
    assert fields(recording.events) == [(4, 5, 1, 0)]


def test_aedat2_dvs128_skips_special_events(tmp_path):
    addresses = [dvs128_address(1, 2, 1), 0x8000, 0x80000000 | dvs128_address(3, 3, 0)]
    recording = read_events(write(tmp_path, "special.aedat", aedat2_bytes(addresses, [1, 2, 3])))
    assert fields(recording.events) == [(1, 2, 1, 1)]


@pytest.mark.parametrize(
    "chip, size",
    [
        ("eu.seebetter.ini.chips.davis.DAVIS240C", (240, 180)),
        ("eu.seebetter.ini.chips.davis.Davis346blue", (346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis640", (640, 480)),
    ],
)
def test_aedat2_davis_layout(tmp_path, chip, size):
    width, height = size
    addresses = [
        davis_address(0, 0, 1, width, height),
        davis_address(width - 1, height - 1, 0, width, height),
        0x80000000 | 123,  # APS sample
        0x80000C00,  # IMU sample
        (1 << 10) | davis_address(5, 5, 0, width, height),  # external input event
    ]
    path = write(tmp_path, "davis.aedat", aedat2_bytes(addresses, [1, 2, 3, 4, 5], aedat2_header(chip)))
    recording = read_events(path)
    assert recording.sensor_size == (width, height, 2)
    assert fields(recording.events) == [(0, 0, 1, 1), (width - 1, height - 1, 2, 0)]


def test_aedat2_unknown_chip_rejected(tmp_path):
    path = write(tmp_path, "chip.aedat", aedat2_bytes([], [], aedat2_header("org.example.MysteryChip")))
    with pytest.raises(InputError, match="MysteryChip.*supported chip classes"):
        read_events(path)


def test_aedat3_skips_other_packets_and_invalid_events(tmp_path):
    data = aedat3_header() + aedat3_other_packet(0, 3)
    data += aedat3_polarity_packet([(1, 2, 1, 10), (3, 4, 0, 20)], invalid={0})
    data += aedat3_other_packet(2, 1, 40) + aedat3_polarity_packet([(5, 6, 1, 7)], ts_overflow=1)
    path = write(tmp_path, "gesture.aedat", data)
    recording = read_events(path)
    assert fields(recording.events) == [(3, 4, 20, 0), (5, 6, 2**31 + 7, 1)]
    assert recording.sensor_size == (128, 128, 2)
    for chunk_events, read_size in [(1, 1), (2, 9)]:
        assert np.array_equal(chunked(path, chunk_events, read_size), recording.events)


def test_aedat3_0_rejected(tmp_path):
    path = write(tmp_path, "old.aedat", aedat3_header(version=b"3.0") + aedat3_polarity_packet(THREE))
    with pytest.raises(InputError, match=r"old\.aedat, byte offset 0: AEDAT 3\.0 is not supported.*DV software"):
        detect_format(path)
    with pytest.raises(InputError, match="AEDAT 3.0 is not supported"):
        read_events(path, format="aedat3")


@pytest.mark.parametrize("version", [b"1.0", b"5.0"])
def test_aedat_unknown_version_rejected(tmp_path, version):
    path = write(tmp_path, "v.aedat", b"#!AER-DAT" + version + b"\r\n")
    with pytest.raises(InputError, match=f"AEDAT version {version.decode()} is not supported"):
        read_events(path)


def test_aedat_version_mismatch_with_format(tmp_path):
    path = write(tmp_path, "v2.aedat", aedat2_header())
    with pytest.raises(InputError, match="is AEDAT 2.0, not AEDAT 3.1"):
        read_events(path, format="aedat3")


def test_raw_unsupported_encoding_rejected(tmp_path):
    path = write(tmp_path, "evt4.raw", raw_header("4.0") + b"\x00" * 8)
    with pytest.raises(InputError, match="encoding 'evt4' is not supported"):
        read_events(path)


def test_raw_without_encoding_needs_format(tmp_path):
    data = b"% Date 2020-01-01\n% geometry 64x64\n" + np.array(evt3_time(5) + [0, evt3_addr_x(1, 1)], "<u2").tobytes()
    path = write(tmp_path, "noenc.raw", data)
    with pytest.raises(InputError, match="pass format='evt2', format='evt3'"):
        read_events(path)
    assert fields(read_events(path, format="evt3").events) == [(1, 0, 5, 1)]


def test_format_mismatch_with_header(tmp_path):
    path = write(tmp_path, "e2.raw", evt2_bytes([]))
    with pytest.raises(InputError, match="declares evt2, not evt3"):
        read_events(path, format="evt3")


def test_npz_field_order_dtypes_and_polarity(tmp_path):
    events = np.zeros(3, dtype=[("p", "<i4"), ("t", "<u4"), ("y", "<u1"), ("x", "<f4")])
    events["p"] = [-1, 1, -1]
    events["t"] = [5, 6, 7]
    events["y"] = [0, 1, 2]
    events["x"] = [9, 8, 7]
    np.savez(tmp_path / "a.npz", events=events, other=np.arange(3))
    recording = read_events(tmp_path / "a.npz")
    assert fields(recording.events) == [(9, 0, 5, 0), (8, 1, 6, 1), (7, 2, 7, 0)]
    assert recording.sensor_size == (10, 3, 2)


# ------------------------------------------------------------------ errors


def truncated_files(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    """Return files whose last record is cut, with the byte offset where it starts."""
    aedat2 = aedat2_bytes([dvs128_address(1, 1, 1)] * 2, [1, 2])
    aedat3 = aedat3_header() + aedat3_polarity_packet(THREE)
    dat = dat_bytes(THREE)
    evt2 = evt2_bytes([evt2_time_high(0), evt2_cd(1, 1, 1, 1)])
    evt3 = evt3_bytes(evt3_time(0))
    events = np.zeros(4, dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    np.save(tmp_path / "cut_source.npy", events)
    npy = (tmp_path / "cut_source.npy").read_bytes()
    return {
        "nmnist": (write(tmp_path, "cut.bin", nmnist_bytes(THREE)[:-2]), 10),
        "aedat2": (write(tmp_path, "cut.aedat", aedat2[:-3]), len(aedat2) - 8),
        "aedat3": (write(tmp_path, "cut_v3.aedat", aedat3[:-1]), len(aedat3_header())),
        "dat": (write(tmp_path, "cut.dat", dat[:-5]), len(dat) - 8),
        "evt2": (write(tmp_path, "cut_evt2.raw", evt2[:-1]), len(evt2) - 4),
        "evt3": (write(tmp_path, "cut_evt3.raw", evt3[:-1]), len(evt3) - 2),
        "npy": (write(tmp_path, "cut.npy", npy[:-3]), len(npy) - 13),
    }


def test_truncated_last_record_names_file_and_offset(tmp_path):
    for format, (path, offset) in truncated_files(tmp_path).items():
        with pytest.raises(InputError) as caught:
            read_events(path)
        message = str(caught.value)
        assert str(path) in message, format
        assert f"byte offset {offset}:" in message, (format, message)
        assert "truncated" in message, format
        with pytest.raises(InputError, match="truncated"):
            list(iter_events(path, chunk_events=1, read_size=1))


def test_png_renamed_to_aedat_rejected(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)
    path = write(tmp_path, "picture.aedat", png)
    with pytest.raises(InputError, match=r"picture\.aedat, byte offset 0: not a valid \.aedat file.*#!AER-DAT"):
        read_events(path)
    with pytest.raises(InputError, match="not an AEDAT file"):
        read_events(path, format="aedat2")


def test_unknown_suffix_and_empty_file_rejected(tmp_path):
    with pytest.raises(InputError, match="matches no known header"):
        read_events(write(tmp_path, "x.xyz", b"hello"))
    with pytest.raises(InputError, match="the file is empty"):
        read_events(write(tmp_path, "x.raw", b""))
    with pytest.raises(InputError, match="format='bogus' is unknown"):
        read_events(write(tmp_path, "y.bin", b""), format="bogus")


def test_coordinates_outside_sensor_name_offset_and_value(tmp_path):
    path = write(tmp_path, "big.bin", nmnist_bytes([(1, 1, 1, 1), (40, 3, 0, 2)]))
    with pytest.raises(InputError, match=r"big\.bin, byte offset 5: event at x=40, y=3 is outside the 34x34 sensor.*N-Caltech101"):
        read_events(path)
    recording = read_events(path, sensor_size=(240, 180))
    assert recording.sensor_size == (240, 180, 2)
    words = evt3_time(0) + [evt3_addr_y(700), evt3_addr_x(3, 1)]
    path = write(tmp_path, "small.raw", evt3_bytes(words, ("% geometry 640x480",)))
    offset = len(raw_header("3.0", ("% geometry 640x480",))) + 6
    with pytest.raises(InputError, match=f"byte offset {offset}: event at x=3, y=700 is outside the 640x480"):
        list(iter_events(path))


def test_reserved_word_types_rejected(tmp_path):
    path = write(tmp_path, "bad3.raw", evt3_bytes(evt3_time(0) + [0x1234]))
    offset = len(raw_header("3.0")) + 4
    with pytest.raises(InputError, match=f"byte offset {offset}: word 0x1234 has type 0x1, which EVT 3.0 does not define"):
        read_events(path)
    path = write(tmp_path, "bad2.raw", evt2_bytes([evt2_time_high(0), 0x30000000]))
    with pytest.raises(InputError, match="word 0x30000000 has type 0x3, which EVT 2.0 does not define"):
        read_events(path)


def test_dat_unsupported_type_and_polarity(tmp_path):
    with pytest.raises(InputError, match="event type 14 of size 8 is not supported"):
        read_events(write(tmp_path, "trig.dat", dat_bytes([], event_type=14)))
    with pytest.raises(InputError, match="polarity 3 is invalid"):
        read_events(write(tmp_path, "pol.dat", dat_bytes([(1, 1, 3, 5)])))


def test_npy_invalid_values(tmp_path):
    events = np.zeros(2, dtype=[("x", "<f8"), ("y", "<i4"), ("t", "<f8"), ("p", "<i1")])
    events["t"] = [1.0, 2.5]
    np.save(tmp_path / "f.npy", events)
    with pytest.raises(InputError, match=r"field 't' has the value 2\.5, which is not a whole number"):
        read_events(tmp_path / "f.npy")
    events["t"] = [1, 2]
    events["p"] = [0, 2]
    np.save(tmp_path / "p.npy", events)
    with pytest.raises(InputError, match="polarity 2 is invalid"):
        read_events(tmp_path / "p.npy")
    np.save(tmp_path / "plain.npy", np.arange(4))
    with pytest.raises(InputError, match="not a 1-D structured event array"):
        read_events(tmp_path / "plain.npy")


def test_invalid_arguments(tmp_path):
    path = write(tmp_path, "a.bin", nmnist_bytes(THREE))
    with pytest.raises(InputError, match="chunk_events=0 is invalid"):
        iter_events(path, chunk_events=0)
    with pytest.raises(InputError, match="sensor_size=.* is invalid"):
        read_events(path, sensor_size=(34, 34, 3))
    with pytest.raises(InputError, match="read_size=0 is invalid"):
        read_events(path, read_size=0)


def test_aedat4_without_aedat_package(tmp_path, samples_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "aedat", None)
    with pytest.raises(MissingExtraError, match=r'pip install "reverb-edge\[dvs\]"'):
        read_events(samples_dir / "dvxplorer_sample.aedat4")


def test_aedat4_truncated_names_packet_offset(tmp_path, samples_dir):
    pytest.importorskip("aedat", reason="AEDAT 4.0 needs the aedat package (the dvs extra)")
    data = (samples_dir / "dvxplorer_sample.aedat4").read_bytes()
    path = write(tmp_path, "cut.aedat4", data[:500_000])
    with pytest.raises(InputError, match=r"cut\.aedat4, byte offset \d+: truncated last packet"):
        read_events(path)
    with pytest.raises(InputError, match="not an AEDAT 4.0 file"):
        read_events(write(tmp_path, "v2.aedat4", aedat2_header()), format="aedat4")


# ------------------------------------------------------------------ memory


def test_chunked_reading_memory_is_bounded(tmp_path):
    rng = np.random.default_rng(20260704)
    count = 4_000_000
    records = np.zeros((count, 5), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 34, count)
    records[:, 1] = rng.integers(0, 34, count)
    times = np.sort(rng.integers(0, 2**23, count))
    records[:, 2] = (times >> 16) | (rng.integers(0, 2, count) << 7)
    records[:, 3] = (times >> 8) & 0xFF
    records[:, 4] = times & 0xFF
    path = write(tmp_path, "large.bin", records.tobytes())
    words = np.tile(np.array(evt3_time(0)[:1] + [evt3_addr_y(1), evt3_vect_base_x(0, 1)] + [evt3_vect_12(0xFFF)] * 20, "<u2"), 20_000)
    raw_path = write(tmp_path, "large.raw", evt3_bytes(words, ("% geometry 2048x2048",)))
    raw_events = 20_000 * 20 * 12

    for file, events_in_file in [(path, count), (raw_path, raw_events)]:
        decoded_bytes = events_in_file * EVENT_DTYPE.itemsize
        tracemalloc.start()
        total = 0
        for chunk in iter_events(file, chunk_events=65536, sensor_size=(2048, 2048)):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert total == events_in_file
        assert peak < decoded_bytes / 8, (file.name, peak, decoded_bytes)


def test_event_stream_reiterates_and_closes(tmp_path):
    path = write(tmp_path, "a.bin", nmnist_bytes(THREE))
    stream = iter_events(path, chunk_events=2)
    assert isinstance(stream, EventStream)
    first = [chunk.copy() for chunk in stream]
    second = list(stream)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        iterator = iter(stream)
        next(iterator)
        del iterator
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_bin_starting_with_percent_is_nmnist(tmp_path):
    path = write(tmp_path, "caltech.bin", nmnist_bytes([(37, 10, 1, 5)]))
    assert path.read_bytes()[:1] == b"%"
    assert detect_format(path) == "nmnist"
    assert fields(read_events(path, sensor_size=(240, 180)).events) == [(37, 10, 5, 1)]
