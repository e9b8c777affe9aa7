"""Re-parameterize a trained PyTorch ReverB-SNN into the engine's graph and packed tensors.

Folding, per output channel c of a synaptic layer (convolution or linear) with
amplitude α (1 for a full-precision layer), optional bias and optional
BatchNorm (γ, β, running mean μ, running variance σ², eps) right after it::

    naive:   I = γ · ((α · z + bias) - μ) / sqrt(σ² + eps) + β
    folded:  I = a · z + b,   a = α · γ / sqrt(σ² + eps),
                              b = β + (bias - μ) · γ / sqrt(σ² + eps)

Without BatchNorm, a = α and b = bias (0 when the layer has none).

For a binary layer the file stores sign bits and ``scale = |a|``: where a < 0
the channel's sign bits are flipped, because a · z = |a| · (-z) and negating
every ±1 weight negates z. Keeping the scale non-negative lets an engine
move it out of the synapses (fire when z >= (θ - b) / a) without flipping
the comparison. Where a = 0 (γ = 0) the channel's current is b alone; its
bits are kept as trained and the scale is 0. Full-precision layers keep their
float weights and a signed scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reverb_edge.bitpack import pack_signs
from reverb_edge.errors import ConversionError, GraphError
from reverb_edge.graph import EventEncoding, Graph, InputSpec
from reverb_edge.modelfile import save_model
from reverb_edge.nodes import Add, AvgPool2d, Conv2d, Flatten, LIF, Linear, MaxPool2d, Node

from .layers import LIF as TorchLIF
from .layers import BinaryConv2d, BinaryLinear
from .model import ReverbNet, Residual

logger = logging.getLogger(__name__)

SUPPORTED = (
    "BinaryConv2d, BinaryLinear, nn.Conv2d, nn.Linear (full precision), BatchNorm1d/2d directly after one "
    "of those, LIF, MaxPool2d, AvgPool2d, Flatten, Residual, Identity, Dropout"
)


EXACT_TYPES = {
    BinaryConv2d, BinaryLinear, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, TorchLIF,
    nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.Sequential, Residual,
}


@dataclass
class _Pending:
    """A synaptic layer whose BatchNorm (if any) has not been seen yet."""

    module: nn.Module
    path: str
    node: Node


def _tuple2(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv_padding(module: nn.Conv2d, path: str) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right) padding, resolving 'same' the way PyTorch pads it."""
    if module.padding_mode != "zeros":
        raise ConversionError(
            f"layer {path!r} ({type(module).__name__}) uses padding_mode={module.padding_mode!r}; "
            "the engine pads with zeros only, so retrain with padding_mode='zeros'"
        )
    padding = module.padding
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        result = []
        for kernel, dilation in zip(module.kernel_size, module.dilation):
            total = dilation * (kernel - 1)
            result.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = result
        return (top, bottom, left, right)
    vertical, horizontal = _tuple2(padding)
    return (vertical, vertical, horizontal, horizontal)


def _synapse_constants(module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Return (α, bias) as float64 arrays; α = 1 for a full-precision layer."""
    out = module.weight.shape[0]
    alpha = module.alpha.detach().double().numpy() if hasattr(module, "alpha") else np.ones(out)
    bias = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(out)
    return alpha, bias


def _fold(pending: _Pending, batchnorm: nn.Module | None) -> dict[str, np.ndarray]:
    """Fold α, bias and BatchNorm into per-channel (scale, bias) and pack the weights."""
    module, node = pending.module, pending.node
    alpha, bias = _synapse_constants(module)
    a, b = alpha, bias
    if batchnorm is not None:
        gamma = batchnorm.weight.detach().double().numpy() if batchnorm.affine else np.ones_like(a)
        beta = batchnorm.bias.detach().double().numpy() if batchnorm.affine else np.zeros_like(a)
        mean = batchnorm.running_mean.detach().double().numpy()
        var = batchnorm.running_var.detach().double().numpy()
        inv_std = 1.0 / np.sqrt(var + batchnorm.eps)
        a = alpha * gamma * inv_std
        b = beta + (bias - mean) * gamma * inv_std

    weight = module.weight.detach().float().numpy()
    if isinstance(module, (BinaryConv2d, BinaryLinear)):
        flip = a < 0
        if isinstance(module, BinaryConv2d):
            # (out, in/groups, kh, kw) -> (out, kh, kw, in/groups): pack along the input channels.
            signs_source = np.transpose(weight, (0, 2, 3, 1)).copy()
            signs_source[flip] = -signs_source[flip] - (signs_source[flip] == 0)
        else:
            signs_source = weight.copy()
            signs_source[flip] = -signs_source[flip] - (signs_source[flip] == 0)
        # A weight of exactly 0 counts as +1; negating it must give -1, hence the "- (w == 0)".
        packed = pack_signs(signs_source)
        scale = np.abs(a)
    else:
        packed = np.ascontiguousarray(weight, dtype=np.float32)
        scale = a
    return {
        f"{node.name}.weight": packed,
        f"{node.name}.scale": scale.astype(np.float32),
        f"{node.name}.bias": b.astype(np.float32),
    }


class _Builder:
    """Walks the module tree in forward order and emits graph nodes and tensors."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.pending: _Pending | None = None
        self.names: set[str] = set()

    def _name(self, path: str) -> str:
        name = path or "layer"
        base, counter = name, 1
        while name in self.names:
            counter += 1
            name = f"{base}_{counter}"
        self.names.add(name)
        return name

    def _flush(self, batchnorm: nn.Module | None = None) -> None:
        if self.pending is not None:
            self.tensors.update(_fold(self.pending, batchnorm))
            self.pending = None

    def _emit(self, node: Node) -> str:
        self.nodes.append(node)
        return node.name

    @property
    def last(self) -> str | None:
        return self.nodes[-1].name if self.nodes else None

    def add_sequence(self, modules: nn.Module, path: str, source: str | None) -> str | None:
        """Convert children of ``modules`` in order; ``source`` is the node feeding the first one."""
        current = source
        for child_name, child in modules.named_children():
            child_path = f"{path}.{child_name}" if path else child_name
            current = self.add_module(child, child_path, current)
        return current

    def add_module(self, module: nn.Module, path: str, source: str | None) -> str | None:
        if type(module) not in EXACT_TYPES:
            # A subclass may override forward(), so only the exact classes are known to compute
            # what the engine computes.
            raise ConversionError(
                f"layer {path!r} ({type(module).__name__}) cannot run exactly in the engine; supported layers "
                f"are {SUPPORTED} (exact classes, not subclasses). Replace it (for example ReLU with LIF) "
                "or remove it, then retrain"
            )
        inputs = (source,) if source is not None and source != self.last else ()
        if source is None and self.nodes:
            inputs = ("input",)

        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if self.pending is None or self.last != source:
                raise ConversionError(
                    f"layer {path!r} ({type(module).__name__}) does not directly follow a convolution or "
                    "linear layer, so it cannot be folded into neuron constants; move it right after one"
                )
            if not module.track_running_stats or module.running_mean is None:
                raise ConversionError(
                    f"layer {path!r} ({type(module).__name__}) has no running statistics "
                    "(track_running_stats=False); the engine needs them, so retrain with the default"
                )
            self._flush(module)
            return source
        self._flush()

        if isinstance(module, nn.Conv2d):
            node = Conv2d(
                self._name(path), inputs,
                in_channels=module.in_channels, out_channels=module.out_channels,
                kernel_size=_tuple2(module.kernel_size), stride=_tuple2(module.stride),
                padding=_conv_padding(module, path), dilation=_tuple2(module.dilation),
                groups=module.groups,
                weight_format="binary" if isinstance(module, BinaryConv2d) else "float32",
            )
            self.pending = _Pending(module, path, node)
            return self._emit(node)

        if isinstance(module, nn.Linear):
            node = Linear(
                self._name(path), inputs,
                in_features=module.in_features, out_features=module.out_features,
                weight_format="binary" if isinstance(module, BinaryLinear) else "float32",
            )
            self.pending = _Pending(module, path, node)
            return self._emit(node)

        if isinstance(module, TorchLIF):
            return self._emit(LIF(self._name(path), inputs, tau=module.tau, threshold=module.threshold))

        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            return self._emit(self._pool(module, path, inputs))

        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ConversionError(
                    f"layer {path!r} (Flatten) has start_dim={module.start_dim}, end_dim={module.end_dim}; "
                    "the engine flattens everything but the batch axis, so use nn.Flatten()"
                )
            return self._emit(Flatten(self._name(path), inputs))

        if isinstance(module, (nn.Identity, nn.Dropout)):
            return source

        if isinstance(module, nn.Sequential):
            return self.add_sequence(module, path, source)

        if isinstance(module, Residual):
            body = module.body if isinstance(module.body, nn.Sequential) else nn.Sequential(module.body)
            body_end = self.add_sequence(body, f"{path}.body", source)
            self._flush()
            shortcut_end = self.add_module(module.shortcut, f"{path}.shortcut", source)
            self._flush()
            shortcut_end = shortcut_end if shortcut_end is not None else "input"
            body_end = body_end if body_end is not None else "input"
            return self._emit(Add(self._name(f"{path}.add"), (body_end, shortcut_end)))

        raise ConversionError(
            f"layer {path!r} ({type(module).__name__}) cannot run exactly in the engine; supported layers "
            f"are {SUPPORTED}. Replace it (for example ReLU with LIF) or remove it, then retrain"
        )

    def _pool(self, module: nn.Module, path: str, inputs: tuple[str, ...]) -> Node:
        kind = type(module).__name__
        if module.ceil_mode:
            raise ConversionError(f"layer {path!r} ({kind}) uses ceil_mode=True; the engine supports ceil_mode=False only")
        kernel = _tuple2(module.kernel_size)
        stride = _tuple2(module.stride if module.stride is not None else module.kernel_size)
        vertical, horizontal = _tuple2(module.padding)
        padding = (vertical, vertical, horizontal, horizontal)
        if isinstance(module, nn.AvgPool2d):
            if not module.count_include_pad or module.divisor_override is not None:
                raise ConversionError(
                    f"layer {path!r} (AvgPool2d) uses count_include_pad=False or divisor_override; "
                    "the engine divides by the full window, so use the defaults"
                )
            return AvgPool2d(self._name(path), inputs, kernel_size=kernel, stride=stride, padding=padding)
        if module.return_indices:
            raise ConversionError(f"layer {path!r} (MaxPool2d) has return_indices=True; set it to False")
        return MaxPool2d(self._name(path), inputs, kernel_size=kernel, stride=stride, padding=padding,
                         dilation=_tuple2(module.dilation))


def to_graph(model: ReverbNet) -> tuple[Graph, dict[str, np.ndarray]]:
    """Return the engine graph and tensors equivalent to ``model`` in eval mode."""
    builder = _Builder()
    return _build_graph(model, builder), builder.tensors


def to_plain_graph(model: ReverbNet) -> tuple[Graph, dict[str, np.ndarray], frozenset[str]]:
    """Return the graph and tensors of a plain CNN, and the names of the nodes followed by ReLU.

    The graph has no neurons: each ReLU of ``model`` must directly follow a
    convolution or linear layer (or its BatchNorm) and becomes an entry of the
    returned set, which the TFLite export fuses into that node's operator. The
    engine cannot run this graph, because it has no ReLU node.
    """
    builder = _PlainBuilder()
    graph = _build_graph(model, builder)
    neurons = [node.name for node in graph.nodes if isinstance(node, LIF)]
    if neurons:
        raise ConversionError(f"a plain CNN has no LIF neurons, but the model has {neurons}; use ReLU")
    return graph, builder.tensors, frozenset(builder.relu_nodes)


class _PlainBuilder(_Builder):
    """A :class:`_Builder` that also accepts ReLU right after a synaptic layer, for plain CNNs."""

    def __init__(self) -> None:
        super().__init__()
        self.relu_nodes: set[str] = set()

    def add_module(self, module: nn.Module, path: str, source: str | None) -> str | None:
        if type(module) is not nn.ReLU:
            return super().add_module(module, path, source)
        self._flush()
        previous = self.nodes[-1] if self.nodes else None
        if (previous is None or previous.name != source or not isinstance(previous, (Conv2d, Linear))
                or previous.name in self.relu_nodes):
            raise ConversionError(
                f"layer {path!r} (ReLU) does not directly follow a convolution or linear layer (or its "
                "BatchNorm), so it cannot be fused into one; move it right after one"
            )
        self.relu_nodes.add(previous.name)
        return source


def _build_graph(model: ReverbNet, builder: _Builder) -> Graph:
    """Walk ``model`` with ``builder`` and return the validated graph of the nodes it emitted."""
    if not isinstance(model, ReverbNet):
        raise ConversionError(
            f"expected a ReverbNet (reverb_edge.converters.model), got {type(model).__name__}; wrap the layers "
            "in ReverbNet(layers, timesteps, input_spec)"
        )
    builder.add_sequence(model.layers, "layers", None)
    builder._flush()
    if not builder.nodes:
        raise ConversionError("the model has no layers")
    spec = model.input_spec
    missing = sorted({"shape", "mean", "std"} - set(spec))
    if missing:
        raise ConversionError(
            f"the model's input_spec lacks {missing}; give ReverbNet an input_spec with shape (C, H, W), "
            "mean and std per channel, and optionally invert and labels"
        )
    try:
        input_spec = InputSpec(
            shape=tuple(spec["shape"]), mean=tuple(spec["mean"]), std=tuple(spec["std"]),
            invert=bool(spec.get("invert", False)), labels=tuple(spec.get("labels", ())),
            events=EventEncoding.from_dict(spec["events"]) if spec.get("events") is not None else None,
        )
        return Graph(input=input_spec, nodes=tuple(builder.nodes), timesteps=model.timesteps)
    except GraphError as err:
        raise ConversionError(f"the converted graph is invalid: {err}") from err


def export_model(model: ReverbNet, path: str | Path) -> Path:
    """Convert ``model`` and write it to ``path`` atomically as a ``.reverb`` file."""
    graph, tensors = to_graph(model)
    return save_model(path, graph, tensors)
