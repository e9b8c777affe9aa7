"""Fully connected layers with binary (±1) or float weights, event-driven over non-zero inputs.

Both functions compute ``out[o] = scale[o] * sum_i w[o, i] * x[i] + bias[o]``
with the convolution kernel of ``reverb_edge.kernels.conv``: a linear layer
is a 1 × 1 convolution of a 1 × 1 image with I channels. The kernel lists the
non-zero inputs, then sums only over those, so the work is proportional to
the number of non-zero inputs times the number of outputs. Sums are
accumulated in float32 in increasing input order.
"""

import numpy as np

from reverb_edge.bitpack import unpack_signs
from reverb_edge.kernels.checks import check_binary_linear, check_float_linear
from reverb_edge.kernels.conv import prepare_linear


def binary_linear(x: np.ndarray, weight_bits: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, in_features: int) -> np.ndarray:
    """Apply a linear layer with packed ±1 weights and the per-output affine ``scale * z + bias``.

    Args:
        x: input of shape (in_features,), any float dtype.
        weight_bits: uint64 array (O, words_for(in_features)). The sign of
            weight[o, i] is bit i of row o, using the convention of
            ``reverb_edge.bitpack``.
        scale, bias: float arrays of shape (O,).
        in_features: I. The packed words cannot tell it exactly, so it is passed.

    Returns:
        float32 array of shape (O,), summed over the non-zero inputs in increasing order.

    Raises:
        InputError: on a wrong dtype or shape.
    """
    x, weight_bits, scale, bias = check_binary_linear("binary_linear", x, weight_bits, scale, bias, in_features)
    signs = unpack_signs(weight_bits, in_features)
    return prepare_linear(signs, scale, bias)(x)[0].copy()


def float_linear(x: np.ndarray, weight: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Apply a linear layer with float weights (O, I) and the affine ``scale * z + bias``.

    Used for full-precision first and last layers. Returns a float32 array of
    shape (O,) and raises ``InputError`` on a wrong dtype or shape.
    """
    x, weight, scale, bias = check_float_linear("float_linear", x, weight, scale, bias)
    return prepare_linear(weight, scale, bias)(x)[0].copy()
