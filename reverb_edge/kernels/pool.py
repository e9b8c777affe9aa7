"""2-D average and max pooling with PyTorch's default semantics (ceil_mode=False).

The kernels work channels-last (H, W, C), the engine's layout, so the inner
loop runs over the contiguous channels of one pixel. The public functions
take and return channels-first arrays (C, H, W) and transpose around them.
"""

import numpy as np
from numba import njit

from reverb_edge.kernels.checks import check_pool2d
from reverb_edge.kernels.config import NJIT_OPTIONS
from reverb_edge.kernels.simd import LANES, vadd, vdivide, vfill, vload, vmax, vstore, vzero


def avg_pool2d(x: np.ndarray, kernel, stride, padding=(0, 0, 0, 0)) -> np.ndarray:
    """Average ``x`` (C, H, W) over kh x kw windows, like ``torch.nn.AvgPool2d``.

    Zero padding counts in the average, so the divisor is always kh * kw
    (PyTorch's count_include_pad=True). The window sum is accumulated in
    float32, row by row, then divided by kh * kw.

    Args:
        x: input (C, H, W), any float dtype.
        kernel, stride: int or (height, width) pair.
        padding: int, (ph, pw) or (top, bottom, left, right). Each side may be
            at most half the kernel size, as PyTorch requires.

    Returns:
        float32 array (C, OH, OW) with OH = (H + top + bottom - kh) // sh + 1.

    Raises:
        InputError: on a wrong dtype or shape, a bad parameter, or OH or OW < 1.
    """
    x, geometry = check_pool2d("avg_pool2d", x, kernel, stride, padding, (1, 1))
    out = np.empty((geometry.out_height, geometry.out_width, x.shape[0]), dtype=np.float32)
    avg_pool2d_hwc(np.ascontiguousarray(x.transpose(1, 2, 0)), geometry, out)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def max_pool2d(
    x: np.ndarray, kernel, stride, padding=(0, 0, 0, 0), dilation=(1, 1)
) -> np.ndarray:
    """Take the maximum of ``x`` (C, H, W) over kh x kw windows, like ``torch.nn.MaxPool2d``.

    Padded positions are -inf, so they never win. A NaN in a window makes that
    output NaN, as in PyTorch. The arguments, output and errors are those of
    ``avg_pool2d``, plus ``dilation`` (int or pair). The padding limit stays
    half the undilated kernel size, as in PyTorch.
    """
    x, geometry = check_pool2d("max_pool2d", x, kernel, stride, padding, dilation)
    out = np.empty((geometry.out_height, geometry.out_width, x.shape[0]), dtype=np.float32)
    max_pool2d_hwc(np.ascontiguousarray(x.transpose(1, 2, 0)), geometry, out)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def avg_pool2d_hwc(x: np.ndarray, geometry, out: np.ndarray) -> np.ndarray:
    """Average pooling of a checked channels-last ``x`` (H, W, C) into ``out`` (OH, OW, C)."""
    (kernel_h, kernel_w), (stride_h, stride_w) = geometry.kernel, geometry.stride
    top, _, left, _ = geometry.padding
    _avg_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, out)
    return out


def max_pool2d_hwc(x: np.ndarray, geometry, out: np.ndarray) -> np.ndarray:
    """Max pooling of a checked channels-last ``x`` (H, W, C) into ``out`` (OH, OW, C)."""
    (kernel_h, kernel_w), (stride_h, stride_w) = geometry.kernel, geometry.stride
    top, _, left, _ = geometry.padding
    dilation_h, dilation_w = geometry.dilation
    _max_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, out)
    return out


def avg_pool2d_hwc_pair(x: np.ndarray, x_next: np.ndarray, geometry, out: np.ndarray,
                        out_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`avg_pool2d_hwc` on two inputs (two timesteps) in one compiled call."""
    (kernel_h, kernel_w), (stride_h, stride_w) = geometry.kernel, geometry.stride
    top, _, left, _ = geometry.padding
    _avg_pool2d_pair_kernel(x, x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, out, out_next)
    return out, out_next


def max_pool2d_hwc_pair(x: np.ndarray, x_next: np.ndarray, geometry, out: np.ndarray,
                        out_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run :func:`max_pool2d_hwc` on two inputs (two timesteps) in one compiled call."""
    (kernel_h, kernel_w), (stride_h, stride_w) = geometry.kernel, geometry.stride
    top, _, left, _ = geometry.padding
    dilation_h, dilation_w = geometry.dilation
    _max_pool2d_pair_kernel(x, x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w,
                            out, out_next)
    return out, out_next


@njit(**NJIT_OPTIONS)
def _avg_pool2d_pair_kernel(x, x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, out, out_next):
    _avg_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, out)
    _avg_pool2d_kernel(x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, out_next)


@njit(**NJIT_OPTIONS)
def _max_pool2d_pair_kernel(x, x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w,
                            out, out_next):
    _max_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, out)
    _max_pool2d_kernel(x_next, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, out_next)


@njit(**NJIT_OPTIONS)
def _avg_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, out):
    height, width, channels = x.shape
    out_height, out_width, _ = out.shape
    flat_x = x.reshape(-1)
    flat_out = out.reshape(-1)
    divisor = np.float32(kernel_h * kernel_w)
    vector_channels = channels - channels % LANES
    for oy in range(out_height):
        for ox in range(out_width):
            target = (oy * out_width + ox) * channels
            for first in range(0, vector_channels, LANES):
                total = vzero()
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx - left
                        if ix < 0 or ix >= width:
                            continue
                        total = vadd(total, vload(flat_x, (iy * width + ix) * channels + first))
                vstore(flat_out, target + first, vdivide(total, divisor))
            for c in range(vector_channels, channels):
                total = np.float32(0.0)
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx - left
                        if ix < 0 or ix >= width:
                            continue
                        total += flat_x[(iy * width + ix) * channels + c]
                flat_out[target + c] = total / divisor


@njit(**NJIT_OPTIONS)
def _max_pool2d_kernel(x, kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, out):
    # 16 channels at a time in a vector register. A NaN replaces the maximum and then stays, because
    # no later "value > NaN" is true; PyTorch's CPU kernel does the same.
    height, width, channels = x.shape
    out_height, out_width, _ = out.shape
    flat_x = x.reshape(-1)
    flat_out = out.reshape(-1)
    vector_channels = channels - channels % LANES
    for oy in range(out_height):
        for ox in range(out_width):
            target = (oy * out_width + ox) * channels
            for first in range(0, vector_channels, LANES):
                best = vfill(-np.inf)
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky * dilation_h - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx * dilation_w - left
                        if ix < 0 or ix >= width:
                            continue
                        best = vmax(best, vload(flat_x, (iy * width + ix) * channels + first))
                vstore(flat_out, target + first, best)
            for c in range(vector_channels, channels):
                best_value = np.float32(-np.inf)
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky * dilation_h - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx * dilation_w - left
                        if ix < 0 or ix >= width:
                            continue
                        value = flat_x[(iy * width + ix) * channels + c]
                        if value > best_value or value != value:
                            best_value = value
                flat_out[target + c] = best_value


@njit(**NJIT_OPTIONS)
def _max_pool_window_row(flat_x, first_row, width, channels, flat_out, out_row, out_width, kernel_h, kernel_w,
                         channel_first, valid):
    """Pool one row of non-overlapping kh x kw windows (stride = kernel, no padding) over some channels.

    ``flat_x`` contains rows of ``width`` pixels of ``channels`` channels;
    the windows cover rows [first_row, first_row + kernel_h). Output pixel
    ox of row ``out_row`` receives the maximum over its window for channels
    [channel_first, channel_first + valid), in the order and with the NaN
    rule of :func:`_max_pool2d_kernel`, so it equals that kernel's output
    there. This lets a convolution pool its output rows as it finishes them
    (see ``_conv2d_pairs``).
    """
    whole = valid - valid % LANES
    for ox in range(out_width):
        target = (out_row * out_width + ox) * channels + channel_first
        for first in range(0, whole, LANES):
            best = vfill(-np.inf)
            for ky in range(kernel_h):
                for kx in range(kernel_w):
                    at = ((first_row + ky) * width + ox * kernel_w + kx) * channels + channel_first + first
                    best = vmax(best, vload(flat_x, at))
            vstore(flat_out, target + first, best)
        for c in range(whole, valid):
            best_value = np.float32(-np.inf)
            for ky in range(kernel_h):
                for kx in range(kernel_w):
                    value = flat_x[((first_row + ky) * width + ox * kernel_w + kx) * channels + channel_first + c]
                    if value > best_value or value != value:
                        best_value = value
            flat_out[target + c] = best_value
