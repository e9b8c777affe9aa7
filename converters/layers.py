"""PyTorch layers of a ReverB-SNN: binary-weight synapses and the real-valued spiking neuron.

Tensors flow through a network with time folded into the batch axis: a layer
receives shape (T * B, ...), where the first B rows are timestep 0, the next B
rows timestep 1, and so on. Synaptic layers (convolution, linear, BatchNorm,
pooling) act on each row independently. Only :class:`LIF` looks across time,
so it unfolds the axis, steps through the T timesteps and folds it back.

Equations (per output channel c, timestep t, membrane potential U with U⁰ = 0)::

    z^t = sign(W) ⊛ O^t_prev              sign(w) = +1 if w >= 0 else -1
    I^t = BN(α_c · z^t + bias_c)          α: trainable amplitude, BN and bias optional
    H^t = τ · U^{t-1} + I^t               charge, τ: decay constant
    F^t = [H^t >= θ]                      fire, θ: threshold
    O^t = H^t · F^t                       real-valued spike: the membrane potential, or 0
    U^t = H^t · (1 - F^t)                 hard reset to 0 after a spike
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _SignSTE(torch.autograd.Function):
    """sign(w) with w >= 0 -> +1, and a straight-through gradient clipped to |w| <= 1."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)

        # torch.sign(0) is 0, which would give a ternary weight; the file format has only ±1.
        return torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        return grad_output * (weight.abs() <= 1).to(grad_output.dtype)


def binarize(weight: torch.Tensor) -> torch.Tensor:
    """Return the ±1 weights used in the forward pass (+1 where the weight is >= 0)."""
    return _SignSTE.apply(weight)


def _init_amplitude(weight: torch.Tensor) -> torch.Tensor:
    """Start α at the mean |w| of each output channel, the scale that best fits sign(w) to w."""
    return weight.detach().abs().flatten(1).mean(dim=1).clamp_min(1e-3)


class BinaryConv2d(nn.Conv2d):
    """Conv2d whose forward pass uses sign(W) scaled by a per-output-channel amplitude α.

    Accepts every ``nn.Conv2d`` argument except ``padding_mode`` other than
    ``"zeros"``. The latent real weights are kept for training; the converter
    stores only their signs plus the folded per-channel constants.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(
                f"BinaryConv2d supports padding_mode='zeros' only, got {self.padding_mode!r}"
            )
        self.alpha = nn.Parameter(_init_amplitude(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._conv_forward(x, binarize(self.weight), None)
        out = z * self.alpha.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class BinaryLinear(nn.Linear):
    """Linear layer whose forward pass uses sign(W) scaled by a per-output amplitude α."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.alpha = nn.Parameter(_init_amplitude(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, binarize(self.weight)) * self.alpha
        if self.bias is not None:
            out = out + self.bias
        return out


class _FireRectangular(torch.autograd.Function):
    """Heaviside step [h >= θ] with a rectangular surrogate gradient of width 2·a around θ."""

    @staticmethod
    def forward(ctx, membrane: torch.Tensor, threshold: float, width: float) -> torch.Tensor:
        ctx.save_for_backward(membrane)
        ctx.threshold = threshold
        ctx.width = width
        return (membrane >= threshold).to(membrane.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (membrane,) = ctx.saved_tensors
        inside = (membrane - ctx.threshold).abs() < ctx.width
        surrogate = inside.to(grad_output.dtype) / (2.0 * ctx.width)
        return grad_output * surrogate, None, None


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron that emits its membrane potential as the spike.

    Args:
        tau: decay constant τ applied to the membrane potential each timestep (0 <= τ <= 1).
        threshold: firing threshold θ (> 0), in the units of the synaptic current.
        surrogate_width: half-width a of the rectangular surrogate gradient window.

    ``timesteps`` (T) is set by the network that owns the neuron
    (:class:`~reverb_edge.converters.model.ReverbNet`) before each forward pass.
    """

    def __init__(self, tau: float = 0.25, threshold: float = 0.5, surrogate_width: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"LIF tau must be in [0, 1], got {tau}")
        if not (threshold > 0.0 and math.isfinite(threshold)):
            raise ValueError(f"LIF threshold must be a finite number > 0, got {threshold}")
        if not surrogate_width > 0.0:
            raise ValueError(f"LIF surrogate_width must be > 0, got {surrogate_width}")
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.surrogate_width = float(surrogate_width)
        self.timesteps = 1
        # The mean firing rate of the last forward pass with gradients, differentiable through the
        # surrogate. Training can add it to the loss to make the network sparser (converters.train).
        self.firing_rate: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"tau={self.tau}, threshold={self.threshold}"

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        timesteps = self.timesteps
        if current.shape[0] % timesteps != 0:
            raise ValueError(
                f"LIF input has {current.shape[0]} rows, not a multiple of timesteps={timesteps}"
            )
        per_step = current.view(timesteps, -1, *current.shape[1:])

        membrane = torch.zeros_like(per_step[0])
        spikes = []
        fired_total = 0.0
        for t in range(timesteps):
            charged = self.tau * membrane + per_step[t]
            fired = _FireRectangular.apply(charged, self.threshold, self.surrogate_width)
            spikes.append(charged * fired)
            membrane = charged * (1.0 - fired)
            fired_total = fired_total + fired.mean()
        self.firing_rate = fired_total / timesteps if torch.is_grad_enabled() else None
        return torch.stack(spikes).view_as(current)
