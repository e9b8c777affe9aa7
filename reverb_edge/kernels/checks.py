"""Input checks shared by the Numba kernels and their NumPy twins in ``reverb_edge.reference``.

Both backends call the same checks, so they accept the same inputs and raise
the same ``InputError`` messages. Each check returns the arrays as C-contiguous
``float32`` (or ``uint64`` for packed weights) and the layer geometry.
"""

import numbers
from typing import NamedTuple

import numpy as np

from reverb_edge.bitpack import words_for
from reverb_edge.errors import InputError


class Conv2dGeometry(NamedTuple):
    """Geometry of one 2-D convolution or pooling layer, with sizes in elements."""

    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    dilation: tuple[int, int]
    out_height: int
    out_width: int


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def float_array(caller: str, name: str, value, ndim: int | None = None) -> np.ndarray:
    """Return ``value`` as a C-contiguous float32 array, or raise ``InputError``.

    Only floating-point input is accepted. Integer or boolean arrays are rejected
    so that a caller cannot pass raw event counts or packed bits by mistake.
    """
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise InputError(
            f"{caller}: {name} has dtype {array.dtype}, expected a floating-point array; "
            f"convert it with {name}.astype(np.float32)"
        )
    if ndim is not None and array.ndim != ndim:
        layout = _LAYOUTS.get((name, ndim), "")
        raise InputError(
            f"{caller}: {name} has shape {array.shape}, expected {ndim} axes{layout}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


# The layouts that the kernels expect, named in shape errors.
_LAYOUTS = {
    ("x", 3): " (C, H, W), one sample channels first",
    ("x", 1): " (in_features,), one sample",
    ("weight", 4): " (O, C / groups, kh, kw), PyTorch's layout",
    ("weight", 2): " (O, I), PyTorch's layout",
    ("scale", 1): " (O,), one value per output",
    ("bias", 1): " (O,), one value per output",
}


def words_array(caller: str, name: str, value, ndim: int) -> np.ndarray:
    """Return packed sign words as a C-contiguous uint64 array, or raise ``InputError``."""
    array = np.asarray(value)
    if array.dtype != np.uint64:
        raise InputError(
            f"{caller}: {name} has dtype {array.dtype}, expected uint64 words from "
            "reverb_edge.bitpack.pack_signs"
        )
    if array.ndim != ndim:
        raise InputError(f"{caller}: {name} has shape {array.shape}, expected {ndim} axes")
    return np.ascontiguousarray(array)


def positive_int(caller: str, name: str, value) -> int:
    if not is_int(value) or value < 1:
        raise InputError(f"{caller}: {name} is {value!r}, expected a positive int")
    return int(value)


def int_pair(caller: str, name: str, value, minimum: int) -> tuple[int, int]:
    """Return ``value`` as a (height, width) pair. A single int is used for both."""
    if is_int(value):
        pair = (value, value)
    elif _is_sequence(value):
        pair = tuple(value)
    else:
        pair = None
    if pair is None or len(pair) != 2 or not all(is_int(v) and v >= minimum for v in pair):
        raise InputError(
            f"{caller}: {name} is {value!r}, expected an int >= {minimum} or a pair "
            f"(height, width) of such ints"
        )
    return int(pair[0]), int(pair[1])


def padding_quad(caller: str, value) -> tuple[int, int, int, int]:
    """Return padding as (top, bottom, left, right).

    A single int pads all four sides. A pair ``(ph, pw)`` pads top and bottom by
    ``ph`` and left and right by ``pw``, like PyTorch's ``padding=(ph, pw)``.
    """
    if is_int(value):
        quad = (value,) * 4
    elif _is_sequence(value) and len(value) == 2:
        quad = (value[0], value[0], value[1], value[1])
    elif _is_sequence(value) and len(value) == 4:
        quad = tuple(value)
    else:
        quad = None
    if quad is None or not all(is_int(v) and v >= 0 for v in quad):
        raise InputError(
            f"{caller}: padding is {value!r}, expected a non-negative int, a pair (ph, pw) "
            "or a 4-tuple (top, bottom, left, right) of non-negative ints"
        )
    return tuple(int(v) for v in quad)


def matching_vector(caller: str, name: str, value, length: int, length_name: str) -> np.ndarray:
    """Return a per-output-channel float32 vector of ``length`` entries, or raise ``InputError``."""
    array = float_array(caller, name, value, ndim=1)
    if array.shape[0] != length:
        raise InputError(
            f"{caller}: {name} has {array.shape[0]} entries, expected one per output "
            f"({length_name} = {length})"
        )
    return array


def output_size(
    caller: str,
    input_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Return (OH, OW) as PyTorch computes them with ceil_mode=False, or raise ``InputError``.

    OH = (H + top + bottom - dilation_h * (kernel_h - 1) - 1) // stride_h + 1,
    and the same for the width. The result must be at least 1 on each axis.
    """
    sizes = []
    for axis, (size, k, s, pad_before, pad_after, d) in enumerate(
        zip(input_size, kernel, stride, padding[0::2], padding[1::2], dilation)
    ):
        span = d * (k - 1) + 1
        padded = size + pad_before + pad_after
        out = (padded - span) // s + 1 if padded >= span else 0
        if out < 1:
            axis_name = ("height", "width")[axis]
            raise InputError(
                f"{caller}: output {axis_name} would be {out}: the input {axis_name} {size} "
                f"plus padding {pad_before} + {pad_after} is smaller than the kernel span "
                f"{span} (kernel {k}, dilation {d}); pad the input or use a smaller "
                "kernel or dilation"
            )
        sizes.append(out)
    return sizes[0], sizes[1]


def check_pool_padding(
    caller: str, kernel: tuple[int, int], padding: tuple[int, int, int, int]
) -> None:
    """Reject padding wider than half the kernel size, as PyTorch's pooling does.

    PyTorch 2.13 avg_pool2d and max_pool2d raise for ``pad > kernel_size // 2``,
    whatever the dilation. This check applies that limit to each of the four
    sides separately, so no window lies entirely in the padding.
    """
    for side, pad in zip(("top", "bottom", "left", "right"), padding):
        axis = 0 if side in ("top", "bottom") else 1
        max_pad = kernel[axis] // 2
        if pad > max_pad:
            raise InputError(
                f"{caller}: {side} padding is {pad}, but pooling allows at most {max_pad} "
                f"for kernel size {kernel[axis]} on that axis; reduce the padding"
            )


def conv2d_geometry(
    caller: str,
    x: np.ndarray,
    out_channels: int,
    kernel: tuple[int, int],
    in_channels,
    stride,
    padding,
    dilation,
    groups,
) -> Conv2dGeometry:
    """Check the convolution parameters against ``x`` (C, H, W) and return the geometry."""
    in_channels = positive_int(caller, "in_channels", in_channels)
    groups = positive_int(caller, "groups", groups)
    stride = int_pair(caller, "stride", stride, minimum=1)
    dilation = int_pair(caller, "dilation", dilation, minimum=1)
    padding = padding_quad(caller, padding)

    if x.shape[0] != in_channels:
        raise InputError(
            f"{caller}: x has {x.shape[0]} channels (shape {x.shape}), but in_channels is "
            f"{in_channels}; pass a (C, H, W) input with C = {in_channels}"
        )
    if out_channels < 1:
        raise InputError(f"{caller}: the weight has {out_channels} output channels, expected >= 1")
    if in_channels % groups != 0 or out_channels % groups != 0:
        raise InputError(
            f"{caller}: groups is {groups}, which must divide both in_channels "
            f"({in_channels}) and out_channels ({out_channels})"
        )
    out_height, out_width = output_size(caller, x.shape[1:], kernel, stride, padding, dilation)
    return Conv2dGeometry(
        in_channels, out_channels, groups, kernel, stride, padding, dilation, out_height, out_width
    )


def check_binary_conv2d(
    caller, x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
):
    """Check the inputs of ``binary_conv2d`` and return (x, weight_bits, scale, bias, geometry)."""
    x = float_array(caller, "x", x, ndim=3)
    weight_bits = words_array(caller, "weight_bits", weight_bits, ndim=4)
    out_channels, kernel_h, kernel_w, n_words = weight_bits.shape
    if kernel_h < 1 or kernel_w < 1:
        raise InputError(
            f"{caller}: weight_bits has shape {weight_bits.shape}, so the kernel is "
            f"{kernel_h}x{kernel_w}; expected (O, kh, kw, words) with kh, kw >= 1"
        )
    geometry = conv2d_geometry(
        caller, x, out_channels, (kernel_h, kernel_w), in_channels, stride, padding, dilation, groups
    )
    group_channels = geometry.in_channels // geometry.groups
    if n_words != words_for(group_channels):
        raise InputError(
            f"{caller}: weight_bits has {n_words} word(s) per kernel position (shape "
            f"{weight_bits.shape}), but in_channels {geometry.in_channels} / groups "
            f"{geometry.groups} = {group_channels} channels take {words_for(group_channels)}; "
            "check in_channels and groups"
        )
    scale = matching_vector(caller, "scale", scale, out_channels, "out_channels")
    bias = matching_vector(caller, "bias", bias, out_channels, "out_channels")
    return x, weight_bits, scale, bias, geometry


def check_float_conv2d(caller, x, weight, scale, bias, stride, padding, dilation, groups):
    """Check the inputs of ``float_conv2d`` and return (x, weight, scale, bias, geometry)."""
    x = float_array(caller, "x", x, ndim=3)
    weight = float_array(caller, "weight", weight, ndim=4)
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    if group_channels < 1 or kernel_h < 1 or kernel_w < 1:
        raise InputError(
            f"{caller}: weight has shape {weight.shape}, expected (O, C / groups, kh, kw) "
            "with every size >= 1"
        )
    groups = positive_int(caller, "groups", groups)
    if x.shape[0] != group_channels * groups:
        raise InputError(
            f"{caller}: x has {x.shape[0]} channels (shape {x.shape}), but the weight has "
            f"{group_channels} input channels per group and groups is {groups}, so x needs "
            f"{group_channels * groups}; check groups or the input"
        )
    geometry = conv2d_geometry(
        caller,
        x,
        out_channels,
        (kernel_h, kernel_w),
        group_channels * groups,
        stride,
        padding,
        dilation,
        groups,
    )
    scale = matching_vector(caller, "scale", scale, out_channels, "out_channels")
    bias = matching_vector(caller, "bias", bias, out_channels, "out_channels")
    return x, weight, scale, bias, geometry


def check_binary_linear(caller, x, weight_bits, scale, bias, in_features):
    """Check the inputs of ``binary_linear`` and return them as contiguous arrays."""
    in_features = positive_int(caller, "in_features", in_features)
    x = float_array(caller, "x", x, ndim=1)
    if x.shape[0] != in_features:
        raise InputError(
            f"{caller}: x has {x.shape[0]} features, but in_features is {in_features}; "
            "flatten the input or fix in_features"
        )
    weight_bits = words_array(caller, "weight_bits", weight_bits, ndim=2)
    out_features, n_words = weight_bits.shape
    if out_features < 1:
        raise InputError(f"{caller}: weight_bits has shape {weight_bits.shape}, expected >= 1 row")
    if n_words != words_for(in_features):
        raise InputError(
            f"{caller}: weight_bits has {n_words} word(s) per row (shape {weight_bits.shape}), "
            f"but in_features {in_features} takes {words_for(in_features)}; check in_features"
        )
    scale = matching_vector(caller, "scale", scale, out_features, "out_features")
    bias = matching_vector(caller, "bias", bias, out_features, "out_features")
    return x, weight_bits, scale, bias


def check_float_linear(caller, x, weight, scale, bias):
    """Check the inputs of ``float_linear`` and return them as contiguous float32 arrays."""
    x = float_array(caller, "x", x, ndim=1)
    weight = float_array(caller, "weight", weight, ndim=2)
    out_features, in_features = weight.shape
    if out_features < 1:
        raise InputError(f"{caller}: weight has shape {weight.shape}, expected >= 1 row")
    if x.shape[0] != in_features:
        raise InputError(
            f"{caller}: x has {x.shape[0]} features, but weight has shape {weight.shape} "
            f"and expects {in_features}"
        )
    scale = matching_vector(caller, "scale", scale, out_features, "out_features")
    bias = matching_vector(caller, "bias", bias, out_features, "out_features")
    return x, weight, scale, bias


def check_pool2d(caller, x, kernel, stride, padding, dilation) -> tuple[np.ndarray, Conv2dGeometry]:
    """Check the inputs of a pooling layer and return (x, geometry)."""
    x = float_array(caller, "x", x, ndim=3)
    kernel = int_pair(caller, "kernel", kernel, minimum=1)
    stride = int_pair(caller, "stride", stride, minimum=1)
    dilation = int_pair(caller, "dilation", dilation, minimum=1)
    padding = padding_quad(caller, padding)
    check_pool_padding(caller, kernel, padding)
    out_height, out_width = output_size(caller, x.shape[1:], kernel, stride, padding, dilation)
    channels = x.shape[0]
    geometry = Conv2dGeometry(
        channels, channels, channels, kernel, stride, padding, dilation, out_height, out_width
    )
    return x, geometry


def output_array(caller: str, name: str, out, shape: tuple[int, ...]) -> np.ndarray:
    """Check a caller-supplied output buffer: float32, C-contiguous, writeable, of ``shape``."""
    if not isinstance(out, np.ndarray):
        raise InputError(
            f"{caller}: {name} is a {type(out).__name__}, expected a numpy.ndarray or None"
        )
    if out.dtype != np.float32 or out.shape != shape:
        raise InputError(
            f"{caller}: {name} has dtype {out.dtype} and shape {out.shape}, expected float32 "
            f"and shape {shape}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError(
            f"{caller}: {name} must be a writeable C-contiguous array; allocate it with "
            f"np.empty({shape}, dtype=np.float32)"
        )
    return out


def check_lif_step(caller, current, membrane, tau, threshold, spikes_out):
    """Check the inputs of ``lif_step`` and return (current, membrane, tau, threshold, spikes_out).

    ``tau`` and ``threshold`` come back as ``np.float32``. ``spikes_out`` is
    None when the caller passed None.
    """
    if not isinstance(membrane, np.ndarray) or membrane.dtype != np.float32:
        dtype = getattr(membrane, "dtype", type(membrane).__name__)
        raise InputError(
            f"{caller}: membrane has dtype {dtype}, expected a float32 numpy array, because "
            "lif_step updates it in place; allocate it with np.zeros(shape, dtype=np.float32)"
        )
    if not membrane.flags.c_contiguous or not membrane.flags.writeable:
        raise InputError(
            f"{caller}: membrane must be a writeable C-contiguous array, because lif_step "
            "updates it in place; pass np.ascontiguousarray(membrane) and keep that array"
        )
    current = float_array(caller, "current", current)
    if current.shape != membrane.shape:
        raise InputError(
            f"{caller}: current has shape {current.shape} but membrane has shape "
            f"{membrane.shape}; they must match"
        )
    if spikes_out is not None:
        spikes_out = output_array(caller, "spikes_out", spikes_out, membrane.shape)
        if np.may_share_memory(spikes_out, membrane):
            raise InputError(
                f"{caller}: spikes_out shares memory with membrane; pass a separate buffer"
            )

    tau = _finite_scalar(caller, "tau", tau)
    if not 0.0 <= tau <= 1.0:
        raise InputError(
            f"{caller}: tau is {tau}, expected a decay factor in [0, 1], for example 0.25"
        )
    threshold = _finite_scalar(caller, "threshold", threshold)
    return current, membrane, np.float32(tau), np.float32(threshold), spikes_out


def check_same_shape(caller, a, b, out):
    """Check the inputs of an elementwise binary op and return (a, b, out)."""
    a = float_array(caller, "a", a)
    b = float_array(caller, "b", b)
    if a.shape != b.shape:
        raise InputError(
            f"{caller}: a has shape {a.shape} but b has shape {b.shape}; they must match "
            "(no broadcasting)"
        )
    if out is not None:
        out = output_array(caller, "out", out, a.shape)
    return a, b, out


def _finite_scalar(caller: str, name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{caller}: {name} is {value!r}, expected a real number")
    value = float(value)
    if not np.isfinite(value):
        raise InputError(f"{caller}: {name} is {value}, expected a finite number")
    return value


def _is_sequence(value) -> bool:
    return isinstance(value, (tuple, list, np.ndarray))
