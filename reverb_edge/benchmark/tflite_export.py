"""Export a ReverB-SNN model as a dense float32 TensorFlow Lite network, for benchmarks.

The exported network computes what :meth:`reverb_edge.Engine.predict` computes,
with ordinary float32 TFLite operators and no TensorFlow installation. The file
is written with the ``tflite`` schema package (generated flatbuffers builders)
and ``flatbuffers``.

Layout:

* input ``input``: float32 (1, H, W, C), channels-last (NHWC), the image that
  direct encoding feeds at every timestep; or, with ``frames=True``, input
  ``frames``: float32 (T, H, W, C), one frame per timestep (for example binned
  DVS events), as :meth:`reverb_edge.Engine.predict_frames` takes them;
* output ``scores``: float32 (1, classes), the mean of the readout over the T
  timesteps (the readout itself when T = 1).

The T timesteps are unrolled. Under direct encoding, nodes upstream of every
LIF run once, as in the engine, and every other node appears T times. With
``frames=True`` every node appears T times, and timestep t reads frame t
through a SLICE of begin (t, 0, 0, 0) and size (1, H, W, C), an operator that
the XNNPACK delegate takes, so the graph stays in one partition. Binary weights become float
±1 × scale (the per-channel scale folded into the filter) plus bias, and so do
float32 weights. Folding changes the float32 rounding of I = scale·z + bias,
and the convolution kernels add in another order than the engine, so scores
differ from the engine's in the last bits. A membrane potential within a few
ulp of θ can therefore fire on one side only.

LIF neurons (H = τ·U + I; fire where H ≥ θ; spike = H where fired else 0;
U = 0 where fired else H) take one of two forms:

* ``lif="select"``: GREATER_EQUAL and SELECT_V2. The XNNPACK delegate takes
  neither, so each LIF splits the delegated graph.
* ``lif="arith"``: U = H · ceil(min(relu(θ - H), 1)) and spike = H - U, with
  the SUB (fused RELU), MINIMUM, CEIL, MUL and SUB operators that XNNPACK
  takes. The factor ceil(min(relu(θ - H), 1)) is exactly 1 where H < θ and 0
  where H ≥ θ, because IEEE float32 subtraction returns 0 only for equal
  operands and otherwise keeps the sign of θ - H. Multiplying by 0 or 1 and
  subtracting H - H or H - 0 are exact too, so both forms give the same
  spikes and membranes for finite H. Kernels that flush subnormals to zero
  keep this exact while θ >= 2**-102 (about 2e-31), because θ - H is then
  never subnormal.

Plain CNNs (``relu_after``): the graph of a CNN has no neurons, and the named
convolution and linear nodes are followed by ReLU, which is fused into their
CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED operator. The engine cannot run
such a graph, so only the export takes it; see
:func:`reverb_edge.converters.plain_cnn.export_plain_cnn_tflite`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np

from reverb_edge.bitpack import unpack_signs
from reverb_edge.errors import MissingExtraError, ReverbError
from reverb_edge.graph import Graph
from reverb_edge.modelfile import Model, load_model
from reverb_edge.nodes import LIF, Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Node
from reverb_edge.registry import resolve_model

logger = logging.getLogger(__name__)

LIF_FORMS = ("select", "arith")
# The bench extra also installs ai-edge-litert, which has no wheel for some boards, so a user of
# the tflite-runtime fallback installs the two schema packages alone.
INSTALL_HINT = 'pip install "reverb-edge[bench]", or beside tflite-runtime: pip install tflite flatbuffers'

# TFLite schema constants (schema version 3): tensor types and padding modes.
_FLOAT32 = 0
_INT32 = 2
_BOOL = 6
_INT8 = 9
_PADDING_SAME = 0
_PADDING_VALID = 1
_SCHEMA_VERSION = 3
# Constant buffers start on 16-byte boundaries, so float32 weights are aligned for SIMD loads.
_BUFFER_ALIGNMENT = 16


class TFLiteExportError(ReverbError, ValueError):
    """A model contains a layer or layout that the TFLite export cannot express exactly."""


def import_tflite_schema() -> tuple[Any, Any]:
    """Import and return the ``tflite`` and ``flatbuffers`` modules, or raise MissingExtraError."""
    try:
        import flatbuffers
        import tflite
    except ImportError as err:
        raise MissingExtraError(
            f"the TFLite export needs the 'tflite' and 'flatbuffers' packages ({err}); install them with {INSTALL_HINT}"
        ) from err
    return tflite, flatbuffers


def export_tflite(
    model: Model | str | os.PathLike, path: str | os.PathLike, lif: str = "select", relu_after: Collection[str] = (),
    frames: bool = False,
) -> Path:
    """Write ``model`` as a dense float32 .tflite file at ``path`` and return the path.

    ``model`` is a loaded :class:`Model`, the path of a .reverb file or a
    shipped model name. ``lif`` is ``"select"`` or ``"arith"``, and
    ``relu_after`` names the Conv2d and Linear nodes whose output passes
    through ReLU (see the module documentation). ``frames=True`` makes the
    input T frames (T, H, W, C), one per timestep, instead of one image.
    Raises :class:`TFLiteExportError` for a layer that has no exact TFLite
    form, and MissingExtraError when the schema packages are missing.
    """
    data = build_tflite(model, lif=lif, relu_after=relu_after, frames=frames)
    path = Path(path)
    path.write_bytes(data)
    logger.info("wrote %s (%d bytes, lif=%s, frames=%s)", path, len(data), lif, frames)
    return path


def build_tflite(
    model: Model | str | os.PathLike, lif: str = "select", relu_after: Collection[str] = (), frames: bool = False
) -> bytes:
    """Return the .tflite flatbuffer that :func:`export_tflite` writes."""
    if lif not in LIF_FORMS:
        raise TFLiteExportError(f"lif must be one of {LIF_FORMS}, got {lif!r}")
    if isinstance(relu_after, str):
        raise TFLiteExportError(f"relu_after must be a collection of node names, got the string {relu_after!r}")
    if not isinstance(model, Model):
        model = load_model(resolve_model(model))
    tflite, flatbuffers = import_tflite_schema()
    network = _Network(tflite)
    _Lowering(model, network, lif, frozenset(relu_after), frames=frames).run()
    return network.serialize(flatbuffers)


@dataclass(frozen=True)
class Quantization:
    """The affine quantization of a TFLite tensor: real value = scale × (integer value − zero point).

    A per-tensor quantization has one scale and one zero point. A per-channel
    (per-axis) one has a scale and a zero point for each index along
    ``quantized_dimension``.
    """

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int = 0


@dataclass(frozen=True)
class _Value:
    """A tensor of the TFLite graph that contains one node's output.

    ``shape`` is the TFLite shape: (1, H, W, C) for images and (1, F) for vectors.
    ``flattened_from`` is the engine shape (C, H, W) of a vector that Flatten made
    from a channels-last image. Its elements are in (H, W, C) order, where the
    engine's are in (C, H, W) order. It is None when both orders agree.
    """

    index: int
    shape: tuple[int, ...]
    flattened_from: tuple[int, int, int] | None = None


class _Network:
    """The tensors, constant buffers and operators of one TFLite subgraph, before serialization."""

    def __init__(self, tflite: Any) -> None:
        self.tflite = tflite
        self.buffers: list[bytes] = [b""]  # buffer 0 is the empty buffer of every non-constant tensor
        self.tensors: list[tuple[str, tuple[int, ...], int, int, Quantization | None]] = []
        self.operators: list[tuple[int, list[int], list[int], str | None, dict[str, Any]]] = []
        # Operator codes by (builtin code, version), in order of first use.
        self.opcodes: dict[tuple[int, int], int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(
        self, name: str, shape: tuple[int, ...], tensor_type: int = _FLOAT32, quantization: Quantization | None = None
    ) -> int:
        self.tensors.append((name, tuple(int(d) for d in shape), tensor_type, 0, quantization))
        return len(self.tensors) - 1

    def rename(self, index: int, name: str) -> None:
        _, shape, tensor_type, buffer, quantization = self.tensors[index]
        self.tensors[index] = (name, shape, tensor_type, buffer, quantization)

    def quantization(self, index: int) -> Quantization | None:
        return self.tensors[index][4]

    def constant(self, name: str, array: np.ndarray, quantization: Quantization | None = None) -> int:
        array = np.asarray(array)
        if array.dtype == np.float32:
            tensor_type = _FLOAT32
        elif array.dtype == np.int32:
            tensor_type = _INT32
        elif array.dtype == np.int8:
            tensor_type = _INT8
        else:
            raise TypeError(f"constant {name!r} has dtype {array.dtype}; only float32, int32 and int8 are written")
        self.buffers.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
        self.tensors.append(
            (name, tuple(int(d) for d in array.shape), tensor_type, len(self.buffers) - 1, quantization)
        )
        return len(self.tensors) - 1

    def operator(
        self, op_name: str, inputs: list[int], outputs: list[int], options: str | None = None, version: int = 1,
        **fields: Any,
    ) -> None:
        """Append an operator; ``version`` is the builtin operator version that its tensor types need."""
        code = getattr(self.tflite.BuiltinOperator, op_name)
        opcode_index = self.opcodes.setdefault((code, version), len(self.opcodes))
        self.operators.append((opcode_index, inputs, outputs, options, fields))

    def serialize(self, flatbuffers: Any) -> bytes:
        tfl = self.tflite
        builder = flatbuffers.Builder(1024 + sum(len(data) for data in self.buffers))

        # Flatbuffers are built bottom-up: every vector and sub-table before the table that refers to it.
        buffer_offsets = []
        for data in self.buffers:
            data_offset = _byte_vector(builder, data) if data else None
            tfl.BufferStart(builder)
            if data_offset is not None:
                tfl.BufferAddData(builder, data_offset)
            buffer_offsets.append(tfl.BufferEnd(builder))

        tensor_offsets = []
        for name, shape, tensor_type, buffer, quantization in self.tensors:
            name_offset = builder.CreateString(name)
            shape_offset = _int32_vector(builder, shape)
            quantization_offset = _quantization_table(tfl, builder, quantization) if quantization else None
            tfl.TensorStart(builder)
            tfl.TensorAddShape(builder, shape_offset)
            tfl.TensorAddType(builder, tensor_type)
            tfl.TensorAddBuffer(builder, buffer)
            tfl.TensorAddName(builder, name_offset)
            if quantization_offset is not None:
                tfl.TensorAddQuantization(builder, quantization_offset)
            tensor_offsets.append(tfl.TensorEnd(builder))

        operator_offsets = []
        for opcode_index, inputs, outputs, options, fields in self.operators:
            options_offset = _options_table(tfl, builder, options, fields) if options else None
            inputs_offset = _int32_vector(builder, inputs)
            outputs_offset = _int32_vector(builder, outputs)
            tfl.OperatorStart(builder)
            tfl.OperatorAddOpcodeIndex(builder, opcode_index)
            tfl.OperatorAddInputs(builder, inputs_offset)
            tfl.OperatorAddOutputs(builder, outputs_offset)
            if options_offset is not None:
                tfl.OperatorAddBuiltinOptionsType(builder, getattr(tfl.BuiltinOptions, options))
                tfl.OperatorAddBuiltinOptions(builder, options_offset)
            operator_offsets.append(tfl.OperatorEnd(builder))

        tensors_vector = _offset_vector(builder, tensor_offsets)
        operators_vector = _offset_vector(builder, operator_offsets)
        inputs_vector = _int32_vector(builder, self.inputs)
        outputs_vector = _int32_vector(builder, self.outputs)
        name_offset = builder.CreateString("main")
        tfl.SubGraphStart(builder)
        tfl.SubGraphAddTensors(builder, tensors_vector)
        tfl.SubGraphAddInputs(builder, inputs_vector)
        tfl.SubGraphAddOutputs(builder, outputs_vector)
        tfl.SubGraphAddOperators(builder, operators_vector)
        tfl.SubGraphAddName(builder, name_offset)
        subgraph = tfl.SubGraphEnd(builder)

        opcode_offsets = []
        placeholder = tfl.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
        for code, version in sorted(self.opcodes, key=self.opcodes.get):
            tfl.OperatorCodeStart(builder)
            # Codes above 127 do not fit the deprecated int8 field, which then contains the placeholder.
            tfl.OperatorCodeAddDeprecatedBuiltinCode(builder, min(code, placeholder))
            tfl.OperatorCodeAddBuiltinCode(builder, code)
            tfl.OperatorCodeAddVersion(builder, version)
            opcode_offsets.append(tfl.OperatorCodeEnd(builder))

        opcodes_vector = _offset_vector(builder, opcode_offsets)
        subgraphs_vector = _offset_vector(builder, [subgraph])
        buffers_vector = _offset_vector(builder, buffer_offsets)
        description = builder.CreateString("reverb-edge dense export")
        tfl.ModelStart(builder)
        tfl.ModelAddVersion(builder, _SCHEMA_VERSION)
        tfl.ModelAddOperatorCodes(builder, opcodes_vector)
        tfl.ModelAddSubgraphs(builder, subgraphs_vector)
        tfl.ModelAddDescription(builder, description)
        tfl.ModelAddBuffers(builder, buffers_vector)
        root = tfl.ModelEnd(builder)
        builder.Finish(root, file_identifier=b"TFL3")
        return bytes(builder.Output())


def _byte_vector(builder: Any, data: bytes) -> int:
    builder.StartVector(1, len(data), _BUFFER_ALIGNMENT)
    builder.head -= len(data)
    builder.Bytes[builder.head : builder.head + len(data)] = data
    return builder.EndVector()


def _int32_vector(builder: Any, values) -> int:
    return builder.CreateNumpyVector(np.asarray(list(values), dtype="<i4"))


def _quantization_table(tfl: Any, builder: Any, quantization: Quantization) -> int:
    """Build a QuantizationParameters table: float32 scales, int64 zero points and the quantized dimension."""
    scales = builder.CreateNumpyVector(np.asarray(quantization.scales, dtype="<f4"))
    zero_points = builder.CreateNumpyVector(np.asarray(quantization.zero_points, dtype="<i8"))
    tfl.QuantizationParametersStart(builder)
    tfl.QuantizationParametersAddScale(builder, scales)
    tfl.QuantizationParametersAddZeroPoint(builder, zero_points)
    tfl.QuantizationParametersAddQuantizedDimension(builder, quantization.quantized_dimension)
    return tfl.QuantizationParametersEnd(builder)


def _offset_vector(builder: Any, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _options_table(tfl: Any, builder: Any, table: str, fields: dict[str, Any]) -> int:
    """Build the options table ``table`` (for example ``Conv2DOptions``) from snake_case fields."""
    getattr(tfl, f"{table}Start")(builder)
    for field_name, value in fields.items():
        camel = "".join(part.capitalize() for part in field_name.split("_"))
        getattr(tfl, f"{table}Add{camel}")(builder, value)
    return getattr(tfl, f"{table}End")(builder)


class _Lowering:
    """Translate a graph, unrolled over its T timesteps, into operators of a :class:`_Network`."""

    def __init__(
        self, model: Model, network: _Network, lif: str, relu_after: frozenset[str] = frozenset(), frames: bool = False
    ) -> None:
        self.graph: Graph = model.graph
        self.frames = frames
        self.tensors = model.tensors
        self.network = network
        self.lif = lif
        self.relu_after = relu_after
        self.activation = network.tflite.ActivationFunctionType
        self.constants: dict[tuple, int] = {}

    def run(self) -> None:
        graph = self.graph
        self._check_supported()
        channels, height, width = graph.input.shape
        image_shape = (1, height, width, channels)
        if self.frames:
            input_index = self.network.tensor("frames", (graph.timesteps, height, width, channels))
            # Every timestep reads another frame, so no node's output is the same at every timestep.
            invariant_names: set[str] = set()
            invariant: dict[str, _Value] = {}
        else:
            input_index = self.network.tensor("input", image_shape)
            invariant_names = graph.time_invariant()
            invariant = {"input": _Value(input_index, image_shape)}
        self.network.inputs.append(input_index)

        for node in graph.nodes:
            if node.name in invariant_names:
                invariant[node.name] = self._lower(node, [invariant[s] for s in graph.sources[node.name]], node.name)

        membranes: dict[str, _Value | None] = {node.name: None for node in graph.nodes if isinstance(node, LIF)}
        readouts = []
        for step in range(graph.timesteps):
            values = dict(invariant)
            if self.frames:
                values["input"] = self._frame(input_index, step, image_shape)
            last_step = step == graph.timesteps - 1
            for node in graph.nodes:
                if node.name in invariant_names:
                    continue
                inputs = [values[s] for s in graph.sources[node.name]]
                suffix = f"{node.name}/t{step}"
                if isinstance(node, LIF):
                    spikes, membranes[node.name] = self._lif(node, inputs[0], membranes[node.name], suffix, last_step)
                    values[node.name] = spikes
                else:
                    values[node.name] = self._lower(node, inputs, suffix)
            readouts.append(values[graph.output_name])

        output = readouts[0]
        if output.flattened_from is not None:
            raise TFLiteExportError(
                f"the readout node {graph.output_name!r} is a flattened (C, H, W) = {output.flattened_from} "
                "image, whose element order differs in channels-last TFLite; end the graph with a Linear layer"
            )
        self.network.outputs.append(self._mean(readouts))

    def _check_supported(self) -> None:
        """Raise before any operator is built, so that one error lists the first unsupported node."""
        for node in self.graph.nodes:
            if isinstance(node, Conv2d) and node.groups not in (1, node.in_channels):
                raise TFLiteExportError(
                    f"node {node.name!r}: a convolution with groups={node.groups} (in_channels="
                    f"{node.in_channels}) has no TFLite operator; only groups=1 (CONV_2D) and "
                    "groups=in_channels (DEPTHWISE_CONV_2D) export. Split it into separate convolutions"
                )
            if not isinstance(node, (Conv2d, Linear, LIF, AvgPool2d, MaxPool2d, Flatten, Add)):
                raise TFLiteExportError(f"node {node.name!r}: the TFLite export does not support {node.type_name}")
        synaptic = {node.name for node in self.graph.nodes if isinstance(node, (Conv2d, Linear))}
        unknown = sorted(self.relu_after - synaptic)
        if unknown:
            raise TFLiteExportError(
                f"relu_after names {unknown}, which are not Conv2d or Linear nodes of the graph; "
                f"ReLU fuses only into those ({sorted(synaptic)})"
            )

    def _fused_activation(self, node: Node) -> int:
        return self.activation.RELU if node.name in self.relu_after else self.activation.NONE

    def _lower(self, node: Node, inputs: list[_Value], name: str) -> _Value:
        if isinstance(node, Conv2d):
            return self._conv(node, inputs[0], name)
        if isinstance(node, Linear):
            return self._linear(node, inputs[0], name)
        if isinstance(node, AvgPool2d):
            return self._avg_pool(node, inputs[0], name)
        if isinstance(node, MaxPool2d):
            return self._max_pool(node, inputs[0], name)
        if isinstance(node, Flatten):
            return self._flatten(inputs[0], name)
        if isinstance(node, Add):
            return self._add(node, inputs, name)
        raise TFLiteExportError(f"node {node.name!r}: the TFLite export does not support {node.type_name}")

    # Constants and plain operators.

    def _scalar(self, value: float) -> int:
        key = ("scalar", np.float32(value).tobytes())
        if key not in self.constants:
            self.constants[key] = self.network.constant(f"const/{value!r}", np.array([value], np.float32))
        return self.constants[key]

    def _frame(self, frames_index: int, step: int, shape: tuple[int, ...]) -> _Value:
        """Slice frame ``step`` (1, H, W, C) out of the (T, H, W, C) input."""
        begin = self.network.constant(f"frames/begin{step}", np.array([step, 0, 0, 0], np.int32))
        size = self._shape_constant(shape)
        out = self._output(f"frames/t{step}", shape)
        self.network.operator("SLICE", [frames_index, begin, size], [out], "SliceOptions")
        return _Value(out, shape)

    def _shape_constant(self, shape: tuple[int, ...]) -> int:
        key = ("shape", shape)
        if key not in self.constants:
            self.constants[key] = self.network.constant(f"const/shape{list(shape)}", np.array(shape, np.int32))
        return self.constants[key]

    def _output(self, name: str, shape: tuple[int, ...]) -> int:
        return self.network.tensor(name, shape)

    def _binary(self, op_name: str, a: int, b: int, shape: tuple[int, ...], name: str, **fields) -> int:
        out = self._output(name, shape)
        options = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}.get(op_name)
        if options is None:
            options = "MaximumMinimumOptions" if op_name in ("MAXIMUM", "MINIMUM") else None
        self.network.operator(op_name, [a, b], [out], options, **fields)
        return out

    # Layers.

    def _conv(self, node: Conv2d, x: _Value, name: str) -> _Value:
        weight, bias = conv_weights(self.tensors, node)
        kernel = node.kernel_size
        x, padding = self._pad_for_window(x, node.padding, kernel, node.stride, node.dilation, 0.0, name)
        out_channels, out_h, out_w = self.graph.shapes[node.name]
        out = self._output(name, (1, out_h, out_w, out_channels))
        fields = dict(
            padding=padding, stride_w=node.stride[1], stride_h=node.stride[0],
            dilation_w_factor=node.dilation[1], dilation_h_factor=node.dilation[0],
            fused_activation_function=self._fused_activation(node),
        )
        if node.groups == 1:
            filter_index = self._weight_constant(node, "filter", weight)
            bias_index = self._weight_constant(node, "bias", bias)
            self.network.operator("CONV_2D", [x.index, filter_index, bias_index], [out], "Conv2DOptions", **fields)
        else:
            # TFLite's depthwise filter is (1, kh, kw, in·multiplier), and output channel
            # c·multiplier + m reads input channel c, as groups == in_channels does in PyTorch.
            filter_index = self._weight_constant(node, "filter", weight.transpose(3, 1, 2, 0))
            bias_index = self._weight_constant(node, "bias", bias)
            self.network.operator(
                "DEPTHWISE_CONV_2D", [x.index, filter_index, bias_index], [out], "DepthwiseConv2DOptions",
                depth_multiplier=node.out_channels // node.in_channels, **fields,
            )
        return _Value(out, (1, out_h, out_w, out_channels))

    def _weight_constant(self, node: Node, kind: str, array: np.ndarray) -> int:
        # Time-variant layers run T times; their weights are stored once.
        key = ("weight", node.name, kind)
        if key not in self.constants:
            self.constants[key] = self.network.constant(f"{node.name}/{kind}", np.ascontiguousarray(array, np.float32))
        return self.constants[key]

    def _linear(self, node: Linear, x: _Value, name: str) -> _Value:
        weight = linear_weight(self.tensors, node, x.flattened_from)
        filter_index = self._weight_constant(node, "weight", weight)
        bias_index = self._weight_constant(node, "bias", self.tensors[f"{node.name}.bias"])
        out = self._output(name, (1, node.out_features))
        self.network.operator(
            "FULLY_CONNECTED", [x.index, filter_index, bias_index], [out], "FullyConnectedOptions",
            fused_activation_function=self._fused_activation(node), keep_num_dims=False,
        )
        return _Value(out, (1, node.out_features))

    def _avg_pool(self, node: AvgPool2d, x: _Value, name: str) -> _Value:
        # The engine divides by kh·kw even at the border (count_include_pad=True). TFLite's SAME
        # padding leaves padded positions out of the count, so padding is always an explicit PAD of zeros.
        if any(node.padding):
            x = self._pad(x, node.padding, 0.0, f"{name}/pad")
        return self._pool("AVERAGE_POOL_2D", node, x, _PADDING_VALID, name)

    def _max_pool(self, node: MaxPool2d, x: _Value, name: str) -> _Value:
        if node.dilation != (1, 1):
            return self._dilated_max_pool(node, x, name)
        # Padded positions count as -inf, which TFLite's SAME max pooling matches by ignoring them.
        x, padding = self._pad_for_window(x, node.padding, node.kernel_size, node.stride, (1, 1), -np.inf, name)
        return self._pool("MAX_POOL_2D", node, x, padding, name)

    def _pool(self, op_name: str, node: AvgPool2d | MaxPool2d, x: _Value, padding: int, name: str) -> _Value:
        channels, out_h, out_w = self.graph.shapes[node.name]
        out = self._output(name, (1, out_h, out_w, channels))
        self.network.operator(
            op_name, [x.index], [out], "Pool2DOptions", padding=padding,
            stride_w=node.stride[1], stride_h=node.stride[0],
            filter_width=node.kernel_size[1], filter_height=node.kernel_size[0],
            fused_activation_function=self.activation.NONE,
        )
        return _Value(out, (1, out_h, out_w, channels))

    def _dilated_max_pool(self, node: MaxPool2d, x: _Value, name: str) -> _Value:
        """Take the maximum of one strided slice per kernel offset, since MAX_POOL_2D has no dilation."""
        if any(node.padding):
            x = self._pad(x, node.padding, -np.inf, f"{name}/pad")
        channels, out_h, out_w = self.graph.shapes[node.name]
        shape = (1, out_h, out_w, channels)
        stride_h, stride_w = node.stride
        best = None
        for ky in range(node.kernel_size[0]):
            for kx in range(node.kernel_size[1]):
                row, col = ky * node.dilation[0], kx * node.dilation[1]
                begin = np.array([0, row, col, 0], np.int32)
                end = np.array([1, row + stride_h * (out_h - 1) + 1, col + stride_w * (out_w - 1) + 1, channels], np.int32)
                strides = np.array([1, stride_h, stride_w, 1], np.int32)
                window = self._output(f"{name}/window{ky}_{kx}", shape)
                self.network.operator(
                    "STRIDED_SLICE",
                    [x.index, self.network.constant(f"{name}/begin{ky}_{kx}", begin),
                     self.network.constant(f"{name}/end{ky}_{kx}", end),
                     self.network.constant(f"{name}/strides{ky}_{kx}", strides)],
                    [window], "StridedSliceOptions",
                )
                best = window if best is None else self._binary("MAXIMUM", best, window, shape, f"{name}/max{ky}_{kx}")
        return _Value(best, shape)

    def _flatten(self, x: _Value, name: str) -> _Value:
        if len(x.shape) == 2:
            return x
        _, height, width, channels = x.shape
        features = height * width * channels
        shape_index = self.network.constant(f"{name}/shape", np.array([1, features], np.int32))
        out = self._output(name, (1, features))
        self.network.operator("RESHAPE", [x.index, shape_index], [out], "ReshapeOptions")
        # (H, W, C) and (C, H, W) orders agree when only one of C and H·W exceeds 1.
        permuted = channels > 1 and height * width > 1
        return _Value(out, (1, features), (channels, height, width) if permuted else None)

    def _add(self, node: Add, inputs: list[_Value], name: str) -> _Value:
        first, second = inputs
        if first.flattened_from != second.flattened_from:
            raise TFLiteExportError(
                f"node {node.name!r} adds vectors flattened from different image shapes "
                f"({first.flattened_from} and {second.flattened_from}), whose channels-last orders differ; "
                "add the images before Flatten"
            )
        out = self._binary("ADD", first.index, second.index, first.shape, name,
                           fused_activation_function=self.activation.NONE)
        return _Value(out, first.shape, first.flattened_from)

    # Padding.

    def _pad_for_window(
        self, x: _Value, padding: tuple[int, int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
        dilation: tuple[int, int], fill: float, name: str,
    ) -> tuple[_Value, int]:
        """Return the input and TFLite padding mode that give ``padding`` for a sliding window.

        TFLite's SAME mode pads (total // 2, total - total // 2) with zeros for convolutions and
        ignores padded positions in max pooling. Other padding becomes an explicit PAD, then VALID.
        """
        if not any(padding):
            return x, _PADDING_VALID
        _, height, width, _ = x.shape
        if (padding[0], padding[1]) == _same_padding(height, kernel[0], stride[0], dilation[0]) and (
            padding[2], padding[3]) == _same_padding(width, kernel[1], stride[1], dilation[1]):
            return x, _PADDING_SAME
        return self._pad(x, padding, fill, f"{name}/pad"), _PADDING_VALID

    def _pad(self, x: _Value, padding: tuple[int, int, int, int], fill: float, name: str) -> _Value:
        top, bottom, left, right = padding
        _, height, width, channels = x.shape
        shape = (1, height + top + bottom, width + left + right, channels)
        paddings = self.network.constant(f"{name}/paddings", np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        out = self._output(name, shape)
        if fill == 0.0:
            self.network.operator("PAD", [x.index, paddings], [out], "PadOptions")
        else:
            self.network.operator("PADV2", [x.index, paddings, self._scalar(fill)], [out], "PadV2Options")
        return _Value(out, shape)

    # Neurons and readout.

    def _lif(
        self, node: LIF, current: _Value, membrane: _Value | None, name: str, last_step: bool
    ) -> tuple[_Value, _Value | None]:
        """Emit one LIF timestep; return the spikes and the new membrane (None after the last step)."""
        shape = current.shape
        none = self.activation.NONE
        potential = current.index
        if membrane is not None and node.tau != 0.0:
            decayed = self._binary("MUL", membrane.index, self._scalar(node.tau), shape, f"{name}/decay",
                                   fused_activation_function=none)
            potential = self._binary("ADD", decayed, current.index, shape, f"{name}/potential",
                                     fused_activation_function=none)
        threshold = self._scalar(node.threshold)
        membrane_index = None
        if self.lif == "select":
            fired = self.network.tensor(f"{name}/fired", shape, _BOOL)
            self.network.operator("GREATER_EQUAL", [potential, threshold], [fired], "GreaterEqualOptions")
            spikes = self._output(f"{name}/spikes", shape)
            zero = self._scalar(0.0)
            self.network.operator("SELECT_V2", [fired, potential, zero], [spikes], "SelectV2Options")
            if not last_step:
                membrane_index = self._output(f"{name}/membrane", shape)
                self.network.operator("SELECT_V2", [fired, zero, potential], [membrane_index], "SelectV2Options")
        else:
            # below = ceil(min(relu(θ - H), 1)) is 1 where H < θ and 0 where H >= θ, exactly.
            gap = self._binary("SUB", threshold, potential, shape, f"{name}/gap",
                               fused_activation_function=self.activation.RELU)
            clipped = self._binary("MINIMUM", gap, self._scalar(1.0), shape, f"{name}/clipped")
            below = self._output(f"{name}/below", shape)
            self.network.operator("CEIL", [clipped], [below])
            membrane_index = self._binary("MUL", potential, below, shape, f"{name}/membrane",
                                          fused_activation_function=none)
            spikes = self._binary("SUB", potential, membrane_index, shape, f"{name}/spikes",
                                  fused_activation_function=none)
            if last_step:
                membrane_index = None
        new_membrane = _Value(membrane_index, shape) if membrane_index is not None else None
        return _Value(spikes, shape, current.flattened_from), new_membrane

    def _mean(self, readouts: list[_Value]) -> int:
        """Sum the readouts in timestep order and divide by T, as Engine.predict does."""
        none = self.activation.NONE
        shape = readouts[0].shape
        total = readouts[0].index
        if len(readouts) == 1 and total not in self.network.inputs:
            # T = 1: the readout is the scores, and dividing by 1 would only add an operator.
            self.network.rename(total, "scores")
            return total
        for step, readout in enumerate(readouts[1:], start=1):
            total = self._binary("ADD", total, readout.index, shape, f"readout_sum/t{step}",
                                 fused_activation_function=none)
        scores = self._output("scores", shape)
        self.network.operator("DIV", [total, self._scalar(float(len(readouts)))], [scores], "DivOptions",
                              fused_activation_function=none)
        return scores


def conv_weights(tensors: dict[str, np.ndarray], node: Conv2d) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 filter (out, kh, kw, in/groups) with the scale folded in, and the bias."""
    scale = tensors[f"{node.name}.scale"]
    bias = tensors[f"{node.name}.bias"]
    raw = tensors[f"{node.name}.weight"]
    if node.weight_format == "binary":
        signs = unpack_signs(raw, node.in_channels // node.groups).astype(np.float32)  # (O, kh, kw, Cg)
    else:
        signs = np.asarray(raw, np.float32).transpose(0, 2, 3, 1)  # (O, Cg, kh, kw) -> (O, kh, kw, Cg)
    weight = signs * scale[:, None, None, None]
    return np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32)


def linear_weight(
    tensors: dict[str, np.ndarray], node: Linear, flattened_from: tuple[int, int, int] | None
) -> np.ndarray:
    """Return the float32 weight (out, in) with the scale folded in, its columns in TFLite's input order.

    ``flattened_from`` is the (C, H, W) shape of an input that Flatten made from a channels-last image.
    """
    scale = tensors[f"{node.name}.scale"]
    raw = tensors[f"{node.name}.weight"]
    if node.weight_format == "binary":
        weight = unpack_signs(raw, node.in_features).astype(np.float32)
    else:
        weight = np.asarray(raw, np.float32)
    weight = weight * scale[:, None]
    if flattened_from is not None:
        # The engine flattens (C, H, W) and TFLite flattens (H, W, C): permute the columns
        # instead of transposing the activations at run time.
        channels, height, width = flattened_from
        weight = weight.reshape(node.out_features, channels, height, width).transpose(0, 2, 3, 1)
        weight = weight.reshape(node.out_features, node.in_features)
    return weight


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Return the (before, after) padding of TFLite's SAME mode along one axis."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2
