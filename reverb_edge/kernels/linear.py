"""Fully connected layers with binary (±1) or float weights, event-driven over non-zero inputs.

Both kernels compute ``out[o] = scale[o] * sum_i w[o, i] * x[i] + bias[o]``.
They first collect the indices of the non-zero inputs, then sum only over
those, so the work is proportional to the number of non-zero inputs times the
number of outputs. Sums are accumulated in float32 in increasing input order.
"""

import numpy as np
from numba import njit

from reverb_edge.kernels.checks import check_binary_linear, check_float_linear
from reverb_edge.kernels.config import NJIT_OPTIONS


def binary_linear(
    x: np.ndarray,
    weight_bits: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    in_features: int,
) -> np.ndarray:
    """Apply a linear layer with packed ±1 weights and the per-output affine ``scale * z + bias``.

    Args:
        x: input of shape (in_features,), any float dtype.
        weight_bits: uint64 array (O, words_for(in_features)). The sign of
            weight[o, i] is bit i of row o, using the convention of
            ``reverb_edge.bitpack``.
        scale, bias: float arrays of shape (O,).
        in_features: I. The packed words cannot tell it exactly, so it is passed.

    Returns:
        float32 array of shape (O,).

    Raises:
        InputError: on a wrong dtype or shape.

    The kernel adds or subtracts each non-zero input and multiplies by scale
    once per output.
    """
    x, weight_bits, scale, bias = check_binary_linear(
        "binary_linear", x, weight_bits, scale, bias, in_features
    )
    out = np.empty(weight_bits.shape[0], dtype=np.float32)
    _binary_linear_kernel(x, weight_bits, scale, bias, out)
    return out


def float_linear(
    x: np.ndarray,
    weight: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
) -> np.ndarray:
    """Apply a linear layer with float weights (O, I) and the affine ``scale * z + bias``.

    Used for full-precision first and last layers. Returns a float32 array of
    shape (O,) and raises ``InputError`` on a wrong dtype or shape.
    """
    x, weight, scale, bias = check_float_linear("float_linear", x, weight, scale, bias)
    out = np.empty(weight.shape[0], dtype=np.float32)
    _float_linear_kernel(x, weight, scale, bias, out)
    return out


@njit(**NJIT_OPTIONS)
def _nonzero_indices(x):
    count = 0
    for i in range(x.shape[0]):
        if x[i] != 0.0:
            count += 1
    indices = np.empty(count, dtype=np.int64)
    count = 0
    for i in range(x.shape[0]):
        if x[i] != 0.0:
            indices[count] = i
            count += 1
    return indices


@njit(**NJIT_OPTIONS)
def _binary_linear_kernel(x, weight_bits, scale, bias, out):
    active = _nonzero_indices(x)
    n_active = active.shape[0]
    words = np.empty(n_active, dtype=np.int64)
    masks = np.empty(n_active, dtype=np.uint64)
    for k in range(n_active):
        words[k] = active[k] // 64
        masks[k] = np.uint64(1) << np.uint64(active[k] % 64)

    for o in range(weight_bits.shape[0]):
        z = np.float32(0.0)
        for k in range(n_active):
            value = x[active[k]]
            # Sign-add: bit 1 adds the input, bit 0 subtracts it.
            if weight_bits[o, words[k]] & masks[k]:
                z += value
            else:
                z -= value
        out[o] = scale[o] * z + bias[o]


@njit(**NJIT_OPTIONS)
def _float_linear_kernel(x, weight, scale, bias, out):
    active = _nonzero_indices(x)
    for o in range(weight.shape[0]):
        z = np.float32(0.0)
        for k in range(active.shape[0]):
            i = active[k]
            z += x[i] * weight[o, i]
        out[o] = scale[o] * z + bias[o]
