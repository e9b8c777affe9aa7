"""Event-driven first layer: a binary convolution fed directly with DVS events.

Binning events into a count frame and convolving it gives, per output element::

    z[o, y, x] = Σ over events e reaching (y, x) of  s[o, c_e, ky, kx]

where c_e is the event's input channel (its polarity with two input channels,
0 with one), because every event adds 1 to one frame pixel. This kernel skips
the frame: each event scatters its ±1 kernel column straight into the
accumulator, so the work is proportional to the number of events. The result
equals ``binary_conv2d`` on the unclipped count frame; a frame clipped to 0/1
differs wherever a pixel had more than one event.
"""

import numpy as np
from numba import njit

from reverb_edge.errors import InputError
from reverb_edge.kernels.checks import check_binary_conv2d
from reverb_edge.kernels.config import NJIT_OPTIONS


def event_coordinates(caller: str, events, input_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (channel, y, x) int64 arrays for events, checked against the (C, H, W) input shape."""
    names = getattr(getattr(events, "dtype", None), "names", None) or ()
    if not {"x", "y", "p"} <= set(names):
        raise InputError(f"{caller}: events must be a structured array with fields x, y, p; got {type(events).__name__}")
    channels, height, width = input_shape
    if channels not in (1, 2):
        raise InputError(f"{caller}: event input needs 1 (summed) or 2 (polarity) channels, got {channels}")
    x = np.asarray(events["x"], dtype=np.int64)
    y = np.asarray(events["y"], dtype=np.int64)
    p = np.asarray(events["p"], dtype=np.int64)
    if len(x) and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
        raise InputError(
            f"{caller}: event coordinates x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}] fall outside "
            f"the input ({height}, {width}); crop or downsample the events first"
        )
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise InputError(f"{caller}: polarities must be 0 or 1, got values in [{p.min()}, {p.max()}]")
    channel = p if channels == 2 else np.zeros_like(p)
    return channel, y, x


def binary_conv2d_events(
    events, input_shape, weight_bits, scale, bias, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1
) -> np.ndarray:
    """Convolve a set of events as if binned into a count frame of ``input_shape`` (C, H, W).

    Arguments are those of :func:`reverb_edge.kernels.binary_conv2d`, with
    ``events`` (fields x, y, p) in place of the frame. Returns float32 (O, OH, OW).
    """
    channel, y, x = event_coordinates("binary_conv2d_events", events, input_shape)
    _, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d_events", np.zeros(input_shape, np.float32), weight_bits, scale, bias,
        input_shape[0], stride, padding, dilation, groups,
    )
    bits_by_position = np.ascontiguousarray(weight_bits.transpose(1, 2, 3, 0))
    row_targets, col_targets = _target_tables(input_shape, geometry)
    out = np.empty((geometry.out_channels, geometry.out_height, geometry.out_width), np.float32)
    _binary_conv2d_events_kernel(
        channel, y, x, input_shape[0], bits_by_position, scale, bias, geometry.groups, row_targets, col_targets, out
    )
    return out


@njit(**NJIT_OPTIONS)
def _binary_conv2d_events_kernel(channel, ys, xs, channels, bits_by_position, scale, bias, groups, row_targets, col_targets, out):
    _, _, _, out_channels = bits_by_position.shape
    _, out_height, out_width = out.shape
    group_in = channels // groups
    group_out = out_channels // groups
    acc = np.zeros((out_height, out_width, out_channels), dtype=np.float32)

    for e in range(channel.shape[0]):
        c = channel[e]
        group = c // group_in
        channel_in_group = c - group * group_in
        word = channel_in_group // 64
        mask = np.uint64(1) << np.uint64(channel_in_group % 64)
        o_start = group * group_out
        # Each event adds +1 or -1 to every output it reaches.
        _scatter_signed(
            acc, bits_by_position, word, mask, o_start, o_start + group_out, row_targets, col_targets,
            ys[e], xs[e], np.float32(1.0),
        )

    _apply_affine(acc, scale, bias, out)


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
def _apply_affine(acc, scale, bias, out):
    # acc is (OH, OW, O) and out is (O, OH, OW).
    out_height, out_width, out_channels = acc.shape
    for o in range(out_channels):
        for oy in range(out_height):
            for ox in range(out_width):
                out[o, oy, ox] = scale[o] * acc[oy, ox, o] + bias[o]
