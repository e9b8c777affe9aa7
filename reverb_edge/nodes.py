"""Node types of the layer graph that a model file stores and the engine runs.

A graph (see :mod:`reverb_edge.graph`) is an ordered tuple of nodes. Each node reads the outputs of the nodes
named in ``inputs`` (the empty tuple means "the node before me", or the network
input for the first node) and produces one array per timestep. Shapes are
channels-first without a batch axis: (C, H, W) for images, (F,) after Flatten.

Synaptic nodes (:class:`Conv2d`, :class:`Linear`) compute the synaptic current
of each output channel c from the sign-sum z_c::

    z_c = Σ_i s_i · o_i,   s_i ∈ {-1, +1}       (add or subtract each input o_i)
    I_c = scale_c · z_c + bias_c

where ``scale`` and ``bias`` hold the trained amplitude α and BatchNorm folded
together by the converter. A :class:`LIF` node turns that current into
real-valued spikes with membrane potential U (U = 0 after a reset)::

    H = τ · U + I,   fire where H >= θ,   spike = H where fired else 0,
    U = 0 where fired else H

The last node is the readout: it does not spike, and the class scores are the
mean of its output over the T timesteps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .bitpack import words_for
from .errors import GraphError

WEIGHT_FORMATS = ("binary", "float32")

# Limits that keep a hostile file from asking for absurd allocations. They are far
# above any network that fits a Raspberry Pi-class board: MAX_ELEMENTS float32 values
# are 256 MiB per node output, and the engine also caps the sum over all nodes.
MAX_NODES = 4096
MAX_DIMENSION = 1 << 20
MAX_ELEMENTS = 1 << 26


def _pair(value: Any, field_name: str, node: str, minimum: int = 1) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        first, second = value
    except (TypeError, ValueError):
        raise GraphError(f"node {node!r}: {field_name} must be an int or a pair of ints, got {value!r}") from None
    return _positive_int(first, field_name, node, minimum=minimum), _positive_int(second, field_name, node, minimum=minimum)


def _quad(value: Any, field_name: str, node: str) -> tuple[int, int, int, int]:
    """Normalise padding to (top, bottom, left, right)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (_positive_int(value, field_name, node, minimum=0),) * 4
    values = tuple(value) if isinstance(value, (list, tuple)) else None
    if values is not None and len(values) == 2:
        vertical, horizontal = values
        values = (vertical, vertical, horizontal, horizontal)
    if values is None or len(values) != 4:
        raise GraphError(
            f"node {node!r}: {field_name} must be an int, (vertical, horizontal) or "
            f"(top, bottom, left, right), got {value!r}"
        )
    return tuple(_positive_int(v, field_name, node, minimum=0) for v in values)  # type: ignore[return-value]


def _positive_int(value: Any, field_name: str, node: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise GraphError(f"node {node!r}: {field_name} must be an integer, got {value!r}")
    if not minimum <= value <= MAX_DIMENSION:
        raise GraphError(f"node {node!r}: {field_name} must be in [{minimum}, {MAX_DIMENSION}], got {value}")
    return value


# Bound on τ and θ: their float32 values stay finite, so the threshold comparison stays meaningful.
MAX_NEURON_CONSTANT = 1e30


def _finite(value: Any, field_name: str, node: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GraphError(f"node {node!r}: {field_name} must be a finite number, got {value!r}")
    if abs(value) > MAX_NEURON_CONSTANT:
        raise GraphError(f"node {node!r}: {field_name} must be within ±{MAX_NEURON_CONSTANT:g}, got {value!r}")
    return float(value)


def _spatial_output(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Node:
    """Common fields of every node: a unique ``name`` and the names of its ``inputs``."""

    name: str
    inputs: tuple[str, ...] = ()

    type_name: ClassVar[str] = ""
    arity: ClassVar[int] = 1
    stateful: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise GraphError(f"node name must be a non-empty string of at most 200 characters, got {self.name!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        for source in self.inputs:
            if not isinstance(source, str):
                raise GraphError(f"node {self.name!r}: inputs must be node names, got {source!r}")
        if self.inputs and len(self.inputs) != self.arity:
            raise GraphError(f"node {self.name!r}: {self.type_name} takes {self.arity} input(s), got {len(self.inputs)}")
        if not self.inputs and self.arity != 1:
            raise GraphError(f"node {self.name!r}: {self.type_name} needs {self.arity} named inputs")

    def output_shape(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        raise NotImplementedError

    def tensor_specs(self, input_shapes: list[tuple[int, ...]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Return the tensors this node needs: name -> (numpy dtype name, shape)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data


@dataclass(frozen=True)
class Conv2d(Node):
    """2-D convolution with ±1 (``binary``) or float32 weights, then I = scale·z + bias.

    Fields: channel counts; ``kernel_size``, ``stride``, ``dilation`` as (height, width)
    in pixels; ``padding`` as (top, bottom, left, right) zero pixels; ``groups`` splits
    the channels (``groups == in_channels`` is a depthwise convolution).

    Tensors: ``<name>.weight`` is uint64 (out, kh, kw, words) of sign bits packed along
    the input channels of the group for ``binary``, or float32 (out, in/groups, kh, kw)
    for ``float32``; ``<name>.scale`` and ``<name>.bias`` are float32 (out,).
    """

    in_channels: int = 1
    out_channels: int = 1
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    weight_format: str = "binary"

    type_name: ClassVar[str] = "Conv2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.name
        _positive_int(self.in_channels, "in_channels", name)
        _positive_int(self.out_channels, "out_channels", name)
        _positive_int(self.groups, "groups", name)
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size", name))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", name))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", name))
        object.__setattr__(self, "padding", _quad(self.padding, "padding", name))
        for field_name in ("kernel_size", "stride", "dilation"):
            if min(getattr(self, field_name)) < 1:
                raise GraphError(f"node {name!r}: {field_name} must be >= 1, got {getattr(self, field_name)}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise GraphError(
                f"node {name!r}: groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        if self.weight_format not in WEIGHT_FORMATS:
            raise GraphError(f"node {name!r}: weight_format must be one of {WEIGHT_FORMATS}, got {self.weight_format!r}")

    def output_shape(self, input_shapes):
        (shape,) = input_shapes
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise GraphError(
                f"node {self.name!r}: expects input (C={self.in_channels}, H, W), got shape {shape}"
            )
        _, height, width = shape
        top, bottom, left, right = self.padding
        out_h = _spatial_output(height, self.kernel_size[0], self.stride[0], top, bottom, self.dilation[0])
        out_w = _spatial_output(width, self.kernel_size[1], self.stride[1], left, right, self.dilation[1])
        if out_h < 1 or out_w < 1:
            raise GraphError(
                f"node {self.name!r}: kernel {self.kernel_size} with dilation {self.dilation} does not fit "
                f"the padded input {shape}; add padding or use a smaller kernel"
            )
        return (self.out_channels, out_h, out_w)

    def tensor_specs(self, input_shapes):
        kh, kw = self.kernel_size
        group_channels = self.in_channels // self.groups
        if self.weight_format == "binary":
            weight = ("uint64", (self.out_channels, kh, kw, words_for(group_channels)))
        else:
            weight = ("float32", (self.out_channels, group_channels, kh, kw))
        return {
            f"{self.name}.weight": weight,
            f"{self.name}.scale": ("float32", (self.out_channels,)),
            f"{self.name}.bias": ("float32", (self.out_channels,)),
        }


@dataclass(frozen=True)
class Linear(Node):
    """Fully connected layer with ±1 (``binary``) or float32 weights, then I = scale·z + bias.

    Tensors: ``<name>.weight`` is uint64 (out, words) of sign bits packed along the
    inputs, or float32 (out, in); ``<name>.scale`` and ``<name>.bias`` are float32 (out,).
    """

    in_features: int = 1
    out_features: int = 1
    weight_format: str = "binary"

    type_name: ClassVar[str] = "Linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self.in_features, "in_features", self.name)
        _positive_int(self.out_features, "out_features", self.name)
        if self.weight_format not in WEIGHT_FORMATS:
            raise GraphError(
                f"node {self.name!r}: weight_format must be one of {WEIGHT_FORMATS}, got {self.weight_format!r}"
            )

    def output_shape(self, input_shapes):
        (shape,) = input_shapes
        if shape != (self.in_features,):
            raise GraphError(
                f"node {self.name!r}: expects input ({self.in_features},), got shape {shape}; "
                "add a Flatten node before it"
            )
        return (self.out_features,)

    def tensor_specs(self, input_shapes):
        if self.weight_format == "binary":
            weight = ("uint64", (self.out_features, words_for(self.in_features)))
        else:
            weight = ("float32", (self.out_features, self.in_features))
        return {
            f"{self.name}.weight": weight,
            f"{self.name}.scale": ("float32", (self.out_features,)),
            f"{self.name}.bias": ("float32", (self.out_features,)),
        }


@dataclass(frozen=True)
class LIF(Node):
    """Leaky integrate-and-fire neuron emitting its membrane potential as a real-valued spike.

    ``tau`` is the decay constant τ (0 <= τ <= 1, unitless, applied once per timestep);
    ``threshold`` is θ (> 0, in the units of the synaptic current).
    """

    tau: float = 0.25
    threshold: float = 0.5

    type_name: ClassVar[str] = "LIF"
    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        tau = _finite(self.tau, "tau", self.name)
        threshold = _finite(self.threshold, "threshold", self.name)
        if not 0.0 <= tau <= 1.0:
            raise GraphError(f"node {self.name!r}: tau must be in [0, 1], got {tau}")
        if threshold <= 0.0:
            raise GraphError(f"node {self.name!r}: threshold must be > 0, got {threshold}")
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "threshold", threshold)

    def output_shape(self, input_shapes):
        return input_shapes[0]


@dataclass(frozen=True)
class _Pool2d(Node):
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size", self.name))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", self.name))
        object.__setattr__(self, "padding", _quad(self.padding, "padding", self.name))
        for field_name in ("kernel_size", "stride"):
            if min(getattr(self, field_name)) < 1:
                raise GraphError(f"node {self.name!r}: {field_name} must be >= 1, got {getattr(self, field_name)}")

        # PyTorch rejects pooling padding above half the kernel, and so do the kernels.
        top, bottom, left, right = self.padding
        half_h, half_w = self.kernel_size[0] // 2, self.kernel_size[1] // 2
        if max(top, bottom) > half_h or max(left, right) > half_w:
            raise GraphError(
                f"node {self.name!r}: padding {self.padding} exceeds half the kernel {self.kernel_size}; "
                "use at most kernel_size // 2 on each side"
            )

    def _dilation(self) -> tuple[int, int]:
        return (1, 1)

    def output_shape(self, input_shapes):
        (shape,) = input_shapes
        if len(shape) != 3:
            raise GraphError(f"node {self.name!r}: expects input (C, H, W), got shape {shape}")
        channels, height, width = shape
        top, bottom, left, right = self.padding
        dilation = self._dilation()
        out_h = _spatial_output(height, self.kernel_size[0], self.stride[0], top, bottom, dilation[0])
        out_w = _spatial_output(width, self.kernel_size[1], self.stride[1], left, right, dilation[1])
        if out_h < 1 or out_w < 1:
            raise GraphError(f"node {self.name!r}: pooling window {self.kernel_size} does not fit input {shape}")
        return (channels, out_h, out_w)


@dataclass(frozen=True)
class AvgPool2d(_Pool2d):
    """Average pooling; the divisor is always kh·kw (PyTorch's count_include_pad=True)."""

    type_name: ClassVar[str] = "AvgPool2d"


@dataclass(frozen=True)
class MaxPool2d(_Pool2d):
    """Max pooling; padded positions count as -inf, as in PyTorch."""

    dilation: tuple[int, int] = (1, 1)

    type_name: ClassVar[str] = "MaxPool2d"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", self.name))
        if min(self.dilation) < 1:
            raise GraphError(f"node {self.name!r}: dilation must be >= 1, got {self.dilation}")

    def _dilation(self) -> tuple[int, int]:
        return self.dilation


@dataclass(frozen=True)
class Flatten(Node):
    """Flatten (C, H, W) to (C·H·W,) in C order, as ``torch.flatten(x, 1)`` does."""

    type_name: ClassVar[str] = "Flatten"

    def output_shape(self, input_shapes):
        count = 1
        for dim in input_shapes[0]:
            count *= dim
        return (count,)


@dataclass(frozen=True)
class Add(Node):
    """Elementwise sum of two inputs of the same shape (a residual connection)."""

    type_name: ClassVar[str] = "Add"
    arity: ClassVar[int] = 2

    def output_shape(self, input_shapes):
        first, second = input_shapes
        if first != second:
            raise GraphError(f"node {self.name!r}: inputs have different shapes {first} and {second}")
        return first


NODE_TYPES: dict[str, type[Node]] = {
    cls.type_name: cls for cls in (Conv2d, Linear, LIF, AvgPool2d, MaxPool2d, Flatten, Add)
}
