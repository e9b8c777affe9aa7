"""The network graph: input spec, ordered nodes, timesteps, and shape inference."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import GraphError
from .nodes import MAX_ELEMENTS, MAX_NODES, NODE_TYPES, Node

READOUTS = ("mean",)
MAX_TIMESTEPS = 10_000
MAX_NORMALISATION = 1e6
MIN_STD = 1e-6


@dataclass(frozen=True)
class EventEncoding:
    """How DVS events become the network's input frames.

    One window of events comes from a sensor of ``sensor_size`` (width,
    height, polarities). It is a whole recording, or ``window_us``
    microseconds of a stream. The window is split into ``n_time_bins`` frames
    of equal duration between its first and last event, one per timestep, as
    ``to_frames(..., n_time_bins=...)`` does.
    Each frame counts events per pixel, with OFF and ON in separate channels
    when ``polarity_channels``.
    """

    sensor_size: tuple[int, int, int]
    n_time_bins: int
    window_us: int
    polarity_channels: bool = True

    def __post_init__(self) -> None:
        size = tuple(self.sensor_size)
        if len(size) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 65536 for d in size):
            raise GraphError(f"event sensor_size must be (width, height, polarities) in [1, 65536], got {self.sensor_size!r}")
        object.__setattr__(self, "sensor_size", size)
        for field_name, upper in (("n_time_bins", MAX_TIMESTEPS), ("window_us", 3_600_000_000)):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= upper:
                raise GraphError(f"event {field_name} must be an integer in [1, {upper}], got {value!r}")
        if not isinstance(self.polarity_channels, bool):
            raise GraphError(f"event polarity_channels must be true or false, got {self.polarity_channels!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensor_size": list(self.sensor_size),
            "n_time_bins": self.n_time_bins,
            "window_us": self.window_us,
            "polarity_channels": self.polarity_channels,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "EventEncoding":
        expected = {"sensor_size", "n_time_bins", "window_us", "polarity_channels"}
        if not isinstance(data, dict) or set(data) != expected:
            raise GraphError(f"input events must be an object with exactly the fields {sorted(expected)}, got {data!r}")
        if not isinstance(data["sensor_size"], list):
            raise GraphError(f"event sensor_size must be a list, got {data['sensor_size']!r}")
        return cls(tuple(data["sensor_size"]), data["n_time_bins"], data["window_us"], data["polarity_channels"])


@dataclass(frozen=True)
class InputSpec:
    """The input a network expects, and how to make it from an image or from events.

    Fields:
        shape: (C, H, W) of one input, channels-first.
        mean, std: per-channel normalisation applied to pixel / 255: x = (p / 255 - mean) / std.
        invert: True when the network was trained on light strokes on a dark
            background (like MNIST); preprocessing then inverts dark-on-light photos.
        labels: one class name per output of the readout.
        events: for DVS models, how events become input frames (None for images).
    """

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    invert: bool = False
    labels: tuple[str, ...] = ()
    events: EventEncoding | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 65536 for d in shape):
            raise GraphError(f"input shape must be three integers (C, H, W) in [1, 65536], got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        if math.prod(shape) > MAX_ELEMENTS:
            raise GraphError(f"input shape {shape} has more than {MAX_ELEMENTS} elements")

        channels = shape[0]
        for field_name in ("mean", "std"):
            values = tuple(getattr(self, field_name))
            if len(values) != channels:
                raise GraphError(f"input {field_name} must have one value per channel ({channels}), got {values!r}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise GraphError(f"input {field_name} must be finite numbers, got {values!r}")
            object.__setattr__(self, field_name, tuple(float(v) for v in values))
        # Bounds keep (x - mean) / std finite in float32 for any pixel value.
        if any(abs(v) > MAX_NORMALISATION for v in self.mean):
            raise GraphError(f"input mean must be within ±{MAX_NORMALISATION:g}, got {self.mean!r}")
        if any(not MIN_STD <= v <= MAX_NORMALISATION for v in self.std):
            raise GraphError(f"input std must be in [{MIN_STD:g}, {MAX_NORMALISATION:g}], got {self.std!r}")

        if not isinstance(self.invert, bool):
            raise GraphError(f"input invert must be true or false, got {self.invert!r}")
        labels = tuple(self.labels)
        if not all(isinstance(label, str) for label in labels):
            raise GraphError(f"input labels must be strings, got {labels!r}")
        object.__setattr__(self, "labels", labels)

        if self.events is not None:
            if not isinstance(self.events, EventEncoding):
                raise GraphError(f"input events must be an EventEncoding, got {type(self.events).__name__}")
            width, height, polarities = self.events.sensor_size
            channels = polarities if self.events.polarity_channels else 1
            if shape != (channels, height, width):
                raise GraphError(
                    f"input shape {shape} does not match the event frames ({channels}, {height}, {width}) "
                    f"of sensor {self.events.sensor_size}"
                )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "shape": list(self.shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "invert": self.invert,
            "labels": list(self.labels),
        }
        if self.events is not None:
            data["events"] = self.events.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "InputSpec":
        if not isinstance(data, dict):
            raise GraphError(f"input spec must be an object, got {type(data).__name__}")
        expected = {"shape", "mean", "std", "invert", "labels"}
        missing = expected - set(data)
        unknown = set(data) - expected - {"events"}
        if missing or unknown:
            raise GraphError(f"input spec: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
        for field_name in ("shape", "mean", "std", "labels"):
            if not isinstance(data[field_name], list):
                raise GraphError(f"input spec field {field_name!r} must be a list, got {data[field_name]!r}")
        events = EventEncoding.from_dict(data["events"]) if "events" in data else None
        return cls(
            tuple(data["shape"]), tuple(data["mean"]), tuple(data["std"]), data["invert"], tuple(data["labels"]), events
        )


@dataclass(frozen=True)
class Graph:
    """A spiking network: the input spec, the nodes in execution order, and T.

    ``timesteps`` is T, the number of timesteps of one inference (direct
    encoding feeds the same input at each). ``readout`` names how the last
    node's per-timestep outputs become class scores; only ``"mean"`` exists.
    Construction validates the whole graph: names are unique, every input
    refers to an earlier node, shapes agree, and the readout has one output
    per label.
    """

    input: InputSpec
    nodes: tuple[Node, ...]
    timesteps: int = 1
    readout: str = "mean"
    shapes: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    sources: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if not nodes:
            raise GraphError("a graph needs at least one node")
        if len(nodes) > MAX_NODES:
            raise GraphError(f"a graph may have at most {MAX_NODES} nodes, got {len(nodes)}")
        if not isinstance(self.timesteps, int) or isinstance(self.timesteps, bool) or not 1 <= self.timesteps <= MAX_TIMESTEPS:
            raise GraphError(f"timesteps must be an integer in [1, {MAX_TIMESTEPS}], got {self.timesteps!r}")
        if self.readout not in READOUTS:
            raise GraphError(f"readout must be one of {READOUTS}, got {self.readout!r}")

        shapes: dict[str, tuple[int, ...]] = {}
        sources: dict[str, tuple[str, ...]] = {}
        previous = None
        for node in nodes:
            if not isinstance(node, Node):
                raise GraphError(f"graph nodes must be Node instances, got {type(node).__name__}")
            if node.name in shapes or node.name == "input":
                raise GraphError(f"node name {node.name!r} is used twice (or is the reserved name 'input')")
            names = node.inputs or ((previous,) if previous is not None else ("input",))
            for source in names:
                if source != "input" and source not in shapes:
                    raise GraphError(
                        f"node {node.name!r} reads {source!r}, which is not an earlier node; "
                        "list nodes in execution order"
                    )
            input_shapes = [self.input.shape if s == "input" else shapes[s] for s in names]
            shape = node.output_shape(input_shapes)
            elements = math.prod(shape)
            if elements > MAX_ELEMENTS:
                raise GraphError(f"node {node.name!r}: output shape {shape} has more than {MAX_ELEMENTS} elements")
            shapes[node.name] = shape
            sources[node.name] = names
            previous = node.name

        output_shape = shapes[nodes[-1].name]
        if len(output_shape) != 1:
            raise GraphError(
                f"the readout node {nodes[-1].name!r} has output shape {output_shape}; class scores must be "
                "one-dimensional, so end the graph with Flatten and Linear"
            )
        if self.input.labels and output_shape != (len(self.input.labels),):
            raise GraphError(
                f"the readout node {nodes[-1].name!r} has output shape {output_shape}, but the input spec "
                f"lists {len(self.input.labels)} labels; they must match"
            )
        if nodes[-1].stateful:
            raise GraphError(
                f"the last node {nodes[-1].name!r} is a neuron; the readout must not spike, so end with a Linear layer"
            )
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "sources", sources)

    @property
    def output_name(self) -> str:
        return self.nodes[-1].name

    def input_shapes(self, node: Node) -> list[tuple[int, ...]]:
        """Return the shapes of the arrays that ``node`` reads."""
        return [self.input.shape if s == "input" else self.shapes[s] for s in self.sources[node.name]]

    def tensor_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Return every tensor the graph needs: name -> (numpy dtype name, shape)."""
        specs: dict[str, tuple[str, tuple[int, ...]]] = {}
        for node in self.nodes:
            specs.update(node.tensor_specs(self.input_shapes(node)))
        return specs

    def time_invariant(self) -> set[str]:
        """Return the nodes whose output is the same at every timestep under direct encoding.

        These are the nodes upstream of every neuron (for example the first
        convolution): the engine computes them once per input instead of T times.
        """
        invariant: set[str] = set()
        for node in self.nodes:
            if node.stateful:
                continue
            if all(source == "input" or source in invariant for source in self.sources[node.name]):
                invariant.add(node.name)
        return invariant

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input.to_dict(),
            "timesteps": self.timesteps,
            "readout": self.readout,
            "nodes": [node.to_dict() for node in self.nodes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> "Graph":
        if not isinstance(data, dict):
            raise GraphError(f"graph must be a JSON object, got {type(data).__name__}")
        expected = {"input", "timesteps", "readout", "nodes"}
        missing = expected - set(data)
        unknown = set(data) - expected
        if missing:
            raise GraphError(f"graph is missing fields {sorted(missing)}")
        if unknown:
            raise GraphError(f"graph has unknown fields {sorted(unknown)}; the file may come from a newer reverb-edge")
        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, list):
            raise GraphError(f"graph field 'nodes' must be a list, got {type(raw_nodes).__name__}")
        if len(raw_nodes) > MAX_NODES:
            raise GraphError(f"a graph may have at most {MAX_NODES} nodes, got {len(raw_nodes)}")
        return cls(
            input=InputSpec.from_dict(data["input"]),
            nodes=tuple(node_from_dict(item) for item in raw_nodes),
            timesteps=data["timesteps"],
            readout=data["readout"],
        )

    @classmethod
    def from_json(cls, text: str) -> "Graph":
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as err:
            raise GraphError(f"graph metadata is not valid JSON: {err}") from err
        return cls.from_dict(data)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, raising on a repeated key instead of keeping the last value."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise GraphError(f"graph JSON repeats the key {key!r}; the file is corrupt")
        data[key] = value
    return data


def node_from_dict(data: Any) -> Node:
    """Build a node from its ``to_dict`` form, rejecting unknown types and fields."""
    if not isinstance(data, dict):
        raise GraphError(f"each node must be a JSON object, got {type(data).__name__}")
    type_name = data.get("type")
    node_type = NODE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if node_type is None:
        raise GraphError(f"unknown node type {type_name!r}; this reverb-edge knows {sorted(NODE_TYPES)}")
    known = {f for f in node_type.__dataclass_fields__}
    values = {key: value for key, value in data.items() if key != "type"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GraphError(
            f"node {values.get('name')!r} of type {type_name}: unknown fields {unknown}; "
            "the file may come from a newer reverb-edge"
        )
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return node_type(**values)
    except TypeError as err:
        raise GraphError(f"node {values.get('name')!r} of type {type_name}: {err}") from err
