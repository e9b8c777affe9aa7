"""Layout changes between the engine's channels-last feature maps and PyTorch's channels-first order."""

import numpy as np
from numba import njit

from reverb_edge.kernels.config import NJIT_OPTIONS


def flatten_channels_first(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Flatten a channels-last ``x`` (H, W, C) in PyTorch's (C, H, W) order, like ``x.transpose(2, 0, 1).reshape(-1)``.

    ``out`` (float32, C * H * W elements) receives the result when given.
    The engine calls the kernel directly: for a map of a few thousand values
    NumPy's transpose and copy cost more in call overhead than in copying.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    result = np.empty(x.size, np.float32) if out is None else out
    _flatten_channels_first_kernel(x, result)
    return result


@njit(**NJIT_OPTIONS)
def _flatten_channels_first_kernel(x, out):
    height, width, channels = x.shape
    flat_x = x.reshape(-1)
    for c in range(channels):
        for pixel in range(height * width):
            out[c * height * width + pixel] = flat_x[pixel * channels + c]


@njit(**NJIT_OPTIONS)
def _flatten_pair_kernel(x, x_next, out, out_next):
    """Flatten two timesteps' maps in one compiled call."""
    _flatten_channels_first_kernel(x, out)
    _flatten_channels_first_kernel(x_next, out_next)


@njit(**NJIT_OPTIONS)
def _channels_last_copy(x, out):
    """Copy ``x`` (C, H, W) into ``out`` (H, W, C); return the largest absolute value, NaN if there is a NaN.

    One pass does the engine's input check and its change of layout.
    """
    channels, height, width = x.shape
    largest = np.float32(0.0)
    not_a_number = False
    for c in range(channels):
        for y in range(height):
            for column in range(width):
                value = x[c, y, column]
                out[y, column, c] = value
                largest = max(largest, abs(value))
                not_a_number |= value != value
    return np.float64(np.nan) if not_a_number else np.float64(largest)
