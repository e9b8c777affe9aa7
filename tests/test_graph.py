"""Graph and node specifications: validation, shape inference and JSON round trips."""

import json

import pytest

from reverb_edge.errors import GraphError
from reverb_edge.graph import Graph, InputSpec, node_from_dict
from reverb_edge.nodes import LIF, Add, Conv2d, Flatten, Linear, MaxPool2d

from helpers import every_node_graph, mnist_like_graph


def test_graph_json_round_trip_every_node_type():
    graph = every_node_graph()
    restored = Graph.from_json(graph.to_json())
    assert restored == graph
    assert restored.shapes == graph.shapes
    types = {node.type_name for node in graph.nodes}
    assert types == {"Conv2d", "LIF", "Add", "MaxPool2d", "AvgPool2d", "Flatten", "Linear"}


def test_graph_shapes_mnist():
    graph = mnist_like_graph()
    assert graph.shapes["conv1"] == (8, 28, 28)
    assert graph.shapes["pool2"] == (16, 7, 7)
    assert graph.shapes["fc"] == (10,)


def test_graph_time_invariant_prefix():
    graph = every_node_graph()
    assert graph.time_invariant() == {"stem"}


def test_conv_padding_forms_normalised():
    assert Conv2d("c", padding=1).padding == (1, 1, 1, 1)
    assert Conv2d("c", padding=(1, 2)).padding == (1, 1, 2, 2)
    assert Conv2d("c", padding=(0, 1, 2, 3)).padding == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"in_channels": 6, "out_channels": 4, "groups": 4}, "groups=4 must divide"),
        ({"kernel_size": 0}, "kernel_size must be"),
        ({"stride": (1, 0)}, "stride must be"),
        ({"padding": (1, 2, 3)}, "padding must be"),
        ({"weight_format": "int8"}, "weight_format must be one of"),
        ({"in_channels": 2**40}, "in_channels must be in"),
        ({"out_channels": True}, "out_channels must be an integer"),
    ],
)
def test_conv_invalid_fields_rejected(kwargs, fragment):
    with pytest.raises(GraphError, match=fragment):
        Conv2d("bad", **kwargs)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"tau": 1.5}, "tau must be in"),
        ({"threshold": 0.0}, "threshold must be > 0"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"tau": "0.5"}, "tau must be a finite number"),
    ],
)
def test_lif_invalid_fields_rejected(kwargs, fragment):
    with pytest.raises(GraphError, match=fragment):
        LIF("bad", **kwargs)


def test_graph_rejects_shape_mismatch():
    spec = InputSpec((1, 8, 8), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="expects input \\(C=3"):
        Graph(spec, (Conv2d("c", in_channels=3, out_channels=4),))


def test_graph_rejects_linear_without_flatten():
    spec = InputSpec((1, 8, 8), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="add a Flatten node"):
        Graph(spec, (Linear("fc", in_features=64, out_features=2),))


def test_graph_rejects_unknown_input_name():
    spec = InputSpec((1, 8, 8), (0.0,), (1.0,))
    nodes = (Flatten("f"), Add("sum", inputs=("f", "later")))
    with pytest.raises(GraphError, match="'later', which is not an earlier node"):
        Graph(spec, nodes)


def test_graph_rejects_duplicate_names():
    spec = InputSpec((1, 8, 8), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="used twice"):
        Graph(spec, (Flatten("f"), Flatten("f")))


def test_graph_rejects_label_count_mismatch():
    spec = InputSpec((1, 4, 4), (0.0,), (1.0,), labels=("a", "b", "c"))
    nodes = (Flatten("f"), Linear("fc", in_features=16, out_features=2))
    with pytest.raises(GraphError, match="lists 3 labels"):
        Graph(spec, nodes)


def test_graph_rejects_neuron_readout():
    spec = InputSpec((1, 4, 4), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="readout must not spike"):
        Graph(spec, (Flatten("f"), LIF("out")))


def test_graph_rejects_kernel_larger_than_input():
    spec = InputSpec((1, 4, 4), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="does not fit"):
        Graph(spec, (Conv2d("c", kernel_size=5),))


def test_graph_rejects_pool_larger_than_input():
    spec = InputSpec((1, 2, 2), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="does not fit"):
        Graph(spec, (MaxPool2d("p", kernel_size=3, stride=1), Flatten("f"), Linear("fc", in_features=1, out_features=1)))


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"type": "Softmax", "name": "s"}, "unknown node type 'Softmax'"),
        ({"type": "Flatten", "name": "f", "colour": "red"}, "unknown fields \\['colour'\\]"),
        (["Flatten"], "must be a JSON object"),
    ],
)
def test_node_from_dict_rejects(data, fragment):
    with pytest.raises(GraphError, match=fragment):
        node_from_dict(data)


def test_graph_from_json_rejects_invalid_json():
    with pytest.raises(GraphError, match="not valid JSON"):
        Graph.from_json("{nodes: ")


def test_graph_from_dict_rejects_missing_fields():
    data = json.loads(mnist_like_graph().to_json())
    del data["timesteps"]
    with pytest.raises(GraphError, match="missing fields \\['timesteps'\\]"):
        Graph.from_dict(data)


@pytest.mark.parametrize("timesteps", [0, -1, 10**9, 2.5, True])
def test_graph_rejects_bad_timesteps(timesteps):
    data = json.loads(mnist_like_graph().to_json())
    data["timesteps"] = timesteps
    with pytest.raises(GraphError, match="timesteps must be an integer"):
        Graph.from_dict(data)


def test_input_spec_rejects_wrong_channel_count():
    with pytest.raises(GraphError, match="one value per channel"):
        InputSpec((3, 8, 8), (0.5,), (0.2, 0.2, 0.2))


def test_input_spec_rejects_zero_std():
    with pytest.raises(GraphError, match="std must be in"):
        InputSpec((1, 8, 8), (0.5,), (0.0,))


def test_graph_rejects_image_shaped_readout():
    spec = InputSpec((1, 4, 4), (0.0,), (1.0,))
    with pytest.raises(GraphError, match="class scores must be one-dimensional"):
        Graph(spec, (MaxPool2d("p", kernel_size=2, stride=2),))


def test_pool_rejects_padding_over_half_kernel():
    with pytest.raises(GraphError, match="exceeds half the kernel"):
        MaxPool2d("p", kernel_size=2, stride=2, padding=(0, 2, 0, 0))


def test_graph_from_dict_rejects_unknown_fields():
    data = json.loads(mnist_like_graph().to_json())
    data["optimiser"] = "adam"
    with pytest.raises(GraphError, match="unknown fields \\['optimiser'\\]"):
        Graph.from_dict(data)


def test_graph_from_json_rejects_duplicate_keys():
    text = mnist_like_graph().to_json()
    duplicated = text.replace('"timesteps":2', '"timesteps":2,"timesteps":3')
    assert duplicated != text
    with pytest.raises(GraphError, match="repeats the key 'timesteps'"):
        Graph.from_json(duplicated)


def test_input_spec_rejects_huge_input():
    with pytest.raises(GraphError, match="more than"):
        InputSpec((1, 46340, 46340), (0.0,), (1.0,))


def test_input_spec_rejects_huge_mean():
    with pytest.raises(GraphError, match="mean must be within"):
        InputSpec((1, 8, 8), (1e308,), (1.0,))


def test_lif_rejects_threshold_beyond_float32():
    with pytest.raises(GraphError, match="threshold must be within"):
        LIF("big", threshold=1e39)
