"""2-D convolutions with binary (±1) or float weights, event-driven over non-zero inputs.

Both kernels compute, for output channel ``o`` in group ``g = o // Og``::

    z[o, y, x]   = sum over ci < Cg, ky, kx of
                   w[o, ci, ky, kx] * x[g*Cg + ci, y*sh + ky*dh - top, x*sw + kx*dw - left]
    out[o, y, x] = scale[o] * z[o, y, x] + bias[o]

where ``Cg = C / groups``, ``Og = O / groups``, and positions outside the input
(the zero padding) contribute nothing.

Instead of gathering a window per output, the kernels scatter: each non-zero
input value ``v`` at (c, iy, ix) is added to every output position its
receptive field reaches. Spike maps are mostly zeros, so the work is
proportional to the number of non-zero inputs times their fan-out. A zero
input costs one comparison. Sums are accumulated in float32, so the results
differ from a gather-order sum only by rounding.
"""

import numpy as np
from numba import njit

from reverb_edge.kernels.checks import check_binary_conv2d, check_float_conv2d
from reverb_edge.kernels.config import NJIT_OPTIONS


def binary_conv2d(
    x: np.ndarray,
    weight_bits: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    in_channels: int,
    stride=(1, 1),
    padding=(0, 0, 0, 0),
    dilation=(1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Convolve ``x`` with packed ±1 weights and apply the per-channel affine ``scale * z + bias``.

    Args:
        x: input of shape (C, H, W) with C == in_channels, any float dtype.
        weight_bits: uint64 array (O, kh, kw, words_for(C / groups)). The sign
            of weight[o, ci, ky, kx] is bit ci of the row weight_bits[o, ky, kx, :],
            using the convention of ``reverb_edge.bitpack``.
        scale, bias: float arrays of shape (O,).
        in_channels: C. The packed words cannot tell it exactly, so it is passed.
        stride, dilation: int or (height, width) pair.
        padding: int, (ph, pw) or (top, bottom, left, right) zero padding.
        groups: number of channel groups; it must divide C and O.

    Returns:
        float32 array (O, OH, OW), with OH = (H + top + bottom - dh*(kh-1) - 1)
        // sh + 1 and OW likewise.

    Raises:
        InputError: on a wrong dtype or shape, a bad parameter, or OH or OW < 1.

    The kernel never multiplies by a weight: it adds or subtracts each input,
    and multiplies by scale once per output element.
    """
    x, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d", x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
    )
    # (O, kh, kw, words) -> (kh, kw, words, O), so the inner loop over output
    # channels reads consecutive words.
    # TODO: this copy and the target tables are rebuilt on every call; prepare them once per layer.
    bits_by_position = np.ascontiguousarray(weight_bits.transpose(1, 2, 3, 0))
    row_targets, col_targets = _target_tables(x.shape, geometry)
    out = np.empty((geometry.out_channels, geometry.out_height, geometry.out_width), np.float32)
    _binary_conv2d_kernel(
        x, bits_by_position, scale, bias, geometry.groups, row_targets, col_targets, out
    )
    return out


def float_conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    stride=(1, 1),
    padding=(0, 0, 0, 0),
    dilation=(1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Convolve ``x`` with float weights and apply the per-channel affine ``scale * z + bias``.

    Used for full-precision first and last layers. ``weight`` has PyTorch's
    layout (O, C / groups, kh, kw). The other arguments, the output and the
    errors are those of ``binary_conv2d``. Zero inputs are skipped here too.
    """
    x, weight, scale, bias, geometry = check_float_conv2d(
        "float_conv2d", x, weight, scale, bias, stride, padding, dilation, groups
    )
    # (O, Cg, kh, kw) -> (kh, kw, Cg, O), so the inner loop reads consecutive weights.
    weight_by_position = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    row_targets, col_targets = _target_tables(x.shape, geometry)
    out = np.empty((geometry.out_channels, geometry.out_height, geometry.out_width), np.float32)
    _float_conv2d_kernel(
        x, weight_by_position, scale, bias, geometry.groups, row_targets, col_targets, out
    )
    return out


def _target_tables(x_shape, geometry) -> tuple[np.ndarray, np.ndarray]:
    """Return the output row and column that each input row/column reaches per kernel offset."""
    _, height, width = x_shape
    (kernel_h, kernel_w), (stride_h, stride_w) = geometry.kernel, geometry.stride
    top, _, left, _ = geometry.padding
    dilation_h, dilation_w = geometry.dilation
    row_targets = np.empty((height, kernel_h), dtype=np.int64)
    col_targets = np.empty((width, kernel_w), dtype=np.int64)
    _fill_targets(row_targets, stride_h, top, dilation_h, geometry.out_height)
    _fill_targets(col_targets, stride_w, left, dilation_w, geometry.out_width)
    return row_targets, col_targets


@njit(**NJIT_OPTIONS)
def _fill_targets(targets, stride, pad_before, dilation, out_size):
    # Input index i with kernel offset k feeds output index o when
    # o * stride + k * dilation - pad_before == i. Store o, or -1 when no o fits.
    size, kernel = targets.shape
    for i in range(size):
        for k in range(kernel):
            shifted = i + pad_before - k * dilation
            target = -1
            if shifted >= 0 and shifted % stride == 0:
                target = shifted // stride
                if target >= out_size:
                    target = -1
            targets[i, k] = target


@njit(**NJIT_OPTIONS)
def _binary_conv2d_kernel(x, bits_by_position, scale, bias, groups, row_targets, col_targets, out):
    channels, height, width = x.shape
    _, _, _, out_channels = bits_by_position.shape
    _, out_height, out_width = out.shape
    group_in = channels // groups
    group_out = out_channels // groups
    # Channels-last accumulator, so one input event updates consecutive floats.
    acc = np.zeros((out_height, out_width, out_channels), dtype=np.float32)

    for c in range(channels):
        group = c // group_in
        channel_in_group = c - group * group_in
        word = channel_in_group // 64
        mask = np.uint64(1) << np.uint64(channel_in_group % 64)
        o_start = group * group_out
        o_stop = o_start + group_out
        for iy in range(height):
            for ix in range(width):
                value = x[c, iy, ix]
                if value == 0.0:
                    continue
                _scatter_signed(acc, bits_by_position, word, mask, o_start, o_stop, row_targets, col_targets, iy, ix, value)

    _apply_affine(acc, scale, bias, out)


@njit(**NJIT_OPTIONS)
def _scatter_signed(acc, bits_by_position, word, mask, o_start, o_stop, row_targets, col_targets, iy, ix, value):
    """Add ``value`` or ``-value`` to every output that input pixel (iy, ix) reaches, by weight sign."""
    kernel_h, kernel_w = row_targets.shape[1], col_targets.shape[1]
    negated = -value
    for ky in range(kernel_h):
        oy = row_targets[iy, ky]
        if oy < 0:
            continue
        for kx in range(kernel_w):
            ox = col_targets[ix, kx]
            if ox < 0:
                continue
            for o in range(o_start, o_stop):
                # Sign-add: bit 1 adds the input, bit 0 subtracts it.
                if bits_by_position[ky, kx, word, o] & mask:
                    acc[oy, ox, o] += value
                else:
                    acc[oy, ox, o] += negated


@njit(**NJIT_OPTIONS)
def _float_conv2d_kernel(x, weight_by_position, scale, bias, groups, row_targets, col_targets, out):
    channels, height, width = x.shape
    kernel_h, kernel_w, _, out_channels = weight_by_position.shape
    _, out_height, out_width = out.shape
    group_in = channels // groups
    group_out = out_channels // groups
    acc = np.zeros((out_height, out_width, out_channels), dtype=np.float32)

    for c in range(channels):
        group = c // group_in
        channel_in_group = c - group * group_in
        o_start = group * group_out
        o_stop = o_start + group_out
        for iy in range(height):
            for ix in range(width):
                value = x[c, iy, ix]
                if value == 0.0:
                    continue
                for ky in range(kernel_h):
                    oy = row_targets[iy, ky]
                    if oy < 0:
                        continue
                    for kx in range(kernel_w):
                        ox = col_targets[ix, kx]
                        if ox < 0:
                            continue
                        for o in range(o_start, o_stop):
                            acc[oy, ox, o] += value * weight_by_position[ky, kx, channel_in_group, o]

    _apply_affine(acc, scale, bias, out)


@njit(**NJIT_OPTIONS)
def _apply_affine(acc, scale, bias, out):
    # acc is (OH, OW, O) and out is (O, OH, OW).
    out_height, out_width, out_channels = acc.shape
    for o in range(out_channels):
        for oy in range(out_height):
            for ox in range(out_width):
                out[o, oy, ox] = scale[o] * acc[oy, ox, o] + bias[o]
