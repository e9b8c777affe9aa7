"""Tests of the .reverb container: round trips, safetensors interoperability and corrupt files."""

import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reverb_edge import container
from reverb_edge.container import (
    MAX_HEADER_BYTES,
    peek_metadata,
    read_container,
    write_container,
)
from reverb_edge.errors import ModelFileError

safetensors_numpy = pytest.importorskip("safetensors.numpy")

DTYPES = [np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.uint64]
SHAPES = [(), (0,), (1,), (7,), (2, 3), (3, 0, 2), (2, 1, 3, 2)]


def random_array(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    """Return an array that uses the full value range of its dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        array = np.asarray(rng.standard_normal(shape) * 1e3, dtype=dtype)
        if array.size >= 3:
            array.flat[:3] = [np.nan, np.inf, -np.inf]
        return array
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def craft_file(path: Path, header: object, data: bytes = b"", header_length: int | None = None) -> Path:
    """Write a file with a hand-made header; ``header`` is a JSON value or raw bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    length = len(raw) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


def valid_file(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "model.reverb"
    tensors = {
        "weights": random_array(rng, np.float32, (4, 3)),
        "bits": random_array(rng, np.uint64, (2,)),
        "labels": random_array(rng, np.uint8, (5,)),
        "empty": np.zeros((0, 2), np.int32),
    }
    write_container(path, tensors, {"format": "reverb", "version": "1"})
    return path


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.name.endswith(".tmp")]


# --------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "copy"])
def test_round_trip_dtype_and_shape(tmp_path, rng, dtype, shape, use_mmap):
    array = random_array(rng, dtype, shape)
    path = tmp_path / "one.reverb"
    write_container(path, {"x": array}, {})

    with read_container(path, use_mmap=use_mmap) as model:
        result = model.tensors["x"]
        assert result.dtype == array.dtype
        assert result.shape == array.shape
        assert result.tobytes() == array.tobytes()
        assert model.metadata == {}


def test_round_trip_many_tensors(tmp_path, rng):
    tensors = {f"t{index}_{np.dtype(dtype).name}": random_array(rng, dtype, (3, index + 1))
               for index, dtype in enumerate(DTYPES)}
    metadata = {"name": "digits – ünïcode", "json": '{"a": [1, 2]}', "": "empty key"}
    path = tmp_path / "many.reverb"
    write_container(path, tensors, metadata)

    with read_container(path) as model:
        assert model.metadata == metadata
        assert sorted(model.tensors) == sorted(tensors)
        for name, array in tensors.items():
            np.testing.assert_array_equal(model.tensors[name], array)
        assert model.file_size == path.stat().st_size
        assert peek_metadata(path) == metadata


def test_write_stores_little_endian(tmp_path):
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    path = tmp_path / "be.reverb"
    write_container(path, {"x": big_endian}, {})

    with read_container(path) as model:
        np.testing.assert_array_equal(model.tensors["x"], big_endian)
        assert model.tensors["x"].dtype == np.dtype("<i4")
    loaded = safetensors_numpy.load_file(path)
    np.testing.assert_array_equal(loaded["x"], big_endian)


def test_write_accepts_non_contiguous(tmp_path):
    array = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2].T
    path = tmp_path / "strided.reverb"
    write_container(path, {"x": array}, {})

    with read_container(path) as model:
        np.testing.assert_array_equal(model.tensors["x"], array)


def test_layout_aligned_and_padded(tmp_path, rng):
    tensors = {
        "a_byte": random_array(rng, np.uint8, (3,)),
        "b_float": random_array(rng, np.float32, (3,)),
        "c_double": random_array(rng, np.float64, (3,)),
        "d_int": random_array(rng, np.int32, (1,)),
    }
    path = tmp_path / "aligned.reverb"
    write_container(path, tensors, {"k": "v"})

    raw = path.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    buffer_start = 8 + header_size
    assert buffer_start % 8 == 0
    assert raw[8 + header_size - 1 : 8 + header_size] in (b" ", b"}")
    for name, array in tensors.items():
        begin = header[name]["data_offsets"][0]
        assert (buffer_start + begin) % array.dtype.itemsize == 0, name
    with read_container(path) as model:
        assert model.header_size == header_size
        for array in model.tensors.values():
            assert array.flags.aligned
            assert array.flags.c_contiguous


def test_misaligned_tensor_copied(tmp_path):
    # Another writer may put a 1-byte tensor before a 4-byte one.
    values = np.array([1.5, -2.0], dtype="<f4")
    header = {
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = craft_file(tmp_path / "misaligned.reverb", raw, b"\x01\x02\x03" + values.tobytes())

    for use_mmap in (True, False):
        with read_container(path, use_mmap=use_mmap) as model:
            result = model.tensors["b"]
            np.testing.assert_array_equal(result, values)
            assert result.flags.aligned
            assert not result.flags.writeable


# --------------------------------------------------------------------------
# safetensors interoperability


def test_safetensors_file_read_by_us(tmp_path, rng):
    tensors = {f"{np.dtype(dtype).name}_{index}": random_array(rng, dtype, shape)
               for index, shape in enumerate(SHAPES) for dtype in DTYPES}
    metadata = {"source": "safetensors", "note": "ü"}
    path = tmp_path / "from_safetensors.safetensors"
    safetensors_numpy.save_file(tensors, path, metadata=metadata)

    with read_container(path) as model:
        assert model.metadata == metadata
        assert sorted(model.tensors) == sorted(tensors)
        for name, array in tensors.items():
            assert model.tensors[name].shape == array.shape, name
            assert model.tensors[name].tobytes() == array.tobytes(), name


def test_our_file_read_by_safetensors(tmp_path, rng):
    from safetensors import safe_open

    tensors = {f"{np.dtype(dtype).name}_{index}": random_array(rng, dtype, shape)
               for index, shape in enumerate(SHAPES) for dtype in DTYPES}
    metadata = {"format": "reverb", "note": "ü"}
    path = tmp_path / "ours.reverb"
    write_container(path, tensors, metadata)

    loaded = safetensors_numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert loaded[name].tobytes() == array.tobytes(), name
    with safe_open(path, framework="np") as handle:
        assert handle.metadata() == metadata


# --------------------------------------------------------------------------
# Read-only arrays and closing


def test_mmap_arrays_read_only(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    with read_container(path, use_mmap=True) as model:
        weights = model.tensors["weights"]
        assert not weights.flags.writeable
        with pytest.raises(ValueError):
            weights[0, 0] = 1.0
        with pytest.raises(ValueError):
            weights.flags.writeable = True


def test_copy_arrays_read_only(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    with read_container(path, use_mmap=False) as model:
        with pytest.raises(ValueError):
            model.tensors["weights"][0, 0] = 1.0


def test_close_keeps_held_arrays_valid(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    model = read_container(path)
    weights = model.tensors["weights"]
    expected = weights.copy()
    model.close()

    assert model.tensors == {}
    np.testing.assert_array_equal(weights, expected)
    model.close()


def test_close_unmaps_without_views(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    model = read_container(path)
    mapping = model._mapping
    model.close()

    assert mapping.closed


def test_replacing_file_keeps_open_map(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    with read_container(path) as model:
        old = model.tensors["weights"].copy()
        write_container(path, {"weights": np.zeros((4, 3), np.float32)}, {})
        np.testing.assert_array_equal(model.tensors["weights"], old)
    with read_container(path) as model:
        assert not model.tensors["weights"].any()


# --------------------------------------------------------------------------
# Writer input checks and atomic replacement


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        ({"x": np.array([object()], dtype=object)}, {}, "dtype object"),
        ({"x": np.zeros(2, dtype=bool)}, {}, "dtype bool"),
        ({"x": np.zeros(2, dtype=np.float16)}, {}, "dtype float16"),
        ({"x": np.zeros(2, dtype=np.int16)}, {}, "dtype int16"),
        ({"x": np.zeros(2, dtype=np.complex64)}, {}, "dtype complex64"),
        ({"x": [1, 2]}, {}, "expected a numpy array"),
        ({3: np.zeros(2)}, {}, "tensor name 3"),
        ({"__metadata__": np.zeros(2)}, {}, "reserved"),
        ({"x": np.zeros((1,) * 9)}, {}, "9 dimensions"),
        ({"x": np.zeros(2)}, {"version": 1}, "'version': 1"),
        ({"x": np.zeros(2)}, {1: "one"}, "1: 'one'"),
        ({"x": np.zeros(2)}, ["not", "a", "dict"], "metadata must be a dict"),
    ],
    ids=["object", "bool", "float16", "int16", "complex", "list", "int-name", "reserved-name",
         "rank-9", "int-metadata-value", "int-metadata-key", "metadata-list"],
)
def test_write_rejects_invalid_input(tmp_path, tensors, metadata, message):
    path = tmp_path / "bad.reverb"
    with pytest.raises(ModelFileError, match="cannot write model file") as error:
        write_container(path, tensors, metadata)

    assert message in str(error.value)
    assert str(path) in str(error.value)
    assert not path.exists()
    assert temp_files(tmp_path) == []


def test_write_rejects_oversized_header(tmp_path):
    path = tmp_path / "big-header.reverb"
    with pytest.raises(ModelFileError, match="limit"):
        write_container(path, {}, {"blob": "x" * MAX_HEADER_BYTES})
    assert not path.exists()


def test_failed_write_keeps_previous_file(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    before = path.read_bytes()

    with pytest.raises(ModelFileError):
        write_container(path, {"x": np.array([None], dtype=object)}, {})

    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_failed_fsync_removes_temp_file(tmp_path, rng, monkeypatch):
    path = valid_file(tmp_path, rng)
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container.os, "fsync", failing_fsync)
    with pytest.raises(ModelFileError, match="No space left on device") as error:
        write_container(path, {"x": np.ones(3, np.float32)}, {})

    assert str(path) in str(error.value)
    assert isinstance(error.value.__cause__, OSError)
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_interrupted_write_removes_temp_file(tmp_path, rng, monkeypatch):
    path = valid_file(tmp_path, rng)
    before = path.read_bytes()

    def interrupted_replace(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(container.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        write_container(path, {"x": np.ones(3, np.float32)}, {})

    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_write_into_missing_folder(tmp_path):
    path = tmp_path / "no-such-folder" / "model.reverb"
    with pytest.raises(ModelFileError, match="no-such-folder"):
        write_container(path, {"x": np.ones(3, np.float32)}, {})


def test_write_onto_folder_fails(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(ModelFileError, match="taken"):
        write_container(target, {"x": np.ones(3, np.float32)}, {})
    assert target.is_dir()
    assert temp_files(tmp_path) == []


def test_written_file_mode(tmp_path):
    path = tmp_path / "mode.reverb"
    write_container(path, {"x": np.ones(3, np.float32)}, {})
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------
# Files that are missing, not files, or too short


def test_missing_file(tmp_path):
    path = tmp_path / "missing.reverb"
    with pytest.raises(ModelFileError, match="not found") as error:
        read_container(path)
    assert str(path) in str(error.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder") as error:
        read_container(tmp_path)
    assert str(tmp_path) in str(error.value)


@pytest.mark.parametrize("size", [0, 3, 7])
def test_too_short_file(tmp_path, size):
    path = tmp_path / "short.reverb"
    path.write_bytes(b"\x01" * size)
    with pytest.raises(ModelFileError, match=f"{size} bytes long") as error:
        read_container(path)
    assert str(path) in str(error.value)


def test_peek_metadata_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        peek_metadata(tmp_path / "missing.reverb")


# --------------------------------------------------------------------------
# Crafted corrupt files


def test_truncated_file(tmp_path, rng):
    path = valid_file(tmp_path, rng)
    raw = path.read_bytes()
    for seventh in range(1, 7):
        cut = len(raw) * seventh // 7
        truncated = tmp_path / f"cut{seventh}.reverb"
        truncated.write_bytes(raw[:cut])
        for use_mmap in (True, False):
            with pytest.raises(ModelFileError) as error:
                read_container(truncated, use_mmap=use_mmap)
            assert str(truncated) in str(error.value), cut
        with pytest.raises(ModelFileError):
            peek_metadata(truncated)


def test_header_length_huge(tmp_path):
    path = craft_file(tmp_path / "huge.reverb", {}, header_length=2**63)
    with pytest.raises(ModelFileError, match="9223372036854775808 bytes, more than") as error:
        read_container(path)
    assert "byte 0" in str(error.value)


def test_header_length_past_end(tmp_path):
    path = craft_file(tmp_path / "past.reverb", b"{}      ", header_length=1000)
    with pytest.raises(ModelFileError, match="1000 bytes, but only 8 bytes follow"):
        read_container(path)


# Each case: a header (JSON value or raw bytes), the data buffer, and a part
# of the expected message.
CORRUPT_HEADERS = {
    "invalid-json": (b'{"x": {"dtype": ', b"", "not valid JSON at byte"),
    "json-list": (b'{"x": 1', b"", "not valid JSON"),
    "not-an-object": (b"[1, 2]   ", b"", "the header is a JSON list, expected an object"),
    "string": (b'"text"', b"", "the header is a JSON str, expected an object"),
    "invalid-utf8": (b'{"\xff": 1}', b"", "not valid UTF-8 (byte 10)"),
    "nan": (b'{"__metadata__": {"a": NaN}}', b"", "NaN is not allowed"),
    "duplicate-key": (
        b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}',
        b"\x00",
        "'x' appears more than once",
    ),
    "deep-nesting": (b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}", b"", "nested too deeply"),
    "long-number": (b'{"a": ' + b"9" * 5000 + b"}", b"", "not valid"),
    "entry-not-object": ({"x": [1, 2]}, b"", "tensor 'x' is a JSON list"),
    "unknown-dtype": ({"x": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\x00\x00",
                      "dtype 'BF16'"),
    "negative-dim": ({"x": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}, b"",
                     "non-negative integers"),
    "float-dim": ({"x": {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]}}, b"\x00",
                  "non-negative integers"),
    "bool-dim": ({"x": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\x00",
                 "non-negative integers"),
    "shape-not-list": ({"x": {"dtype": "U8", "shape": 1, "data_offsets": [0, 1]}}, b"\x00",
                       "non-negative integers"),
    "rank-9": ({"x": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}}, b"\x00",
               "9 dimensions"),
    "zero-size-too-large": ({"x": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}, b"",
                            "too large"),
    "missing-key": ({"x": {"dtype": "U8", "shape": [1]}}, b"\x00", "missing keys ['data_offsets']"),
    "unknown-key": ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "order": "C"}},
                    b"\x00", "unknown keys ['order']"),
    "offsets-past-end": ({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\x00\x00",
                         "ends at byte 4 of the data buffer, but the buffer is only 2 bytes"),
    "offsets-reversed": ({"x": {"dtype": "U8", "shape": [0], "data_offsets": [2, 1]}}, b"\x00\x00",
                         "0 <= begin <= end"),
    "offsets-negative": ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, b"",
                         "0 <= begin <= end"),
    "offsets-three": ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, b"\x00",
                      "expected [begin, end]"),
    "size-mismatch": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 4,
                      "has 4 bytes of data, but its shape [2] and dtype F32 need 8"),
    "overlap": (
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
        },
        b"\x00" * 6,
        "overlaps tensor 'a'",
    ),
    "zero-size-inside-tensor": (
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]},
        },
        b"\x00" * 4,
        "tensor 'b'",
    ),
    "gap": (
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]},
        },
        b"\x00" * 6,
        "before tensor 'b' belong to no tensor",
    ),
    "trailing-bytes": ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\x00" * 5,
                       "after the last tensor belong to no tensor"),
    "metadata-not-object": ({"__metadata__": ["a"]}, b"", "'__metadata__' is a JSON list"),
    "metadata-string": ({"__metadata__": "a"}, b"", "'__metadata__' is a JSON str"),
    "metadata-int-value": ({"__metadata__": {"version": 1}}, b"",
                           "metadata value of 'version' is 1, expected a JSON string"),
    "metadata-null-value": ({"__metadata__": {"version": None}}, b"", "expected a JSON string"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_HEADERS))
def test_corrupt_header(tmp_path, case):
    header, data, message = CORRUPT_HEADERS[case]
    path = craft_file(tmp_path / f"{case}.reverb", header, data)

    with pytest.raises(ModelFileError) as error:
        read_container(path)
    assert message in str(error.value)
    assert f"invalid model file {path}" in str(error.value)
    assert "reverb-edge convert" in str(error.value)
    with pytest.raises(ModelFileError):
        peek_metadata(path)


# Files that our reader rejects on purpose although safetensors 0.8 loads them.
STRICTER_THAN_SAFETENSORS = {"duplicate-key", "unknown-key", "rank-9"}


@pytest.mark.parametrize("case", sorted(CORRUPT_HEADERS.keys() - STRICTER_THAN_SAFETENSORS))
def test_safetensors_rejects_corrupt_header(tmp_path, case):
    header, data, _ = CORRUPT_HEADERS[case]
    path = craft_file(tmp_path / f"{case}.safetensors", header, data)

    with pytest.raises(Exception):
        safetensors_numpy.load_file(path)


def test_huge_shape_fails_without_allocation(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}
    path = craft_file(tmp_path / "huge-shape.reverb", header, b"\x00" * 16)

    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="has 16 bytes of data, but its shape .* need 4835703278458516698824704"):
            read_container(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_huge_header_length_fails_without_allocation(tmp_path):
    path = craft_file(tmp_path / "huge-length.reverb", b"{}", header_length=MAX_HEADER_BYTES + 1)

    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="limit"):
            read_container(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_null_metadata_read_as_empty(tmp_path):
    path = craft_file(tmp_path / "null.reverb", {"__metadata__": None})
    with read_container(path) as model:
        assert model.metadata == {}
    assert peek_metadata(path) == {}


def test_empty_model_round_trip(tmp_path):
    path = tmp_path / "empty.reverb"
    write_container(path, {}, {})
    with read_container(path) as model:
        assert model.tensors == {}
        assert model.metadata == {}
    assert safetensors_numpy.load_file(path) == {}


# --------------------------------------------------------------------------
# Random corruption

VALID_TENSORS = {
    "weights": np.arange(12, dtype=np.float32).reshape(4, 3),
    "bits": np.array([1, 2**63], dtype=np.uint64),
    "labels": np.arange(5, dtype=np.uint8),
    "empty": np.zeros((0, 2), np.int32),
    "scalar": np.array(-3, dtype=np.int64),
}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_corruption(tmp_path, data):
    path = tmp_path / "valid.reverb"
    if not path.exists():
        write_container(path, VALID_TENSORS, {"format": "reverb"})
    raw = bytearray(path.read_bytes())

    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=8
        ),
        label="edits",
    )
    for position, value in edits:
        raw[position] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))), label="cut")
    if cut is not None:
        raw = raw[:cut]
    corrupt = tmp_path / "corrupt.reverb"
    corrupt.write_bytes(bytes(raw))

    use_mmap = data.draw(st.booleans(), label="use_mmap")
    try:
        model = read_container(corrupt, use_mmap=use_mmap)
    except ModelFileError:
        return
    # Whatever we accept, safetensors must load with the same contents.
    with model:
        loaded = safetensors_numpy.load_file(corrupt)
        assert sorted(loaded) == sorted(model.tensors)
        for name, array in model.tensors.items():
            assert loaded[name].tobytes() == array.tobytes()
            assert loaded[name].shape == array.shape


def test_write_rejects_non_regular_target(tmp_path):
    import numpy as np

    from reverb_edge.container import write_container
    from reverb_edge.errors import ModelFileError

    folder = tmp_path / "folder.reverb"
    folder.mkdir()
    with pytest.raises(ModelFileError, match="is not a regular file"):
        write_container(folder, {"w": np.zeros(2, np.float32)}, {})
    with pytest.raises(ModelFileError, match="is not a regular file"):
        write_container("/dev/null", {"w": np.zeros(2, np.float32)}, {})


def test_write_follows_symlink(tmp_path):
    import numpy as np

    from reverb_edge.container import read_container, write_container

    target = tmp_path / "real.reverb"
    write_container(target, {"w": np.zeros(2, np.float32)}, {})
    link = tmp_path / "link.reverb"
    link.symlink_to(target)
    write_container(link, {"w": np.ones(3, np.float32)}, {})
    assert link.is_symlink()
    with read_container(target) as container:
        assert container.tensors["w"].shape == (3,)
