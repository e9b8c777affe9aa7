"""Binary convolution of binary inputs with population counts.

When every input is 0 or 1 (an event frame clipped to one event per pixel,
or the spikes of a vanilla SNN layer) and every weight is ±1, one output sum
needs no float arithmetic at all. With the input channels of a pixel packed
into words x and a weight row's signs into words b (bit 1 = +1)::

    z = sum over kernel offsets of  2 * popcount(x & b) - popcount(x)

because each set input bit adds +1 where the weight bit is 1 and -1 where it
is 0. Padding bits are 0 in x, so they never count. The sum is an exact
integer, so ``scale * z + bias`` in float32 equals the float kernels' result
on the same input bit for bit (their sums of ±1.0 are exact too, below 2**24).

Numba has no popcount in nopython mode, so ``popcount`` emits LLVM's
``llvm.ctpop.i64`` intrinsic, one instruction (POPCNT, or CNT on ARM).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

from reverb_edge.bitpack import words_for
from reverb_edge.errors import InputError
from reverb_edge.kernels.checks import check_binary_conv2d
from reverb_edge.kernels.config import NJIT_OPTIONS


@intrinsic
def _ctpop(typingctx, word):
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        function = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(function, args)

    return types.uint64(types.uint64), codegen


@intrinsic
def _cttz(typingctx, word):
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), [ir.IntType(64), ir.IntType(1)]), "llvm.cttz.i64"
        )
        # The second operand makes a zero word undefined, so callers test for zero first.
        return builder.call(function, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.uint64(types.uint64), codegen


def _py_ctpop(word):
    return np.uint64(int(word).bit_count())


def _py_cttz(word):
    word = int(word)
    return np.uint64((word & -word).bit_length() - 1)


popcount = _py_ctpop if config.DISABLE_JIT else _ctpop
# The index of the lowest set bit of a non-zero uint64 word (TZCNT, or RBIT and CLZ on ARM).
trailing_zeros = _py_cttz if config.DISABLE_JIT else _cttz


def binary_conv2d_popcount(
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
    """Convolve a binary input (every value 0.0 or 1.0) with packed ±1 weights, by popcount.

    The arguments, output and errors are those of
    :func:`reverb_edge.kernels.binary_conv2d`; ``x`` must contain only 0 and
    1, or ``InputError`` is raised. The result equals ``binary_conv2d`` on
    the same input bit for bit.
    """
    x, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d_popcount", x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
    )
    if _binary_ones(x.reshape(-1)) < 0:
        values = np.unique(x)
        raise InputError(
            f"binary_conv2d_popcount: x must contain only 0.0 and 1.0, got values such as "
            f"{values[(values != 0) & (values != 1)][:3].tolist()}; use binary_conv2d for real-valued inputs"
        )
    layer = PopcountConv2d(weight_bits, scale, bias, geometry, x.shape[1], x.shape[2])
    out = layer(np.ascontiguousarray(x.transpose(1, 2, 0)))
    return np.ascontiguousarray(out.transpose(2, 0, 1))


# The engine uses popcounts for a binary layer when its input is binary and has at least this
# many channels per group. With 2 input channels the float kernel was faster: 46 against 75 us
# on a 34 x 34 frame. With 35 to 256 channels, popcounts were 1.6 to 8 times faster.
POPCOUNT_FROM = 16

# ... and when at least this fraction of the input is 1. The popcount kernel's cost does not
# depend on the input, while the float kernel's follows the non-zero inputs. On the MNIST model's
# second convolution (32 channels, 28 x 28) the float kernel was faster below about 12 % ones:
# 25 against 63 us at 2 %. An all-zero input took 63 us with popcounts against 5.
POPCOUNT_DENSITY = 0.15


class PopcountConv2d:
    """A binary convolution prepared once for binary channels-last inputs (H, W, C).

    Calling it packs the input's channels into words and returns the output
    (OH, OW, O), a buffer that the next call overwrites. After a call,
    ``events`` is the number of non-zero inputs.
    """

    def __init__(self, weight_bits: np.ndarray, scale: np.ndarray, bias: np.ndarray, geometry, in_height: int,
                 in_width: int) -> None:
        self.geometry = geometry
        # (O, kh, kw, words) -> (kh, kw, words, O): the inner loop runs over output channels.
        self.bits_by_position = np.ascontiguousarray(np.asarray(weight_bits, np.uint64).transpose(1, 2, 3, 0))
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        group_in = geometry.in_channels // geometry.groups
        self.packed = np.empty((in_height, in_width, geometry.groups, words_for(group_in)), np.uint64)
        self.out = np.empty((geometry.out_height, geometry.out_width, geometry.out_channels), np.float32)
        self.sums = np.empty(geometry.out_channels // geometry.groups, np.int64)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Compute the layer on channels-last ``x`` into ``out`` (by default ``self.out``) and return it."""
        out = self.out if out is None else out
        geometry = self.geometry
        self.events = int(_pack_binary_pixels(x, self.packed))
        _popcount_conv2d_kernel(
            self.packed, self.bits_by_position, self.scale, self.bias, geometry.stride[0], geometry.stride[1],
            geometry.padding[0], geometry.padding[2], geometry.dilation[0], geometry.dilation[1], self.sums, out,
        )
        return out


@njit(**NJIT_OPTIONS)
def _binary_ones(values):
    """Return how many values are 1.0 if every value is 0.0 or 1.0, else -1 (stopping at the first such value)."""
    ones = 0
    for value in values:
        if value == 1.0:
            ones += 1
        elif value != 0.0:
            return -1
    return ones


@njit(**NJIT_OPTIONS)
def _pack_binary_pixels(x, packed):
    """Set bit (c % 64) of word c // 64 of packed[iy, ix, g] where channel c of group g is non-zero.

    Return the number of bits set.
    """
    height, width, channels = x.shape
    groups, words = packed.shape[2], packed.shape[3]
    group_in = channels // groups
    total = 0
    for iy in range(height):
        for ix in range(width):
            for group in range(groups):
                for word in range(words):
                    bits = np.uint64(0)
                    for bit in range(min(64, group_in - word * 64)):
                        if x[iy, ix, group * group_in + word * 64 + bit] != 0.0:
                            bits |= np.uint64(1) << np.uint64(bit)
                            total += 1
                    packed[iy, ix, group, word] = bits
    return total


@njit(**NJIT_OPTIONS)
def _popcount_conv2d_kernel(packed, bits_by_position, scale, bias, stride_h, stride_w, top, left, dilation_h,
                            dilation_w, sums, out):
    """Sum 2 * popcount(x & b) - popcount(x) over each receptive field, one word of inputs at a time.

    ``bits_by_position`` is (kh, kw, words, O), so the loop over output
    channels reads consecutive words and LLVM can vectorise it. A word of
    inputs that is all zeros is skipped.
    """
    height, width, groups, words = packed.shape
    kernel_h, kernel_w, _, out_channels = bits_by_position.shape
    out_height, out_width, _ = out.shape
    group_out = out_channels // groups
    flat_bits = bits_by_position.reshape(-1)
    flat_out = out.reshape(-1)
    for oy in range(out_height):
        for ox in range(out_width):
            for group in range(groups):
                sums[:] = 0
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky * dilation_h - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx * dilation_w - left
                        if ix < 0 or ix >= width:
                            continue
                        for word in range(words):
                            inputs = packed[iy, ix, group, word]
                            if inputs == 0:
                                continue
                            count = np.int64(popcount(inputs))
                            row = np.uint64(((ky * kernel_w + kx) * words + word) * out_channels + group * group_out)
                            for j in range(np.uint64(group_out)):
                                sums[j] += 2 * np.int64(popcount(inputs & flat_bits[row + j])) - count
                channel = np.uint64(group * group_out)
                first = np.uint64((oy * out_width + ox) * out_channels) + channel
                for j in range(np.uint64(group_out)):
                    flat_out[first + j] = scale[channel + j] * np.float32(sums[j]) + bias[channel + j]
