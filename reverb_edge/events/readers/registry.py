"""The formats this package reads, by name."""

from __future__ import annotations

from . import aedat4, arrays, atis, prophesee_dat, prophesee_raw
from ._base import FormatSpec
from .aedat_legacy import AEDAT2_SPEC, AEDAT3_SPEC

#: Every supported format, keyed by the name that ``format=`` and ``Recording.format`` use.
SPECS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        atis.SPEC,
        AEDAT2_SPEC,
        AEDAT3_SPEC,
        aedat4.SPEC,
        prophesee_raw.EVT2_SPEC,
        prophesee_raw.EVT3_SPEC,
        prophesee_dat.SPEC,
        arrays.NPY_SPEC,
        arrays.NPZ_SPEC,
    )
}

#: The format names, in the order above.
FORMATS: tuple[str, ...] = tuple(SPECS)
