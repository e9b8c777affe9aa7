"""Read and write the ``.reverb`` model-file container.

A ``.reverb`` file has exactly the byte layout of a safetensors file, so the
``safetensors`` package can read and write it too:

* bytes 0–7: the header length N, an unsigned 64-bit little-endian integer;
* bytes 8 to 8+N: the header, a UTF-8 JSON object.  Each key is a tensor name
  mapped to ``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}``.
  The optional key ``"__metadata__"`` maps to an object of string → string;
* from byte 8+N to the end of the file: the data buffer.  ``data_offsets`` are
  relative to the start of this buffer; tensors are little-endian, C order.

The runtime reads these files with its own code for two reasons.  The
runtime's dependencies are fixed to numpy, numba, pillow, click and tqdm, so it
cannot use the ``safetensors`` package.  And this reader validates more
strictly: it rejects duplicate JSON keys, unknown header fields and ranks above
:data:`MAX_RANK`.  Every file this reader accepts is also accepted by
``safetensors.numpy.load_file`` (version 0.8 checked), and every file that
``safetensors.numpy.save_file`` writes with a supported dtype is accepted here.

Layout and alignment:

* the tensors, ordered by offset, must cover the data buffer without gaps,
  overlaps or trailing bytes, and :func:`read_container` rejects any other
  file.  safetensors rejects gaps and trailing bytes too, so this format has
  no padding between tensors or after the last one;
* :func:`write_container` pads the JSON header with spaces so that the data
  buffer starts at a multiple of 8 bytes, and orders tensors by item size (8,
  then 4, then 1 byte) and then by name.  Each tensor therefore starts at a
  multiple of its own item size, which numpy needs for aligned views.  The
  writer of safetensors 0.8 also puts larger dtypes first.

The reader checks every size and offset in the header against the real file
size before it allocates or maps anything, so a corrupt length field cannot
trigger a huge allocation.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO, Mapping, NamedTuple

import numpy as np

from reverb_edge.errors import ModelFileError

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_RANK",
    "Container",
    "peek_metadata",
    "read_container",
    "write_container",
]

#: Size of the header length field at the start of the file, in bytes.
LENGTH_FIELD_BYTES = 8

#: Maximum size of the JSON header, in bytes.  A tensor entry takes roughly
#: 100 bytes of JSON, so even thousands of tensors with generous metadata fit
#: in well under 1 MiB.  The limit stops a corrupt length field from making the
#: reader load and parse a huge header on a board with 512 MiB–1 GiB of RAM.
#: safetensors 0.8 allows up to 100,000,000 bytes.
MAX_HEADER_BYTES = 16 * 1024 * 1024

#: Maximum number of dimensions of a stored tensor.  Convolution weights
#: (out, in, height, width) have 4, so 8 leaves room while bounding the work
#: spent on a corrupt shape.
MAX_RANK = 8

METADATA_KEY = "__metadata__"
ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})

#: safetensors dtype names of the supported dtypes, all little-endian.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U8": np.dtype("u1"),
}
_DTYPE_NAMES: dict[str, str] = {dtype.str[1:]: name for name, dtype in DTYPES.items()}

_CORRUPT_HINT = (
    "The file is corrupt or not a .reverb model; re-export the model with `reverb-edge convert`."
)
_TRUNCATED_HINT = (
    "The file is truncated; copy it again or re-export the model with `reverb-edge convert`."
)

# numpy rejects shapes whose non-zero dimensions multiply to more bytes than
# an index of the platform's pointer size can address, even for empty arrays.
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max


def _invalid(path: os.PathLike | str, detail: str, hint: str = _CORRUPT_HINT) -> ModelFileError:
    return ModelFileError(f"invalid model file {path}: {detail}. {hint}")


class _Entry(NamedTuple):
    """One validated tensor entry of the header."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class _Header(NamedTuple):
    """A validated header: metadata, tensor entries and the JSON length in bytes."""

    metadata: dict[str, str]
    entries: list[_Entry]
    size: int


class Container:
    """An opened model file: its metadata and read-only tensors.

    Use it as a context manager, or call :meth:`close`, to release the memory
    map.  Attributes:

    * ``path``: the file that was read;
    * ``metadata``: the ``__metadata__`` object of the header, string → string;
    * ``tensors``: tensor name → read-only array.  With ``use_mmap=True`` the
      arrays are views into a memory map of the file; otherwise into one copy
      of the data buffer;
    * ``file_size``: the file size in bytes;
    * ``header_size``: the length N of the JSON header in bytes, without the
      8-byte length field, so the data buffer starts at byte 8 + N.
    """

    def __init__(
        self,
        path: Path,
        metadata: dict[str, str],
        tensors: dict[str, np.ndarray],
        file_size: int,
        header_size: int,
        mapping: mmap.mmap | None,
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self.file_size = file_size
        self.header_size = header_size
        self._mapping = mapping

    def close(self) -> None:
        """Drop the tensors and release the memory map.

        The map is unmapped at once unless a caller still references a
        tensor array.  In that case it stays mapped until the last such array
        is garbage-collected, so existing arrays never point at unmapped
        memory.
        """
        self.tensors = {}
        mapping, self._mapping = self._mapping, None
        if mapping is None:
            return
        try:
            mapping.close()
        except BufferError:
            # Arrays exported from the map are still alive and keep it open.
            pass

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Container(path={str(self.path)!r}, tensors={len(self.tensors)}, "
            f"file_size={self.file_size}, header_size={self.header_size})"
        )


# --------------------------------------------------------------------------
# Writing


def _writable_target(path: Path) -> Path:
    """Return the regular file that a write to ``path`` replaces, following symbolic links.

    Writing replaces the file by rename, which would turn a device such as
    /dev/null into a regular file, so anything but a regular file is rejected.
    """
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        raise ModelFileError(f"{path} exists and is not a regular file; choose another output path")
    if not target.parent.is_dir():
        raise ModelFileError(f"cannot write {path}: folder {target.parent} does not exist; create it first")
    return target


def write_container(
    path: os.PathLike | str,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
) -> None:
    """Write tensors and metadata to ``path`` as a ``.reverb`` model file.

    The file is written to a temporary file in the same folder, flushed to
    disk and then renamed over ``path``.  An existing file at ``path`` is
    therefore replaced only when the whole write succeeded, and a process
    that has the old file mapped keeps reading the old contents.  The
    temporary file is removed on any error.  The new file gets mode 0o644.

    Supported dtypes are float32, float64, int8, uint8, int32, int64 and
    uint64, in any byte order; they are stored little-endian.  A numpy scalar
    is stored as a tensor of shape ().

    Raises:
        ModelFileError: a tensor name, tensor or metadata entry is invalid,
            or the file cannot be written.
    """
    path = _writable_target(Path(path))
    arrays = _check_tensors(path, tensors)
    metadata = _check_metadata_to_write(path, metadata)

    # Largest item size first, then by name: every tensor then starts at a
    # multiple of its item size without padding between tensors.
    names = sorted(arrays, key=lambda name: (-arrays[name].dtype.itemsize, name))
    header: dict[str, object] = {}
    if metadata:
        header[METADATA_KEY] = metadata
    offset = 0
    for name in names:
        array = arrays[name]
        header[name] = {
            "dtype": _DTYPE_NAMES[array.dtype.str[1:]],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes

    header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # Spaces after the JSON object are valid JSON and make the data buffer
    # start at a multiple of 8 bytes.
    header_bytes += b" " * (-len(header_bytes) % 8)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ModelFileError(
            f"cannot write model file {path}: the header would be {len(header_bytes)} bytes, "
            f"more than the {MAX_HEADER_BYTES}-byte limit; shorten the metadata or the tensor names"
        )

    _write_atomically(path, header_bytes, [arrays[name] for name in names])


def _check_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the tensors as little-endian C-order arrays, or raise ModelFileError."""
    if not isinstance(tensors, Mapping):
        raise ModelFileError(
            f"cannot write model file {path}: tensors must be a dict of name → numpy array, "
            f"got {type(tensors).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise ModelFileError(
                f"cannot write model file {path}: tensor name {name!r} is a "
                f"{type(name).__name__}, expected a str"
            )
        if name == METADATA_KEY:
            raise ModelFileError(
                f"cannot write model file {path}: {METADATA_KEY!r} is reserved for the "
                "metadata and cannot be a tensor name"
            )
        if isinstance(array, np.generic):
            array = np.asarray(array)
        if not isinstance(array, np.ndarray):
            raise ModelFileError(
                f"cannot write model file {path}: tensor {name!r} is a {type(array).__name__}, "
                "expected a numpy array"
            )
        little_endian = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
        if little_endian.str[1:] not in _DTYPE_NAMES:
            supported = ", ".join(str(np.dtype(dtype.str[1:])) for dtype in DTYPES.values())
            raise ModelFileError(
                f"cannot write model file {path}: tensor {name!r} has dtype {array.dtype}, "
                f"which a model file cannot store; supported dtypes are {supported}"
            )
        if len(array.shape) > MAX_RANK:
            raise ModelFileError(
                f"cannot write model file {path}: tensor {name!r} has {array.ndim} dimensions, "
                f"more than the maximum of {MAX_RANK}"
            )
        # np.ascontiguousarray would turn a 0-d array into shape (1,).
        arrays[name] = np.asarray(array, dtype=little_endian, order="C")
    return arrays


def _check_metadata_to_write(path: Path, metadata: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise ModelFileError(
            f"cannot write model file {path}: metadata must be a dict of str → str, "
            f"got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ModelFileError(
                f"cannot write model file {path}: metadata entry {key!r}: {value!r} is not "
                "str → str; convert the value to a string (for example with json.dumps)"
            )
    return dict(metadata)


def _write_atomically(path: Path, header_bytes: bytes, arrays: list[np.ndarray]) -> None:
    folder = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ModelFileError(f"cannot write model file {path}: {err.strerror or err}") from err

    try:
        with os.fdopen(fd, "wb") as file:
            file.write(struct.pack("<Q", len(header_bytes)))
            file.write(header_bytes)
            for array in arrays:
                # A flat uint8 view writes the raw bytes without a copy.
                file.write(array.reshape(-1).view(np.uint8))
            file.flush()
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException as err:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise ModelFileError(f"cannot write model file {path}: {err.strerror or err}") from err
        raise

    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Flush the rename to disk, so a power cut cannot bring back the old file."""
    try:
        folder_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        # NOTE: some file systems and non-POSIX systems cannot open folders.
        # The rename is then durable only after the OS flushes on its own.
        return
    try:
        os.fsync(folder_fd)
    except OSError:
        pass
    finally:
        os.close(folder_fd)


# --------------------------------------------------------------------------
# Reading


def read_container(path: os.PathLike | str, *, use_mmap: bool = True) -> Container:
    """Open a ``.reverb`` model file and return its metadata and tensors.

    With ``use_mmap=True`` the tensors are read-only views into a memory map
    of the file, so only the pages a caller touches are read from disk.  The
    file must then not be modified in place while the container is open
    (:func:`write_container` replaces files by rename, which is safe).  With
    ``use_mmap=False`` the data buffer is copied into memory once.

    A tensor whose offset is not a multiple of its item size (possible only
    in files from other writers) is copied into aligned memory.

    Raises:
        ModelFileError: the file is missing, unreadable or invalid.  The
            message names the file, the byte offset or tensor, and the fix.
    """
    path = Path(path)
    try:
        return _read_container(path, use_mmap)
    except OSError as err:
        raise ModelFileError(f"cannot read model file {path}: {err.strerror or err}") from err


def _read_container(path: Path, use_mmap: bool) -> Container:
    with _open_model_file(path) as file:
        file_size = os.fstat(file.fileno()).st_size
        header = _read_header(file, path, file_size)
        buffer_start = LENGTH_FIELD_BYTES + header.size
        buffer_length = file_size - buffer_start
        mapping = None
        if use_mmap:
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            if len(mapping) != file_size:
                mapping.close()
                raise _invalid(path, "the file changed size while it was being read", _TRUNCATED_HINT)
            source: object = mapping
            base = buffer_start
        else:
            source = _read_buffer(file, path, buffer_start, buffer_length)
            base = 0

    tensors = {entry.name: _tensor_view(source, base, entry) for entry in header.entries}
    return Container(path, header.metadata, tensors, file_size, header.size, mapping)


def peek_metadata(path: os.PathLike | str) -> dict[str, str]:
    """Return the ``__metadata__`` of a model file, reading only its header.

    The whole header is validated against the file size as in
    :func:`read_container`, but no tensor data is read.

    Raises:
        ModelFileError: the file is missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        with _open_model_file(path) as file:
            file_size = os.fstat(file.fileno()).st_size
            return _read_header(file, path, file_size).metadata
    except OSError as err:
        raise ModelFileError(f"cannot read model file {path}: {err.strerror or err}") from err


def _open_model_file(path: Path) -> BinaryIO:
    try:
        file = open(path, "rb")
    except FileNotFoundError as err:
        raise ModelFileError(f"model file not found: {path}; check the path") from err
    except IsADirectoryError as err:
        raise ModelFileError(
            f"{path} is a folder, not a model file; pass the path of a .reverb file"
        ) from err
    except OSError as err:
        raise ModelFileError(f"cannot read model file {path}: {err.strerror or err}") from err

    mode = os.fstat(file.fileno()).st_mode
    if not stat.S_ISREG(mode):
        file.close()
        raise ModelFileError(f"{path} is not a regular file; pass the path of a .reverb file")
    return file


def _read_exactly(file: BinaryIO, path: Path, count: int, offset: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise _invalid(
            path,
            f"expected {count} bytes at byte {offset} but the file ends after {len(data)}",
            _TRUNCATED_HINT,
        )
    return data


def _read_header(file: BinaryIO, path: Path, file_size: int) -> _Header:
    """Read and validate the length field and the JSON header."""
    if file_size < LENGTH_FIELD_BYTES:
        raise _invalid(
            path,
            f"the file is {file_size} bytes long, shorter than the "
            f"{LENGTH_FIELD_BYTES}-byte header length field",
        )
    (header_size,) = struct.unpack("<Q", _read_exactly(file, path, LENGTH_FIELD_BYTES, 0))
    if header_size > MAX_HEADER_BYTES:
        raise _invalid(
            path,
            f"the header length at byte 0 is {header_size} bytes, more than the "
            f"{MAX_HEADER_BYTES}-byte limit",
        )
    if header_size > file_size - LENGTH_FIELD_BYTES:
        raise _invalid(
            path,
            f"the header length at byte 0 is {header_size} bytes, but only "
            f"{file_size - LENGTH_FIELD_BYTES} bytes follow it",
            _TRUNCATED_HINT,
        )

    raw = _read_exactly(file, path, header_size, LENGTH_FIELD_BYTES)
    parsed = _parse_json(raw, path)
    buffer_length = file_size - LENGTH_FIELD_BYTES - header_size
    metadata = _check_metadata(parsed.pop(METADATA_KEY, None), path)
    entries = [_check_entry(name, value, path, buffer_length) for name, value in parsed.items()]
    _check_layout(entries, path, LENGTH_FIELD_BYTES + header_size, buffer_length)
    return _Header(metadata, entries, header_size)


def _parse_json(raw: bytes, path: Path) -> dict[str, object]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _invalid(
            path, f"the header is not valid UTF-8 (byte {LENGTH_FIELD_BYTES + err.start})"
        ) from err
    try:
        parsed = json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as err:
        byte_offset = LENGTH_FIELD_BYTES + len(text[: err.pos].encode("utf-8"))
        raise _invalid(path, f"the header is not valid JSON at byte {byte_offset}: {err.msg}") from err
    except ValueError as err:
        # Raised by the hooks below, and by int() for numbers with more
        # digits than Python's int-from-string limit.
        raise _invalid(path, f"the header is not valid: {err}") from err
    except RecursionError as err:
        raise _invalid(path, "the header JSON is nested too deeply") from err
    if not isinstance(parsed, dict):
        raise _invalid(path, f"the header is a JSON {type(parsed).__name__}, expected an object")
    return parsed


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears more than once")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed in the header")


def _check_metadata(metadata: object, path: Path) -> dict[str, str]:
    # safetensors reads a missing key and JSON null alike as "no metadata".
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _invalid(
            path, f"{METADATA_KEY!r} is a JSON {type(metadata).__name__}, expected an object"
        )
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _invalid(
                path, f"the metadata value of {key!r} is {value!r}, expected a JSON string"
            )
    return metadata


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but JSON true/false are not sizes.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(name: str, entry: object, path: Path, buffer_length: int) -> _Entry:
    """Validate one tensor entry without allocating anything for it."""
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise _invalid(path, f"{where} is a JSON {type(entry).__name__}, expected an object")
    if entry.keys() != ENTRY_KEYS:
        missing = sorted(ENTRY_KEYS - entry.keys())
        unknown = sorted(entry.keys() - ENTRY_KEYS)
        raise _invalid(path, f"{where} has missing keys {missing} and unknown keys {unknown}")

    dtype_name = entry["dtype"]
    if dtype_name not in DTYPES:
        raise _invalid(
            path,
            f"{where} has dtype {dtype_name!r}; supported dtypes are {', '.join(DTYPES)}",
        )
    dtype = DTYPES[dtype_name]

    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(dim) and dim >= 0 for dim in shape):
        raise _invalid(path, f"{where} has shape {shape!r}, expected a list of non-negative integers")
    if len(shape) > MAX_RANK:
        raise _invalid(
            path, f"{where} has {len(shape)} dimensions, more than the maximum of {MAX_RANK}"
        )

    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _invalid(path, f"{where} has data_offsets {offsets!r}, expected [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _invalid(path, f"{where} has data_offsets {offsets}, expected 0 <= begin <= end")
    if end > buffer_length:
        raise _invalid(
            path,
            f"{where} ends at byte {end} of the data buffer, but the buffer is only "
            f"{buffer_length} bytes long",
            _TRUNCATED_HINT,
        )
    # Python integers do not overflow, so these products are exact and cost
    # nothing even for absurd shapes.
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise _invalid(
            path,
            f"{where} has {end - begin} bytes of data, but its shape {shape} and dtype "
            f"{dtype_name} need {nbytes}",
        )
    nonzero_bytes = math.prod(dim for dim in shape if dim) * dtype.itemsize
    if nonzero_bytes > _MAX_ARRAY_BYTES:
        raise _invalid(
            path, f"{where} has shape {shape}, too large for a numpy array on this platform"
        )
    return _Entry(name, dtype, tuple(shape), begin, end)


def _check_layout(entries: list[_Entry], path: Path, buffer_start: int, buffer_length: int) -> None:
    """Check that the tensors cover the data buffer without gaps, overlaps or trailing bytes."""
    expected_begin = 0
    previous: _Entry | None = None
    for entry in sorted(entries, key=lambda entry: (entry.begin, entry.end)):
        if previous is not None and entry.begin < previous.end:
            raise _invalid(
                path,
                f"tensor {entry.name!r} (file bytes {buffer_start + entry.begin}–"
                f"{buffer_start + entry.end}) overlaps tensor {previous.name!r} (file bytes "
                f"{buffer_start + previous.begin}–{buffer_start + previous.end})",
            )
        if entry.begin > expected_begin:
            raise _invalid(
                path,
                f"file bytes {buffer_start + expected_begin}–{buffer_start + entry.begin} "
                f"before tensor {entry.name!r} belong to no tensor",
            )
        expected_begin = entry.end
        previous = entry
    if expected_begin != buffer_length:
        raise _invalid(
            path,
            f"file bytes {buffer_start + expected_begin}–{buffer_start + buffer_length} "
            "after the last tensor belong to no tensor",
        )


def _read_buffer(file: BinaryIO, path: Path, buffer_start: int, buffer_length: int) -> np.ndarray:
    """Read the data buffer into a new array, which numpy allocates aligned."""
    buffer = np.empty(buffer_length, dtype=np.uint8)
    file.seek(buffer_start)
    view = memoryview(buffer)
    filled = 0
    while filled < buffer_length:
        count = file.readinto(view[filled:])
        if not count:
            raise _invalid(
                path,
                f"expected {buffer_length} bytes of data at byte {buffer_start} but the file "
                f"ends after {filled}",
                _TRUNCATED_HINT,
            )
        filled += count
    return buffer


def _tensor_view(source: object, base: int, entry: _Entry) -> np.ndarray:
    """Return a read-only array of one tensor, validated by ``_check_entry``."""
    count = math.prod(entry.shape)
    if count == 0:
        array = np.zeros(entry.shape, dtype=entry.dtype.newbyteorder("="))
    else:
        array = np.frombuffer(source, dtype=entry.dtype, count=count, offset=base + entry.begin)
        array = array.reshape(entry.shape)
        # NOTE: the byte-order branch runs only on big-endian hosts, which no
        # test machine of this project is.
        if not array.flags.aligned or not array.dtype.isnative:
            array = array.astype(entry.dtype.newbyteorder("="))
    array.flags.writeable = False
    return array
