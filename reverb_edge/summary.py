"""Summaries of a model for ``reverb-edge info``: layers, parameters, bits and size."""

from __future__ import annotations

import math

from .modelfile import Model
from .nodes import LIF, AvgPool2d, Conv2d, Linear, MaxPool2d


def _details(node) -> str:
    if isinstance(node, Conv2d):
        text = f"k={node.kernel_size} s={node.stride} pad={node.padding} d={node.dilation}"
        return text + (f" groups={node.groups}" if node.groups != 1 else "")
    if isinstance(node, LIF):
        return f"tau={node.tau:g} theta={node.threshold:g}"
    if isinstance(node, (AvgPool2d, MaxPool2d)):
        return f"k={node.kernel_size} s={node.stride} pad={node.padding}"
    if node.inputs:
        return "inputs=" + ",".join(node.inputs)
    return ""


def describe_model(model: Model) -> dict:
    """Return a JSON-ready description: per layer shapes and weights, and totals against float32."""
    graph = model.graph
    layers = []
    total_weights = binary_weights = constants = 0
    for node in graph.nodes:
        weights = bits = 0
        weight_format = None
        if isinstance(node, (Conv2d, Linear)):
            specs = node.tensor_specs(graph.input_shapes(node))
            weight_format = node.weight_format
            if isinstance(node, Conv2d):
                weights = node.out_channels * (node.in_channels // node.groups) * math.prod(node.kernel_size)
            else:
                weights = node.out_features * node.in_features
            bits = weights if weight_format == "binary" else 32 * weights
            constants += sum(math.prod(shape) for name, (_, shape) in specs.items() if not name.endswith(".weight"))
            total_weights += weights
            binary_weights += weights if weight_format == "binary" else 0
        layers.append({
            "name": node.name,
            "type": node.type_name,
            "output_shape": list(graph.shapes[node.name]),
            "weights": weights,
            "weight_format": weight_format,
            "weight_bits": bits,
            "details": _details(node),
        })

    fp32_bytes = 4 * (total_weights + constants)
    file_bytes = model.file_size or 0
    return {
        "path": str(model.path),
        "input": graph.input.to_dict(),
        "timesteps": graph.timesteps,
        "readout": graph.readout,
        "layers": layers,
        "weights": total_weights,
        "binary_weights": binary_weights,
        "constants": constants,
        "weight_bits": sum(layer["weight_bits"] for layer in layers),
        "file_bytes": file_bytes,
        "fp32_bytes": fp32_bytes,
        "compression": (fp32_bytes / file_bytes) if file_bytes else None,
    }
