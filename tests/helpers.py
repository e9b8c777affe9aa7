"""Builders of small graphs and model files shared by the engine and model-file tests."""

from __future__ import annotations

import numpy as np

from reverb_edge.bitpack import pack_signs
from reverb_edge.graph import Graph, InputSpec
from reverb_edge.nodes import LIF, Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d


def random_tensors(graph: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return valid random tensors for every tensor the graph needs."""
    tensors = {}
    for node in graph.nodes:
        if isinstance(node, Conv2d):
            group_channels = node.in_channels // node.groups
            kh, kw = node.kernel_size
            if node.weight_format == "binary":
                signs = rng.standard_normal((node.out_channels, kh, kw, group_channels))
                tensors[f"{node.name}.weight"] = pack_signs(signs)
            else:
                weight = rng.standard_normal((node.out_channels, group_channels, kh, kw)) * 0.3
                tensors[f"{node.name}.weight"] = weight.astype(np.float32)
            fan_in = group_channels * kh * kw
            tensors[f"{node.name}.scale"] = (rng.uniform(0.5, 1.5, node.out_channels) / np.sqrt(fan_in)).astype(np.float32)
            tensors[f"{node.name}.bias"] = rng.uniform(-0.2, 0.4, node.out_channels).astype(np.float32)
        elif isinstance(node, Linear):
            if node.weight_format == "binary":
                tensors[f"{node.name}.weight"] = pack_signs(rng.standard_normal((node.out_features, node.in_features)))
            else:
                weight = rng.standard_normal((node.out_features, node.in_features)) * 0.1
                tensors[f"{node.name}.weight"] = weight.astype(np.float32)
            tensors[f"{node.name}.scale"] = (rng.uniform(0.5, 1.5, node.out_features) / np.sqrt(node.in_features)).astype(np.float32)
            tensors[f"{node.name}.bias"] = rng.uniform(-0.1, 0.1, node.out_features).astype(np.float32)
    return tensors


def every_node_graph(timesteps: int = 3) -> Graph:
    """A graph that uses every node type, groups, dilation, asymmetric padding and a residual add."""
    spec = InputSpec((3, 12, 11), (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), False, tuple("abcde"))
    nodes = (
        Conv2d("stem", in_channels=3, out_channels=6, kernel_size=(2, 2), padding=(0, 1, 0, 1), weight_format="float32"),
        LIF("stem_lif", tau=0.5, threshold=0.3),
        Conv2d("depthwise", in_channels=6, out_channels=6, kernel_size=3, padding=2, dilation=2, groups=6),
        LIF("depthwise_lif", tau=0.25, threshold=0.5),
        Add("residual", inputs=("depthwise_lif", "stem_lif")),
        Conv2d("grouped", in_channels=6, out_channels=9, kernel_size=(3, 1), stride=2, padding=(1, 1, 0, 0), groups=3),
        LIF("grouped_lif", tau=0.0, threshold=0.2),
        MaxPool2d("max", kernel_size=2, stride=1, padding=(1, 1, 1, 1)),
        AvgPool2d("avg", kernel_size=(2, 3), stride=2),
        Flatten("flatten"),
        Linear("hidden", in_features=81, out_features=33),
        LIF("hidden_lif", tau=1.0, threshold=0.1),
        Linear("readout", in_features=33, out_features=5, weight_format="float32"),
    )
    return Graph(spec, nodes, timesteps=timesteps)


def mnist_like_graph(timesteps: int = 2) -> Graph:
    """A small all-binary MNIST-shaped network, like the one `reverb-edge train` builds."""
    spec = InputSpec((1, 28, 28), (0.1307,), (0.3081,), True, tuple(str(d) for d in range(10)))
    nodes = (
        Conv2d("conv1", in_channels=1, out_channels=8, kernel_size=3, padding=1),
        LIF("lif1"),
        MaxPool2d("pool1", kernel_size=2, stride=2),
        Conv2d("conv2", in_channels=8, out_channels=16, kernel_size=3, padding=1),
        LIF("lif2"),
        MaxPool2d("pool2", kernel_size=2, stride=2),
        Flatten("flatten"),
        Linear("fc", in_features=16 * 7 * 7, out_features=10),
    )
    return Graph(spec, nodes, timesteps=timesteps)


class CountingCalls:
    """Wrap a callable and count its calls; the wrapped object still does the work."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def tflite_interpreter():
    """Return the TFLite interpreter module that LiteRTRunner loads, or skip the caller.

    LiteRTRunner takes ai-edge-litert, else tflite-runtime, so these tests run
    on whichever is installed. The caller is skipped unless one of them and
    the TFLite export's schema packages (tflite, flatbuffers) are installed.
    Works at module level and inside a test.
    """
    import pytest

    from reverb_edge.benchmark.litert import import_interpreter_module
    from reverb_edge.benchmark.tflite_export import import_tflite_schema
    from reverb_edge.errors import MissingExtraError

    try:
        import_tflite_schema()
        return import_interpreter_module()
    except MissingExtraError as err:
        pytest.skip(str(err), allow_module_level=True)


def xnnpack_takes_int8() -> bool:
    """Return whether XNNPACK takes every operator of an int8 graph under the installed TFLite runtime.

    Measured on x86-64: ai-edge-litert 2.3.0 delegates all 9 operators of the
    int8 plain CNN, and tflite-runtime 2.14.0 delegates none of them.
    """
    return tflite_interpreter().__name__.startswith("ai_edge_litert")
