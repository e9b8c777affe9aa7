"""Event-driven first layer: a binary convolution fed directly with DVS events.

Binning events into a count frame and convolving it gives, per output element::

    z[o, y, x] = Σ over events e reaching (y, x) of  s[o, c_e, ky, kx]

where c_e is the event's input channel (its polarity with two input channels,
0 with one), because every event adds 1 to one frame pixel. This kernel skips
the frame: each event scatters its ±1 kernel column straight into the
accumulator, so the work is proportional to the number of events. The result
equals ``binary_conv2d`` on the unclipped count frame; a frame clipped to 0/1
differs wherever a pixel had more than one event.

The kernel uses the weight rows of ``reverb_edge.kernels.conv.PreparedConv2d``
(±1.0, channels-last, zero-padded to a multiple of 16) and adds a whole row,
16 output channels at a time, for each (event, kernel offset). Every partial
sum is an integer below 2**24, so it is exact in float32, and the result
equals the channels-last convolution of the count frame bit for bit.
"""

import numpy as np
from numba import njit

from reverb_edge.bitpack import unpack_signs
from reverb_edge.kernels.conv import PreparedConv2d
from reverb_edge.kernels.simd import LANES, vaffine, vload, vmuladd, vstore

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
    signs = unpack_signs(weight_bits, input_shape[0] // geometry.groups).transpose(0, 3, 1, 2)
    layer = PreparedConv2d(signs.astype(np.float32), scale, bias, geometry, input_shape[1], input_shape[2])
    out = np.empty_like(layer.out)
    scatter_events(layer, channel, y, x, np.empty(events_accumulator_shape(layer), np.float32), out)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def events_accumulator_shape(layer: PreparedConv2d) -> tuple[int, int, int]:
    """Return the shape of the scratch accumulator that :func:`scatter_events` needs for ``layer``."""
    geometry = layer.geometry
    return geometry.out_height, geometry.out_width, layer.rows.shape[0] * layer.rows.shape[-1]


def scatter_events(layer: PreparedConv2d, channel: np.ndarray, y: np.ndarray, x: np.ndarray, accumulator: np.ndarray,
                   out: np.ndarray) -> np.ndarray:
    """Compute ``layer`` on checked events (int64 channel, y, x) into ``out`` (OH, OW, O), channels-last."""
    geometry = layer.geometry
    _scatter_events_kernel(
        channel, y, x, layer.rows, layer.scale, layer.bias, geometry.stride[0], geometry.stride[1],
        geometry.padding[0], geometry.padding[2], geometry.dilation[0], geometry.dilation[1], accumulator, out,
    )
    return out


@njit(**NJIT_OPTIONS)
def _scatter_events_kernel(channel, ys, xs, rows, scale, bias, stride_h, stride_w, top, left, dilation_h, dilation_w,
                           accumulator, out):
    groups, kernel_h, kernel_w, group_in, padded = rows.shape
    out_height, out_width, out_channels = out.shape
    group_out = out_channels // groups
    flat_acc = accumulator.reshape(-1)
    flat_rows = rows.reshape(-1)
    flat_out = out.reshape(-1)
    flat_scale = scale.reshape(-1)
    flat_bias = bias.reshape(-1)
    flat_acc[:] = 0.0
    plus_one = np.float32(1.0)

    for e in range(channel.shape[0]):
        group = channel[e] // group_in
        channel_in_group = channel[e] - group * group_in
        for ky in range(kernel_h):
            # Input row y meets kernel row ky at output row oy when oy * stride + ky * dilation - top == y.
            shifted = ys[e] + top - ky * dilation_h
            if shifted < 0 or shifted % stride_h != 0 or shifted // stride_h >= out_height:
                continue
            oy = shifted // stride_h
            for kx in range(kernel_w):
                shifted = xs[e] + left - kx * dilation_w
                if shifted < 0 or shifted % stride_w != 0 or shifted // stride_w >= out_width:
                    continue
                ox = shifted // stride_w
                at = ((oy * out_width + ox) * groups + group) * padded
                row = (((group * kernel_h + ky) * kernel_w + kx) * group_in + channel_in_group) * padded
                for lane in range(0, padded, LANES):
                    # Each event adds its ±1.0 row once: multiplying by 1.0 is exact.
                    vstore(flat_acc, at + lane, vmuladd(vload(flat_acc, at + lane), vload(flat_rows, row + lane), plus_one))

    whole = group_out % LANES == 0
    for pixel in range(out_height * out_width):
        for group in range(groups):
            source = (pixel * groups + group) * padded
            target = pixel * out_channels + group * group_out
            constants = group * padded
            if whole:
                for lane in range(0, group_out, LANES):
                    z = vload(flat_acc, source + lane)
                    vstore(flat_out, target + lane, vaffine(z, vload(flat_scale, constants + lane), vload(flat_bias, constants + lane)))
            else:
                for j in range(group_out):
                    flat_out[target + j] = flat_scale[constants + j] * flat_acc[source + j] + flat_bias[constants + j]
