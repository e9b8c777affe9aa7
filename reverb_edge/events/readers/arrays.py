"""NumPy ``.npy`` and ``.npz`` files holding a structured event array, as tonic writes them.

Format source: the NumPy ``.npy`` format description (``numpy.lib.format``,
versions 1.0 to 3.0) and, for ``.npz``, a zip archive of ``.npy`` members.

The array must be one-dimensional with fields named ``x``, ``y``, ``t`` and
``p``, in any order and of any numeric dtype. Values are converted to
:data:`~reverb_edge.events.types.EVENT_DTYPE`: coordinates and timestamps must
be whole numbers (float fields are accepted when every value is whole), and
the polarity must be 0, 1, True, False or -1, where -1 becomes 0 (OFF).

In an ``.npz`` file, the events are the member ``events`` if it exists, else
the only member with those four fields. A member ``sensor_size`` of 2 or 3
integers, ``(width, height[, 2])``, gives the sensor size; without it, the
sensor size is the largest coordinates plus one. Members are read in pieces, so
memory stays bounded. Byte offsets in errors from ``.npz`` files count bytes in
the decompressed events member.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ._base import Block, FormatSpec, Header, build_events, file_error

NPY_MAGIC = b"\x93NUMPY"
REQUIRED_FIELDS = ("x", "y", "t", "p")
MAX_COORDINATE = np.iinfo(np.int16).max


def _read_npy_header(stream: BinaryIO, path: Path, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read the header of a ``.npy`` stream; return the dtype, the shape and the header length."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as err:
        raise file_error(path, 0, f"{where}: invalid .npy header ({err})", "check that the file is a NumPy array file") from err
    return dtype, shape, stream.tell()


def _check_event_dtype(dtype: np.dtype, shape: tuple[int, ...], path: Path, where: str) -> None:
    names = dtype.names or ()
    missing = [name for name in REQUIRED_FIELDS if name not in names]
    if missing or len(shape) != 1:
        raise file_error(
            path, None,
            f"{where} is not a 1-D structured event array (shape {shape}, fields {list(names)}, missing {missing})",
            "save a 1-D array with fields x, y, t and p, as tonic's events are",
        )
    for name in REQUIRED_FIELDS:
        kind = dtype[name].kind
        if kind not in "biuf":
            raise file_error(path, None, f"{where}: field {name!r} has dtype {dtype[name]}, which is not numeric", "store numbers")


def read_npy_header(file: BinaryIO, path: Path) -> Header:
    """Check that a ``.npy`` file holds a structured event array."""
    file.seek(0)
    dtype, shape, data_offset = _read_npy_header(file, path, "the array")
    _check_event_dtype(dtype, shape, path, "the array")
    return Header(data_offset, None, {"dtype": str(dtype), "rows": shape[0], "_dtype": dtype})


def _events_member(archive: zipfile.ZipFile, path: Path) -> tuple[str, np.dtype, int]:
    """Return the name, dtype and row count of the events member of an ``.npz`` archive."""
    names = archive.namelist()
    candidates = ["events.npy"] if "events.npy" in names else [n for n in names if n.endswith(".npy")]
    found = []
    for name in candidates:
        with archive.open(name) as member:
            dtype, shape, _ = _read_npy_header(member, path, f"member {name!r}")
        if all(field in (dtype.names or ()) for field in REQUIRED_FIELDS):
            found.append((name, dtype, shape))
    if len(found) != 1:
        raise file_error(
            path, None,
            f"expected one member with fields x, y, t, p, or a member 'events'; members: {names}",
            "store the events as the member 'events' (np.savez(path, events=events))",
        )
    name, dtype, shape = found[0]
    _check_event_dtype(dtype, shape, path, f"member {name!r}")
    return name, dtype, shape[0]


def read_npz_header(file: BinaryIO, path: Path) -> Header:
    """Find the events member and the optional ``sensor_size`` member of an ``.npz`` file."""
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as err:
        raise file_error(path, 0, f"not a valid .npz (zip) file ({err})", "check the file type") from err
    with archive:
        name, dtype, rows = _events_member(archive, path)
        metadata = {"member": name, "dtype": str(dtype), "rows": rows, "_dtype": dtype}
        size = None
        if "sensor_size.npy" in archive.namelist():
            with archive.open("sensor_size.npy") as member:
                value = np.lib.format.read_array(member, allow_pickle=False)
            size = _sensor_size_member(value, path)
            metadata["sensor_size_source"] = "member 'sensor_size'"
    return Header(0, size, metadata)


def _sensor_size_member(value: np.ndarray, path: Path) -> tuple[int, int]:
    values = np.asarray(value).ravel()
    valid = values.dtype.kind in "iu" and len(values) in (2, 3) and (values[:2] > 0).all()
    valid = valid and (len(values) == 2 or values[2] == 2) and (values[:2] <= MAX_COORDINATE + 1).all()
    if not valid:
        raise file_error(
            path, None, f"member 'sensor_size' is {value!r}",
            "store (width, height) or (width, height, 2) as positive integers",
        )
    return int(values[0]), int(values[1])


def _whole_numbers(values: np.ndarray, name: str, path: Path, offsets: np.ndarray) -> np.ndarray:
    """Return ``values`` as int64, raising InputError at the first value that is not a whole number."""
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            index = int(np.argmax(bad))
            raise file_error(
                path, int(offsets[index]), f"field {name!r} has the value {values[index]}, which is not a whole number",
                f"store {name} as integers",
            )
    return values.astype(np.int64)


def convert_rows(rows: np.ndarray, path: Path, offsets: np.ndarray) -> np.ndarray:
    """Convert structured rows with fields x, y, t, p to EVENT_DTYPE, checking every value."""
    x = _whole_numbers(rows["x"], "x", path, offsets)
    y = _whole_numbers(rows["y"], "y", path, offsets)
    t = _whole_numbers(rows["t"], "t", path, offsets)
    p = _whole_numbers(rows["p"], "p", path, offsets)
    outside = (x < 0) | (x > MAX_COORDINATE) | (y < 0) | (y > MAX_COORDINATE)
    if outside.any():
        index = int(np.argmax(outside))
        raise file_error(
            path, int(offsets[index]), f"event at x={x[index]}, y={y[index]} has a coordinate outside 0..{MAX_COORDINATE}",
            "store pixel coordinates counted from 0",
        )
    invalid = (p != 0) & (p != 1) & (p != -1)
    if invalid.any():
        index = int(np.argmax(invalid))
        raise file_error(path, int(offsets[index]), f"polarity {p[index]} is invalid", "store 0/1, True/False or -1/1")
    return build_events(x, y, t, np.where(p == 1, 1, 0))


def _decode_stream(stream: BinaryIO, path: Path, dtype: np.dtype, rows: int, start: int, read_size: int) -> Iterator[Block]:
    per_read = max(1, read_size // dtype.itemsize)
    for first in range(0, rows, per_read):
        count = min(per_read, rows - first)
        data = stream.read(count * dtype.itemsize)
        if len(data) < count * dtype.itemsize:
            cut = start + len(data) - len(data) % dtype.itemsize + first * dtype.itemsize
            raise file_error(
                path, cut, f"truncated array: the header announces {rows} rows, the data ends inside row {first + len(data) // dtype.itemsize}",
                "the file was cut off; save the array again",
            )
        records = np.frombuffer(data, dtype=dtype)
        offsets = start + dtype.itemsize * np.arange(first, first + count, dtype=np.int64)
        yield Block(convert_rows(records, path, offsets), offsets)


def decode_npy(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the events of a ``.npy`` file, a piece at a time."""
    file.seek(header.data_offset)
    yield from _decode_stream(file, path, header.metadata["_dtype"], header.metadata["rows"], header.data_offset, read_size)


def decode_npz(file: BinaryIO, path: Path, header: Header, read_size: int) -> Iterator[Block]:
    """Yield the events of the events member of an ``.npz`` file, a piece at a time."""
    with zipfile.ZipFile(file) as archive, archive.open(header.metadata["member"]) as member:
        dtype, _, start = _read_npy_header(member, path, f"member {header.metadata['member']!r}")
        yield from _decode_stream(member, path, dtype, header.metadata["rows"], start, read_size)


NPY_SPEC = FormatSpec(
    name="npy",
    description="NumPy .npy structured array with fields x, y, t, p (tonic layout)",
    read_header=read_npy_header,
    decode=decode_npy,
)

NPZ_SPEC = FormatSpec(
    name="npz",
    description="NumPy .npz archive with an event array and an optional sensor_size",
    read_header=read_npz_header,
    decode=decode_npz,
)
