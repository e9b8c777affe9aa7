"""ReverB-SNN networks in PyTorch: the time loop, direct encoding, readout and checkpoints.

A :class:`ReverbNet` wraps an ``nn.Sequential`` of layers from :mod:`.layers`
(plus the standard BatchNorm, pooling, Flatten and full-precision Conv2d /
Linear layers) and runs it for T timesteps:

- Direct encoding: the same normalised image is the input at every timestep, so
  the layers before the first neuron see identical input at each t. They run
  once on the batch, and their output is repeated T times.
- Readout: the last layer does not spike; the logits are the mean over the T
  timesteps of its output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reverb_edge.errors import ConversionError

from .layers import LIF, BinaryConv2d, BinaryLinear

CHECKPOINT_FORMAT = "reverb-edge-checkpoint"
CHECKPOINT_VERSION = 1

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Residual(nn.Module):
    """``body(x) + shortcut(x)``, with the identity as the default shortcut."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _contains_neuron(module: nn.Module) -> bool:
    return any(isinstance(m, LIF) for m in module.modules())


class ReverbNet(nn.Module):
    """A spiking network run for ``timesteps`` steps with direct encoding and mean readout.

    Args:
        layers: the layers, applied in order to tensors with time folded into the batch axis.
        timesteps: T, the number of timesteps per inference.
        input_spec: the input spec the model file will store: ``shape`` (C, H, W), ``mean`` and
            ``std`` per channel (applied to pixel / 255), ``invert`` (True when the network
            expects light strokes on a dark background) and ``labels``.
    """

    def __init__(self, layers: nn.Sequential, timesteps: int, input_spec: dict[str, Any]) -> None:
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.layers = layers
        self.input_spec = dict(input_spec)
        self.timesteps = int(timesteps)

    @property
    def timesteps(self) -> int:
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: int) -> None:
        self._timesteps = int(value)
        for module in self.modules():
            if isinstance(module, LIF):
                module.timesteps = self._timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs to logits (B, classes), averaged over the timesteps.

        ``x`` is either images (B, C, H, W), fed at every timestep (direct
        encoding), or one frame per timestep (B, T, C, H, W), for example
        binned DVS events; T must then equal ``timesteps``.
        """
        batch = x.shape[0]
        expanded = False
        if x.dim() == 5:
            if x.shape[1] != self.timesteps:
                raise ValueError(f"input has {x.shape[1]} frames per sample, but the network runs {self.timesteps} timesteps")
            x = x.transpose(0, 1).reshape(self.timesteps * batch, *x.shape[2:])
            expanded = True
        for layer in self.layers:
            if not expanded and _contains_neuron(layer):
                x = x.repeat(self.timesteps, *([1] * (x.dim() - 1)))
                expanded = True
            x = layer(x)
        if not expanded:
            return x
        return x.view(self.timesteps, batch, *x.shape[1:]).mean(dim=0)


@dataclass(frozen=True)
class ConvNetConfig:
    """Hyper-parameters of the small convolutional ReverB-SNN that ``reverb-edge train`` builds.

    Three 3×3 convolutions (each followed by BatchNorm and a LIF neuron; the
    second and third by 2×2 max pooling), then a linear readout.

    ``plain_cnn=True`` builds the same architecture as an ordinary CNN, the
    baseline that benchmarks compare the SNN with: float32 convolutions and
    readout, ReLU in place of each LIF neuron, and T = 1 (so ``timesteps``
    must be 1). ``tau``, ``threshold`` and the two ``full_precision_*`` flags
    do not apply to it.
    """

    channels: tuple[int, int, int] = (32, 32, 64)
    timesteps: int = 2
    tau: float = 0.25
    threshold: float = 0.5
    full_precision_first: bool = False
    full_precision_last: bool = False
    in_channels: int = 1
    image_size: int = 28
    mean: float = MNIST_MEAN
    std: float = MNIST_STD
    labels: tuple[str, ...] = tuple(str(d) for d in range(10))
    name: str = "convnet"
    event_window_us: int | None = None
    plain_cnn: bool = False

    def __post_init__(self) -> None:
        if self.plain_cnn and self.timesteps != 1:
            raise ValueError(f"a plain CNN runs one timestep, so timesteps must be 1, got {self.timesteps}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ConvNetConfig fields {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        if "labels" in values:
            values["labels"] = tuple(values["labels"])
        return cls(**values)


def build_convnet(config: ConvNetConfig) -> ReverbNet:
    """Build the network that ``config`` describes, with freshly initialised weights."""
    c1, c2, c3 = config.channels
    pooled = config.image_size // 4
    if config.plain_cnn:
        first_conv, hidden_conv, last_linear = nn.Conv2d, nn.Conv2d, nn.Linear
    else:
        first_conv = nn.Conv2d if config.full_precision_first else BinaryConv2d
        hidden_conv = BinaryConv2d
        last_linear = nn.Linear if config.full_precision_last else BinaryLinear

    def neuron() -> nn.Module:
        return nn.ReLU() if config.plain_cnn else LIF(tau=config.tau, threshold=config.threshold)

    layers = nn.Sequential(
        first_conv(config.in_channels, c1, 3, padding=1, bias=False),
        nn.BatchNorm2d(c1),
        neuron(),
        hidden_conv(c1, c2, 3, padding=1, bias=False),
        nn.BatchNorm2d(c2),
        neuron(),
        nn.MaxPool2d(2),
        hidden_conv(c2, c3, 3, padding=1, bias=False),
        nn.BatchNorm2d(c3),
        neuron(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        last_linear(c3 * pooled * pooled, len(config.labels)),
    )
    input_spec = {
        "shape": [config.in_channels, config.image_size, config.image_size],
        "mean": [config.mean] * config.in_channels,
        "std": [config.std] * config.in_channels,
        "invert": config.event_window_us is None,
        "labels": list(config.labels),
    }
    if config.event_window_us is not None:
        # One frame of OFF/ON event counts per timestep, from a square sensor of image_size pixels.
        input_spec["events"] = {
            "sensor_size": [config.image_size, config.image_size, config.in_channels],
            "n_time_bins": config.timesteps,
            "window_us": config.event_window_us,
            "polarity_channels": config.in_channels == 2,
        }
    return ReverbNet(layers, config.timesteps, input_spec)


def save_checkpoint(path: str | Path, model: ReverbNet, config: ConvNetConfig, extra: dict[str, Any] | None = None) -> None:
    """Save the state_dict with the architecture it belongs to, loadable with weights_only=True."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": config.to_dict(),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[ReverbNet, ConvNetConfig, dict[str, Any]]:
    """Rebuild a network from a checkpoint; only tensors and plain data are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ConversionError(f"{path} is a folder, not a checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for foreign or damaged files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(
            f"{path} is not a reverb-edge checkpoint: PyTorch could not load it with weights_only=True "
            f"({reason}); pass a checkpoint written by `reverb-edge train`"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConversionError(
            f"{path} is not a reverb-edge checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
            "save it with reverb_edge.converters.model.save_checkpoint or `reverb-edge train`"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ConversionError(
            f"{path} has checkpoint version {payload.get('version')!r}; this reverb-edge reads "
            f"version {CHECKPOINT_VERSION}"
        )
    try:
        config = ConvNetConfig.from_dict(payload["arch"])
        model = build_convnet(config)
        model.load_state_dict(payload["state_dict"])
        extra = dict(payload.get("extra") or {})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ConversionError(
            f"{path} is a damaged reverb-edge checkpoint: {type(err).__name__}: {err}; retrain or restore it"
        ) from err
    model.eval()
    return model, config, extra
