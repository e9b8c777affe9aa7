"""Read event-camera files into :data:`~reverb_edge.events.types.EVENT_DTYPE` arrays.

API:

- ``read_events(path, format=None, *, sensor_size=None) -> Recording`` decodes
  a whole file.
- ``iter_events(path, format=None, *, chunk_events=65536, sensor_size=None,
  read_size=65536) -> EventStream`` decodes it chunk by chunk with bounded
  memory. The :class:`EventStream` has ``sensor_size``, ``format`` and
  ``metadata`` set before the first chunk, and iterating it yields arrays of
  exactly ``chunk_events`` events (the last may be shorter). The chunks of
  one iteration, concatenated, equal ``read_events(path).events``.
- ``detect_format(path) -> str`` and ``FORMATS`` name the formats.

``format`` is one of ``FORMATS``; None detects it from the header, else from
the suffix (see :func:`detect_format`):

======== ==================================================== ==================
name     file                                                 module
======== ==================================================== ==================
nmnist   N-MNIST / N-Caltech101 ATIS ``.bin``                 :mod:`.atis`
aedat2   AEDAT 2.0, jAER (DVS128, DAVIS240/346/640)            :mod:`.aedat_legacy`
aedat3   AEDAT 3.1, cAER (DVS128 Gesture)                      :mod:`.aedat_legacy`
aedat4   AEDAT 4.0, iniVation DV (needs the ``dvs`` extra)     :mod:`.aedat4`
evt2     Prophesee RAW EVT 2.0                                 :mod:`.prophesee_raw`
evt3     Prophesee RAW EVT 3.0                                 :mod:`.prophesee_raw`
dat      Prophesee DAT v2 (N-CARS)                             :mod:`.prophesee_dat`
npy      NumPy structured array with fields x, y, t, p         :mod:`.arrays`
npz      NumPy archive with such an array                      :mod:`.arrays`
======== ==================================================== ==================

Each module's docstring gives its format source and bit layout.

Rules every reader follows:

- ``t`` is int64 µs and never decreases. Timestamp counter overflows are
  undone and counted in ``unwrapped``. An event whose timestamp is below an
  earlier event's is dropped, counted in ``dropped_backward``, and reported by
  one warning per read.
- ``y = 0`` is the top row and ``p = 1`` is ON.
- ``sensor_size`` is ``(width, height, 2)``: from ``sensor_size=`` if given,
  else from the header, else the largest coordinates plus one (for an
  :class:`EventStream`, that costs one extra decoding pass).
- An event outside a known sensor size, a truncated last record, an
  unsupported version and a file of no known format raise
  :class:`~reverb_edge.errors.InputError` naming the file, the byte offset and
  what to do.
- A recording without events (a header only, or a 0-byte ``.bin``) gives an
  empty array of the same dtype.

``read_size`` sets how many bytes are read from the file per decoding step;
it bounds memory together with ``chunk_events``. AEDAT 4.0 decodes one packet
at a time whatever ``read_size`` is.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..types import Recording
from .detect import detect_format
from .registry import FORMATS, SPECS
from .stream import DEFAULT_READ_SIZE, EventStream

__all__ = ["FORMATS", "EventStream", "detect_format", "iter_events", "read_events"]

DEFAULT_CHUNK_EVENTS = 65536


def _spec_for(path: Path, format: str | None):
    name = detect_format(path) if format is None else format
    if name not in SPECS:
        raise InputError(f"{path}: format={format!r} is unknown; pass one of {', '.join(FORMATS)} or None to detect it")
    return SPECS[name]


def read_events(path, format: str | None = None, *, sensor_size=None, read_size: int = DEFAULT_READ_SIZE) -> Recording:
    """Decode a whole event file into a :class:`~reverb_edge.events.types.Recording`.

    Args:
        path: the event file.
        format: one of :data:`FORMATS`, or None to detect it.
        sensor_size: ``(width, height)`` or ``(width, height, 2)``, to use in
            place of what the header gives (needed for ATIS ``.bin`` files
            other than N-MNIST's 34x34).
        read_size: bytes read from the file per decoding step.

    Raises:
        InputError: the file is invalid or of an unsupported format or version.
        MissingExtraError: an AEDAT 4.0 file and the ``aedat`` package is missing.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    stream = EventStream(
        path, _spec_for(path, format), chunk_events=None, read_size=read_size, sensor_size=sensor_size, _scan_extent=False
    )
    return stream.read()


def iter_events(
    path,
    format: str | None = None,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    sensor_size=None,
    read_size: int = DEFAULT_READ_SIZE,
) -> EventStream:
    """Open an event file for chunked decoding; see :class:`EventStream`.

    The header is checked here, so a file of unknown format fails before the
    first chunk. Errors in the event data are raised while iterating.
    Arguments and errors are those of :func:`read_events`, plus
    ``chunk_events``, the number of events per chunk.
    """
    path = Path(path)
    return EventStream(path, _spec_for(path, format), chunk_events=chunk_events, read_size=read_size, sensor_size=sensor_size)
