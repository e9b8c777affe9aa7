"""Export a plain CNN as an int8 TensorFlow Lite network by post-training quantization, without TensorFlow.

The network follows TFLite's 8-bit quantization specification, the QS8 scheme
that the XNNPACK delegate runs, where real value = scale × (q − zero point):

* activations: int8 per tensor, with the scale and zero point that map the
  calibrated range [min(0, lowest), max(0, highest)] onto [-128, 127];
* CONV_2D filters: int8 in [-127, 127], symmetric (zero point 0), one scale per
  output channel (``quantized_dimension`` 0);
* FULLY_CONNECTED weights: int8 in [-127, 127], symmetric, one scale per tensor;
* biases: int32 with zero point 0 and scale = input scale × filter scale, per
  output channel where the filter is;
* ReLU stays fused into CONV_2D and FULLY_CONNECTED, which then clamp their
  output to the quantized range of [0, max];
* MAX_POOL_2D, PAD and RESHAPE keep their input's scale and zero point.

A QUANTIZE operator takes the float32 input ``input`` (1, H, W, C), and a
DEQUANTIZE operator writes the float32 output ``scores`` (1, classes), so the
file takes the same normalised images and returns logits as the float32
export. The ranges come from a float32 forward pass in NumPy over calibration
images, with the same folded filters that the float32 export writes.
Operator versions are those of TFLite's ``op_version.cc`` for int8 tensors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Collection

import numpy as np

from reverb_edge.graph import Graph
from reverb_edge.modelfile import Model, load_model
from reverb_edge.nodes import Conv2d, Flatten, Linear, MaxPool2d, Node
from reverb_edge.registry import resolve_model

from .tflite_export import (
    _FLOAT32,
    _INT8,
    _PADDING_SAME,
    _PADDING_VALID,
    Quantization,
    TFLiteExportError,
    _Network,
    _same_padding,
    _Value,
    conv_weights,
    import_tflite_schema,
    linear_weight,
)

logger = logging.getLogger(__name__)

__all__ = ["activation_ranges", "build_int8_tflite", "export_int8_tflite"]

INT8_MIN, INT8_MAX = -128, 127
# Weights use [-127, 127], so that the symmetric range has no extra negative value.
WEIGHT_MAX = 127
# Images per float32 forward pass of the calibration, to bound the memory of the im2col matrices.
CALIBRATION_BATCH = 64
# Builtin operator versions for int8 tensors (TFLite op_version.cc).
_VERSIONS = {"QUANTIZE": 1, "DEQUANTIZE": 2, "CONV_2D": 3, "FULLY_CONNECTED": 4, "MAX_POOL_2D": 2, "PAD": 2,
             "RESHAPE": 1}


def export_int8_tflite(
    model: Model | str | os.PathLike, path: str | os.PathLike, calibration: np.ndarray,
    relu_after: Collection[str] = (),
) -> Path:
    """Write ``model`` as an int8 .tflite file at ``path``, calibrated on ``calibration``, and return the path.

    ``calibration`` contains float32 images (N, C, H, W), normalised as the
    model's input expects. ``relu_after`` names the Conv2d and Linear nodes
    whose output passes through ReLU. Raises :class:`TFLiteExportError` for a
    graph with other layers than Conv2d (groups = 1), MaxPool2d, Flatten and
    Linear, or with more than one timestep.
    """
    data = build_int8_tflite(model, calibration, relu_after=relu_after)
    path = Path(path)
    path.write_bytes(data)
    logger.info("wrote %s (%d bytes, int8, calibrated on %d images)", path, len(data), len(calibration))
    return path


def build_int8_tflite(
    model: Model | str | os.PathLike, calibration: np.ndarray, relu_after: Collection[str] = ()
) -> bytes:
    """Return the .tflite flatbuffer that :func:`export_int8_tflite` writes."""
    if isinstance(relu_after, str):
        raise TFLiteExportError(f"relu_after must be a collection of node names, got the string {relu_after!r}")
    if not isinstance(model, Model):
        model = load_model(resolve_model(model))
    relu_after = frozenset(relu_after)
    _check_supported(model.graph, relu_after)
    ranges = activation_ranges(model, calibration, relu_after)
    tflite, flatbuffers = import_tflite_schema()
    network = _Network(tflite)
    _Int8Lowering(model, network, relu_after, ranges).run()
    return network.serialize(flatbuffers)


def activation_ranges(
    model: Model, calibration: np.ndarray, relu_after: Collection[str] = ()
) -> dict[str, tuple[float, float]]:
    """Return the (lowest, highest) float32 value of the input and of every node's output over ``calibration``.

    The forward pass runs in NumPy, channels-last, with ReLU applied after the
    nodes in ``relu_after``, so a ReLU node's range is that of its output after ReLU.
    """
    graph = model.graph
    relu_after = frozenset(relu_after)
    _check_supported(graph, relu_after)
    calibration = np.asarray(calibration)
    expected = tuple(graph.input.shape)
    if calibration.ndim != 4 or calibration.shape[1:] != expected or len(calibration) == 0:
        raise TFLiteExportError(
            f"calibration images are {calibration.dtype} {calibration.shape}, but the model takes (N, *{expected}) "
            "with N >= 1; pass normalised images as the model's input expects"
        )
    if not np.isfinite(calibration).all():
        raise TFLiteExportError("calibration images contain NaN or infinite values")

    ranges: dict[str, tuple[float, float]] = {}
    for start in range(0, len(calibration), CALIBRATION_BATCH):
        batch = np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH].transpose(0, 2, 3, 1), np.float32)
        for name, values in _float_forward(model, batch, relu_after).items():
            low, high = float(values.min()), float(values.max())
            if name in ranges:
                low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
            ranges[name] = (low, high)
    return ranges


def activation_quantization(low: float, high: float) -> Quantization:
    """Return the int8 per-tensor quantization whose range covers [min(low, 0), max(high, 0)].

    Real 0 maps exactly onto the zero point, so zero padding and the ReLU
    bound add no rounding error.
    """
    low, high = min(low, 0.0), max(high, 0.0)
    if high == low:
        # A tensor that was 0 on every calibration image: any positive scale represents it exactly.
        return Quantization((1.0,), (0,))
    scale = float(np.float32((high - low) / (INT8_MAX - INT8_MIN)))
    zero_point = int(np.clip(round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return Quantization((scale,), (zero_point,))


def quantize_weights(weight: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return int8 weights in [-127, 127] and their float32 scales, symmetric (zero point 0).

    ``per_channel`` gives each output channel (axis 0) its own scale; otherwise
    the tensor has one scale. An all-zero channel gets scale 1.
    """
    weight = np.asarray(weight, np.float32)
    if per_channel:
        peak = np.abs(weight.reshape(len(weight), -1)).max(axis=1)
    else:
        peak = np.array([np.abs(weight).max()])
    scales = np.where(peak > 0, peak / WEIGHT_MAX, 1.0).astype(np.float32)
    shaped = scales.reshape((-1,) + (1,) * (weight.ndim - 1)) if per_channel else scales[0]
    quantized = np.clip(np.round(weight / shaped), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return quantized, scales


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the int32 bias and its float32 scales input_scale × weight_scale, zero point 0."""
    scales = (np.float64(np.float32(input_scale)) * weight_scales.astype(np.float64)).astype(np.float32)
    limit = np.iinfo(np.int32)
    quantized = np.clip(np.round(np.asarray(bias, np.float64) / scales), limit.min, limit.max).astype(np.int32)
    return quantized, scales


def _check_supported(graph: Graph, relu_after: frozenset[str]) -> None:
    """Raise TFLiteExportError before any work for a graph that the int8 export cannot write."""
    if graph.timesteps != 1:
        raise TFLiteExportError(
            f"the int8 export takes plain CNNs with one timestep, but the graph has T = {graph.timesteps}"
        )
    for node in graph.nodes:
        if isinstance(node, Conv2d) and node.groups != 1:
            raise TFLiteExportError(
                f"node {node.name!r}: the int8 export writes convolutions with groups=1 only, got groups={node.groups}"
            )
        if isinstance(node, MaxPool2d) and node.dilation != (1, 1):
            raise TFLiteExportError(f"node {node.name!r}: the int8 export takes max pooling without dilation")
        if not isinstance(node, (Conv2d, MaxPool2d, Flatten, Linear)):
            raise TFLiteExportError(
                f"node {node.name!r}: the int8 export takes Conv2d, MaxPool2d, Flatten and Linear nodes, "
                f"not {node.type_name}"
            )
        if len(graph.sources[node.name]) != 1:
            raise TFLiteExportError(f"node {node.name!r}: the int8 export takes nodes with one input")
    synaptic = {node.name for node in graph.nodes if isinstance(node, (Conv2d, Linear))}
    unknown = sorted(relu_after - synaptic)
    if unknown:
        raise TFLiteExportError(
            f"relu_after names {unknown}, which are not Conv2d or Linear nodes of the graph; "
            f"ReLU fuses only into those ({sorted(synaptic)})"
        )


# The float32 forward pass of the calibration, channels-last.


def _float_forward(model: Model, images: np.ndarray, relu_after: frozenset[str]) -> dict[str, np.ndarray]:
    """Return the input (N, H, W, C) and every node's float32 output for a batch of channels-last images."""
    graph = model.graph
    values = {"input": images}
    flattened: dict[str, tuple[int, int, int] | None] = {"input": None}
    for node in graph.nodes:
        (source,) = graph.sources[node.name]
        x = values[source]
        flattened[node.name] = None
        if isinstance(node, Conv2d):
            out = _conv_nhwc(x, *conv_weights(model.tensors, node), node)
        elif isinstance(node, MaxPool2d):
            out = _max_pool_nhwc(x, node)
        elif isinstance(node, Flatten):
            out = x.reshape(len(x), -1)
            if x.ndim == 4 and x.shape[3] > 1 and x.shape[1] * x.shape[2] > 1:
                flattened[node.name] = (x.shape[3], x.shape[1], x.shape[2])
        else:
            weight = linear_weight(model.tensors, node, flattened[source])
            out = x @ weight.T + model.tensors[f"{node.name}.bias"].astype(np.float32)
        if node.name in relu_after:
            out = np.maximum(out, np.float32(0))
        values[node.name] = out.astype(np.float32, copy=False)
    return values


def _conv_nhwc(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, node: Conv2d) -> np.ndarray:
    """Convolve channels-last ``x`` with the (out, kh, kw, in) filter ``weight`` by im2col and one matrix product."""
    top, bottom, left, right = node.padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kernel_h, kernel_w = node.kernel_size
    dilation_h, dilation_w = node.dilation
    stride_h, stride_w = node.stride
    span = ((kernel_h - 1) * dilation_h + 1, (kernel_w - 1) * dilation_w + 1)
    windows = np.lib.stride_tricks.sliding_window_view(x, span, axis=(1, 2))  # (N, H', W', C, span_h, span_w)
    windows = windows[:, ::stride_h, ::stride_w, :, ::dilation_h, ::dilation_w]
    batch, out_h, out_w = windows.shape[:3]
    columns = windows.transpose(0, 1, 2, 4, 5, 3).reshape(batch * out_h * out_w, -1)
    out = columns @ weight.reshape(len(weight), -1).T + bias
    return out.reshape(batch, out_h, out_w, len(weight))


def _max_pool_nhwc(x: np.ndarray, node: MaxPool2d) -> np.ndarray:
    top, bottom, left, right = node.padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, node.kernel_size, axis=(1, 2))
    return windows[:, ::node.stride[0], ::node.stride[1]].max(axis=(4, 5))


class _Int8Lowering:
    """Translate a plain-CNN graph into int8 operators of a :class:`_Network`, between QUANTIZE and DEQUANTIZE."""

    def __init__(
        self, model: Model, network: _Network, relu_after: frozenset[str], ranges: dict[str, tuple[float, float]]
    ) -> None:
        self.graph: Graph = model.graph
        self.tensors = model.tensors
        self.network = network
        self.relu_after = relu_after
        self.ranges = ranges
        self.activation = network.tflite.ActivationFunctionType

    def run(self) -> None:
        channels, height, width = self.graph.input.shape
        shape = (1, height, width, channels)
        float_input = self.network.tensor("input", shape)
        self.network.inputs.append(float_input)
        quantized_input = self.network.tensor("input/int8", shape, _INT8, activation_quantization(*self.ranges["input"]))
        self._operator("QUANTIZE", [float_input], [quantized_input])

        values = {"input": _Value(quantized_input, shape)}
        for node in self.graph.nodes:
            (source,) = self.graph.sources[node.name]
            values[node.name] = self._lower(node, values[source])

        output = values[self.graph.output_name]
        if output.flattened_from is not None or len(output.shape) != 2:
            raise TFLiteExportError(
                f"the readout node {self.graph.output_name!r} must be a Linear layer for the int8 export"
            )
        scores = self.network.tensor("scores", output.shape, _FLOAT32)
        self._operator("DEQUANTIZE", [output.index], [scores])
        self.network.outputs.append(scores)

    def _operator(self, op_name: str, inputs: list[int], outputs: list[int], options: str | None = None,
                  **fields) -> None:
        self.network.operator(op_name, inputs, outputs, options, version=_VERSIONS[op_name], **fields)

    def _lower(self, node: Node, x: _Value) -> _Value:
        if isinstance(node, Conv2d):
            return self._conv(node, x)
        if isinstance(node, MaxPool2d):
            return self._max_pool(node, x)
        if isinstance(node, Flatten):
            return self._flatten(node, x)
        return self._linear(node, x)

    def _input_scale(self, x: _Value) -> float:
        return self.network.quantization(x.index).scales[0]

    def _fused_activation(self, node: Node) -> int:
        return self.activation.RELU if node.name in self.relu_after else self.activation.NONE

    def _conv(self, node: Conv2d, x: _Value) -> _Value:
        weight, bias = conv_weights(self.tensors, node)
        x, padding = self._padding(node, x)
        quantized_weight, weight_scales = quantize_weights(weight, per_channel=True)
        quantized_bias, bias_scales = quantize_bias(bias, self._input_scale(x), weight_scales)
        channels = len(weight_scales)
        filter_index = self.network.constant(
            f"{node.name}/filter", quantized_weight,
            Quantization(tuple(weight_scales.tolist()), (0,) * channels, quantized_dimension=0),
        )
        bias_index = self.network.constant(
            f"{node.name}/bias", quantized_bias,
            Quantization(tuple(bias_scales.tolist()), (0,) * channels, quantized_dimension=0),
        )
        out_channels, out_h, out_w = self.graph.shapes[node.name]
        shape = (1, out_h, out_w, out_channels)
        out = self.network.tensor(node.name, shape, _INT8, activation_quantization(*self.ranges[node.name]))
        self._operator(
            "CONV_2D", [x.index, filter_index, bias_index], [out], "Conv2DOptions", padding=padding,
            stride_w=node.stride[1], stride_h=node.stride[0], dilation_w_factor=node.dilation[1],
            dilation_h_factor=node.dilation[0], fused_activation_function=self._fused_activation(node),
        )
        return _Value(out, shape)

    def _padding(self, node: Conv2d, x: _Value) -> tuple[_Value, int]:
        """Return the input and padding mode; padding other than SAME becomes a PAD, which fills with the zero point."""
        if not any(node.padding):
            return x, _PADDING_VALID
        _, height, width, channels = x.shape
        if (node.padding[:2] == _same_padding(height, node.kernel_size[0], node.stride[0], node.dilation[0])
                and node.padding[2:] == _same_padding(width, node.kernel_size[1], node.stride[1], node.dilation[1])):
            return x, _PADDING_SAME
        top, bottom, left, right = node.padding
        shape = (1, height + top + bottom, width + left + right, channels)
        paddings = self.network.constant(
            f"{node.name}/pad/paddings", np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
        )
        out = self.network.tensor(f"{node.name}/pad", shape, _INT8, self.network.quantization(x.index))
        self._operator("PAD", [x.index, paddings], [out], "PadOptions")
        return _Value(out, shape), _PADDING_VALID

    def _max_pool(self, node: MaxPool2d, x: _Value) -> _Value:
        _, height, width, _ = x.shape
        if not any(node.padding):
            padding = _PADDING_VALID
        elif (node.padding[:2] == _same_padding(height, node.kernel_size[0], node.stride[0], 1)
              and node.padding[2:] == _same_padding(width, node.kernel_size[1], node.stride[1], 1)):
            padding = _PADDING_SAME
        else:
            raise TFLiteExportError(
                f"node {node.name!r}: the int8 export takes max pooling without padding or with TFLite's SAME "
                f"padding, got {node.padding}"
            )
        channels, out_h, out_w = self.graph.shapes[node.name]
        shape = (1, out_h, out_w, channels)
        # MAX_POOL_2D requires its output to have its input's scale and zero point.
        out = self.network.tensor(node.name, shape, _INT8, self.network.quantization(x.index))
        self._operator(
            "MAX_POOL_2D", [x.index], [out], "Pool2DOptions", padding=padding, stride_w=node.stride[1],
            stride_h=node.stride[0], filter_width=node.kernel_size[1], filter_height=node.kernel_size[0],
            fused_activation_function=self.activation.NONE,
        )
        return _Value(out, shape)

    def _flatten(self, node: Flatten, x: _Value) -> _Value:
        if len(x.shape) == 2:
            return x
        _, height, width, channels = x.shape
        features = height * width * channels
        shape_index = self.network.constant(f"{node.name}/shape", np.array([1, features], np.int32))
        out = self.network.tensor(node.name, (1, features), _INT8, self.network.quantization(x.index))
        self._operator("RESHAPE", [x.index, shape_index], [out], "ReshapeOptions")
        permuted = channels > 1 and height * width > 1
        return _Value(out, (1, features), (channels, height, width) if permuted else None)

    def _linear(self, node: Linear, x: _Value) -> _Value:
        weight = linear_weight(self.tensors, node, x.flattened_from)
        quantized_weight, weight_scales = quantize_weights(weight, per_channel=False)
        quantized_bias, bias_scales = quantize_bias(self.tensors[f"{node.name}.bias"], self._input_scale(x),
                                                    weight_scales)
        filter_index = self.network.constant(
            f"{node.name}/weight", quantized_weight, Quantization((float(weight_scales[0]),), (0,))
        )
        bias_index = self.network.constant(
            f"{node.name}/bias", quantized_bias, Quantization((float(bias_scales[0]),), (0,))
        )
        shape = (1, node.out_features)
        out = self.network.tensor(node.name, shape, _INT8, activation_quantization(*self.ranges[node.name]))
        self._operator(
            "FULLY_CONNECTED", [x.index, filter_index, bias_index], [out], "FullyConnectedOptions",
            fused_activation_function=self._fused_activation(node), keep_num_dims=False,
        )
        return _Value(out, shape)
