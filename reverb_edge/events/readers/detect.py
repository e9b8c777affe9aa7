"""Tell an event file's format from its first bytes, else from its suffix."""

from __future__ import annotations

from pathlib import Path

from ._base import file_error
from .aedat_legacy import format_for_version, read_version
from .arrays import NPY_MAGIC
from .prophesee_header import raw_encoding, read_percent_header
from .registry import FORMATS

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

#: What a file with each suffix must start with, for the error about a file that does not.
EXPECTED_START = {
    ".aedat": "'#!AER-DAT' (AEDAT)",
    ".aedat4": "'#!AER-DAT4.0' (AEDAT 4.0)",
    ".raw": "a '%' header (Prophesee RAW)",
    ".npy": "the NumPy magic b'\\x93NUMPY'",
    ".npz": "the zip magic b'PK\\x03\\x04' (NumPy .npz)",
}


def detect_format(path) -> str:
    """Return the format name of the event file at ``path``.

    The header decides where the format has one: ``#!AER-DATx.y`` (AEDAT 2.0,
    3.1 or 4.0), a ``%`` header declaring ``evt 2.0``/``evt 3.0`` or
    ``format EVT2``/``EVT3`` (Prophesee RAW) or ``Data file containing`` (DAT),
    the NumPy magic (``.npy``) or the zip magic (``.npz``). Otherwise the suffix
    decides: ``.bin`` is N-MNIST, ``.dat`` is Prophesee DAT.

    Raises:
        InputError: the file is empty (except a ``.bin``), declares an
            unsupported version or encoding, or matches no format.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with open(path, "rb") as file:
        start = file.read(16)
        if start.startswith(b"#!AER-DAT"):
            version, _ = read_version(file, path)
            return format_for_version(version, path)
        if start.startswith(NPY_MAGIC):
            return "npy"
        if start.startswith(ZIP_MAGICS):
            return "npz"
        # An ATIS record with x = 37 starts with '%' too, so a .bin file never has a '%' header.
        if start.startswith(b"%") and suffix != ".bin":
            return _percent_format(file, path, suffix)

    if suffix == ".bin":
        return "nmnist"
    if suffix == ".dat" and start:
        return "dat"
    if not start:
        raise file_error(path, 0, "the file is empty", "an empty recording is only valid as a 0-byte N-MNIST .bin file")
    if suffix in EXPECTED_START:
        problem = f"not a valid {suffix} file: expected {EXPECTED_START[suffix]} at the start, found {start[:8]!r}"
    else:
        problem = f"unknown event file format: the start {start[:8]!r} matches no known header and {suffix!r} no known suffix"
    raise file_error(path, 0, problem, f"check the file type, or pass format= one of {', '.join(FORMATS)}")


def _percent_format(file, path: Path, suffix: str) -> str:
    fields, _, _ = read_percent_header(file, path)
    encoding = raw_encoding(fields)
    if encoding in ("evt2", "evt3"):
        return encoding
    if encoding is not None:
        raise file_error(
            path, 0, f"Prophesee RAW encoding {encoding!r} is not supported",
            "only EVT 2.0 and EVT 3.0 are read; convert the file with Metavision's tools",
        )
    if fields.get("data", "").startswith("file containing") or suffix == ".dat":
        return "dat"
    raise file_error(
        path, 0, "the '%' header names no RAW encoding and no DAT event type",
        "pass format='evt2', format='evt3' or format='dat' if you know the format",
    )
