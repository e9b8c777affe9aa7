"""Plain NumPy twins of the kernels in ``reverb_edge.kernels``, for tests and debugging.

Each function has the name, signature, input checks and output of its Numba
counterpart, but computes the result the direct way. Packed weights are
unpacked to ±1 floats, inputs are padded explicitly, and convolutions gather
one kernel offset at a time. The twins are slow and allocate freely.

Float sums may differ from the Numba kernels in the last bits because the
summation order differs. Pooling, ``lif_step`` and ``residual_add`` follow the
same float32 operation order as the kernels and match them exactly.
"""

import numpy as np

from reverb_edge.bitpack import pack_signs, unpack_signs
from reverb_edge.errors import InputError
from reverb_edge.kernels.checks import (
    check_binary_conv2d,
    check_binary_linear,
    check_float_conv2d,
    check_float_linear,
    check_lif_step,
    check_pool2d,
    check_same_shape,
)

__all__ = [
    "avg_pool2d",
    "binary_conv2d",
    "binary_conv2d_popcount",
    "binary_linear",
    "float_conv2d",
    "float_linear",
    "lif_step",
    "max_pool2d",
    "residual_add",
]


def binary_conv2d(
    x, weight_bits, scale, bias, *, in_channels, stride=(1, 1), padding=(0, 0, 0, 0),
    dilation=(1, 1), groups=1,
):
    """Twin of ``reverb_edge.kernels.binary_conv2d``."""
    x, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d", x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
    )
    group_channels = geometry.in_channels // geometry.groups
    signs = unpack_signs(weight_bits, group_channels)  # (O, kh, kw, Cg)
    weight = signs.transpose(0, 3, 1, 2).astype(np.float32)  # (O, Cg, kh, kw)
    z = _conv2d_sum(x, weight, geometry)
    return _affine(z, scale, bias)


def binary_conv2d_events(
    events, input_shape, weight_bits, scale, bias, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1
):
    """Twin of ``reverb_edge.kernels.binary_conv2d_events``: bin into a count frame, then convolve."""
    from reverb_edge.kernels.events import event_coordinates

    channel, y, x = event_coordinates("binary_conv2d_events", events, input_shape)
    frame = np.zeros(input_shape, dtype=np.float32)
    np.add.at(frame, (channel, y, x), 1.0)
    return binary_conv2d(
        frame, weight_bits, scale, bias, in_channels=input_shape[0], stride=stride, padding=padding,
        dilation=dilation, groups=groups,
    )


def binary_conv2d_popcount(
    x, weight_bits, scale, bias, *, in_channels, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1
):
    """Twin of ``reverb_edge.kernels.binary_conv2d_popcount``: the popcount formula with ``np.bitwise_count``."""
    x, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d_popcount", x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
    )
    if not np.isin(x, (0.0, 1.0)).all():
        values = np.unique(x)
        raise InputError(
            f"binary_conv2d_popcount: x must contain only 0.0 and 1.0, got values such as "
            f"{values[(values != 0) & (values != 1)][:3].tolist()}; use binary_conv2d for real-valued inputs"
        )
    group_channels = in_channels // geometry.groups
    out_channels, kernel_h, kernel_w, _ = weight_bits.shape
    group_out = out_channels // geometry.groups
    padded = _pad(x, geometry.padding, 0.0)
    z = np.zeros((out_channels, geometry.out_height, geometry.out_width), dtype=np.int64)
    for group in range(geometry.groups):
        inputs = padded[group * group_channels : (group + 1) * group_channels]
        for ky in range(kernel_h):
            for kx in range(kernel_w):
                window = _window(inputs, ky, kx, geometry)  # (Cg, OH, OW) of 0.0 and 1.0
                words = pack_signs(window.transpose(1, 2, 0) - 0.5)  # bit 1 where the input is 1
                ones = np.bitwise_count(words).sum(axis=-1, dtype=np.int64)
                for o in range(group * group_out, (group + 1) * group_out):
                    agree = np.bitwise_count(words & weight_bits[o, ky, kx]).sum(axis=-1, dtype=np.int64)
                    z[o] += 2 * agree - ones
    return _affine(z.astype(np.float32), scale, bias)


def float_conv2d(
    x, weight, scale, bias, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1
):
    """Twin of ``reverb_edge.kernels.float_conv2d``."""
    x, weight, scale, bias, geometry = check_float_conv2d(
        "float_conv2d", x, weight, scale, bias, stride, padding, dilation, groups
    )
    z = _conv2d_sum(x, weight, geometry)
    return _affine(z, scale, bias)


def binary_linear(x, weight_bits, scale, bias, *, in_features):
    """Twin of ``reverb_edge.kernels.binary_linear``."""
    x, weight_bits, scale, bias = check_binary_linear(
        "binary_linear", x, weight_bits, scale, bias, in_features
    )
    weight = unpack_signs(weight_bits, in_features).astype(np.float32)
    return scale * (weight @ x) + bias


def float_linear(x, weight, scale, bias):
    """Twin of ``reverb_edge.kernels.float_linear``."""
    x, weight, scale, bias = check_float_linear("float_linear", x, weight, scale, bias)
    return scale * (weight @ x) + bias


def avg_pool2d(x, kernel, stride, padding=(0, 0, 0, 0)):
    """Twin of ``reverb_edge.kernels.avg_pool2d``."""
    x, geometry = check_pool2d("avg_pool2d", x, kernel, stride, padding, (1, 1))
    padded = _pad(x, geometry.padding, 0.0)
    total = np.zeros((x.shape[0], geometry.out_height, geometry.out_width), dtype=np.float32)
    for ky in range(geometry.kernel[0]):
        for kx in range(geometry.kernel[1]):
            total += _window(padded, ky, kx, geometry)
    return total / np.float32(geometry.kernel[0] * geometry.kernel[1])


def max_pool2d(x, kernel, stride, padding=(0, 0, 0, 0), dilation=(1, 1)):
    """Twin of ``reverb_edge.kernels.max_pool2d``."""
    x, geometry = check_pool2d("max_pool2d", x, kernel, stride, padding, dilation)
    padded = _pad(x, geometry.padding, -np.inf)
    best = np.full((x.shape[0], geometry.out_height, geometry.out_width), -np.inf, np.float32)
    for ky in range(geometry.kernel[0]):
        for kx in range(geometry.kernel[1]):
            best = np.maximum(best, _window(padded, ky, kx, geometry))
    return best


def lif_step(current, membrane, tau, threshold, spikes_out=None):
    """Twin of ``reverb_edge.kernels.lif_step``; it also updates ``membrane`` in place."""
    current, membrane, tau, threshold, spikes_out = check_lif_step(
        "lif_step", current, membrane, tau, threshold, spikes_out
    )
    potential = tau * membrane + current
    fired = potential >= threshold
    spikes = np.where(fired, potential, np.float32(0.0))
    membrane[...] = np.where(fired, np.float32(0.0), potential)
    if spikes_out is not None:
        spikes_out[...] = spikes
        spikes = spikes_out
    return spikes, int(np.count_nonzero(fired))


def residual_add(a, b, out=None):
    """Twin of ``reverb_edge.kernels.residual_add``."""
    a, b, out = check_same_shape("residual_add", a, b, out)
    return np.add(a, b, out=out)


def _conv2d_sum(x, weight, geometry):
    """Return z (O, OH, OW) in float32 for float weights (O, Cg, kh, kw), one offset at a time."""
    padded = _pad(x, geometry.padding, 0.0)
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    group_out = out_channels // geometry.groups
    z = np.zeros((out_channels, geometry.out_height, geometry.out_width), dtype=np.float32)
    for group in range(geometry.groups):
        inputs = padded[group * group_channels : (group + 1) * group_channels]
        outputs = slice(group * group_out, (group + 1) * group_out)
        for ky in range(kernel_h):
            for kx in range(kernel_w):
                window = _window(inputs, ky, kx, geometry)  # (Cg, OH, OW)
                z[outputs] += np.einsum("oc,chw->ohw", weight[outputs, :, ky, kx], window)
    return z


def _window(padded, ky, kx, geometry):
    """Return the input values that kernel offset (ky, kx) meets at every output position."""
    row = ky * geometry.dilation[0]
    col = kx * geometry.dilation[1]
    stride_h, stride_w = geometry.stride
    row_stop = row + stride_h * (geometry.out_height - 1) + 1
    col_stop = col + stride_w * (geometry.out_width - 1) + 1
    return padded[:, row:row_stop:stride_h, col:col_stop:stride_w]


def _pad(x, padding, fill):
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right)), constant_values=np.float32(fill))


def _affine(z, scale, bias):
    return scale[:, None, None] * z + bias[:, None, None]
