"""Model files (``.reverb``): a graph plus its packed weights in one validated file.

Layout: safetensors' byte layout (see :mod:`reverb_edge.container`), so the
``safetensors`` package can open it too. The header's ``__metadata__`` holds::

    format          "reverb-edge"          identifies the file, like a magic number
    format_version  "1"                    bumped on any incompatible change
    graph           JSON of Graph.to_dict  layers, shapes, τ, θ, T, input spec

and the tensors are the ones that :meth:`Graph.tensor_specs` lists, no more and no
fewer: packed sign bits (uint64, little-endian) and per-channel float32 constants.

Loading checks, in order: the container layout (sizes and offsets against the
file size, before anything is mapped or allocated), the format and version, the
graph, that every tensor has the dtype and shape the graph implies, and then the
values: constants finite, padding bits of packed rows zero.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bitpack import padding_bits_clear
from .container import read_container, write_container
from .errors import GraphError, ModelFileError
from .graph import Graph
from .nodes import Conv2d, Linear

logger = logging.getLogger(__name__)

FORMAT_NAME = "reverb-edge"
FORMAT_VERSION = "1"
# Metadata key of the CRC-32 of the tensor data (8 hex digits). load_model checks it where present, because a
# flipped bit in a weight passes every other check. Files written before it existed, or by other tools, have none.
CHECKSUM_KEY = "data_crc32"
FILE_SUFFIX = ".reverb"


@dataclass
class Model:
    """A validated graph with its tensors (read-only arrays, possibly views into an mmap)."""

    graph: Graph
    tensors: dict[str, np.ndarray]
    path: Path | None = None
    file_size: int | None = None
    # Arrays derived from the tensors once and shared by every engine on this model (the
    # Numba engine's ±1.0 weight rows), so that Engine.clone() does not copy them again.
    prepared: dict = field(default_factory=dict, repr=False, compare=False)


def _bits_length(graph: Graph, tensor_name: str) -> int | None:
    """Return how many sign bits a packed row of ``tensor_name`` holds, or None if not packed."""
    node_name, _, kind = tensor_name.rpartition(".")
    if kind != "weight":
        return None
    for node in graph.nodes:
        if node.name != node_name or getattr(node, "weight_format", None) != "binary":
            continue
        if isinstance(node, Conv2d):
            return node.in_channels // node.groups
        if isinstance(node, Linear):
            return node.in_features
    return None


def validate_tensors(graph: Graph, tensors: dict[str, np.ndarray], source: str) -> None:
    """Check that ``tensors`` are exactly what ``graph`` needs, with finite constants and clean bits."""
    specs = graph.tensor_specs()
    missing = sorted(set(specs) - set(tensors))
    unexpected = sorted(set(tensors) - set(specs))
    if missing:
        raise ModelFileError(f"{source}: tensors {missing} are missing; the file is incomplete, re-export it")
    if unexpected:
        raise ModelFileError(f"{source}: tensors {unexpected} are not used by any node of the graph")

    for name, (dtype, shape) in specs.items():
        array = tensors[name]
        if array.dtype != np.dtype(dtype) or tuple(array.shape) != tuple(shape):
            raise ModelFileError(
                f"{source}: tensor {name!r} is {array.dtype} {tuple(array.shape)}, but the graph "
                f"needs {dtype} {tuple(shape)}"
            )

    for name, array in tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array.ravel()))[0])
            raise ModelFileError(
                f"{source}: tensor {name!r} contains NaN or infinity (first at flat index {bad}); "
                "the model was exported from a diverged training run or the file is corrupt"
            )
        length = _bits_length(graph, name)
        if length is not None and not padding_bits_clear(array, length):
            raise ModelFileError(
                f"{source}: tensor {name!r} has padding bits set past bit {length} of a packed row; "
                "the file is corrupt or was not written by reverb-edge"
            )


def save_model(path: str | Path, graph: Graph, tensors: dict[str, np.ndarray]) -> Path:
    """Validate ``graph`` and ``tensors`` together and write them atomically to ``path``."""
    path = Path(path)
    arrays = {
        name: np.ascontiguousarray(array, dtype=np.asarray(array).dtype.newbyteorder("="))
        for name, array in tensors.items()
    }
    validate_tensors(graph, arrays, str(path))
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "graph": graph.to_json(),
        CHECKSUM_KEY: data_checksum(arrays),
    }
    write_container(path, arrays, metadata)
    logger.info("wrote %s (%d bytes, %d tensors)", path, path.stat().st_size, len(arrays))
    return path


def load_model(path: str | Path, *, use_mmap: bool = True) -> Model:
    """Read and validate a model file; raise :class:`ModelFileError` naming the problem."""
    path = Path(path)
    container = read_container(path, use_mmap=use_mmap)
    metadata = container.metadata

    file_format = metadata.get("format")
    if file_format != FORMAT_NAME:
        raise ModelFileError(
            f"{path}: not a reverb-edge model (metadata format is {file_format!r}, expected "
            f"{FORMAT_NAME!r}); convert a checkpoint with `reverb-edge convert`"
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version!r} is not supported; this reverb-edge reads "
            f"version {FORMAT_VERSION}. Upgrade reverb-edge or re-export the model with this version"
        )
    if "graph" not in metadata:
        raise ModelFileError(f"{path}: the header has no 'graph' entry; re-export the model")
    try:
        graph = Graph.from_json(metadata["graph"])
    except GraphError as err:
        raise ModelFileError(f"{path}: invalid graph: {err}") from err

    validate_tensors(graph, container.tensors, str(path))
    # Last: the checks above name a specific problem where there is one.
    stored = metadata.get(CHECKSUM_KEY)
    if stored is not None:
        if not re.fullmatch(r"[0-9a-f]{8}", stored):
            raise ModelFileError(
                f"{path}: the header's {CHECKSUM_KEY} is {stored!r}, expected 8 hex digits; re-export the model"
            )
        computed = data_checksum(container.tensors)
        if computed != stored:
            raise ModelFileError(
                f"{path}: the tensor data has CRC-32 {computed}, but the header records {stored}; the file is "
                "damaged: copy it again, or export it again from its checkpoint"
            )
    return Model(graph=graph, tensors=container.tensors, path=path, file_size=container.file_size)


def data_checksum(tensors: dict[str, np.ndarray]) -> str:
    """Return the CRC-32 of the tensors' little-endian bytes, in tensor-name order, as 8 hex digits."""
    crc = 0
    for name in sorted(tensors):
        array = tensors[name]
        little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        crc = zlib.crc32(little_endian.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"
