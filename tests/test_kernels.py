"""Tests of the Numba kernels against their NumPy twins and against independent oracles.

Three implementations are compared:

* ``reverb_edge.kernels``: event-driven scatter in float32 (the engine).
* ``reverb_edge.reference``: gather one kernel offset at a time with NumPy.
* the oracles below: float64 brute force straight from the formulas, and
  PyTorch where it is installed.

Float tolerances come from ``sum_tolerance``, because two float32 evaluations
of one sum differ only by rounding in their summation order.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge import kernels, reference
from reverb_edge.bitpack import pack_signs, words_for
from reverb_edge.errors import InputError

BACKENDS = [pytest.param(kernels, id="numba"), pytest.param(reference, id="reference")]
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 2**-23, twice the unit roundoff u


# ---------------------------------------------------------------------------
# Helpers and oracles
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    channels: int
    out_channels: int
    groups: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def group_channels(self) -> int:
        return self.channels // self.groups

    @property
    def fan_in(self) -> int:
        return self.group_channels * self.kernel[0] * self.kernel[1]

    def options(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }


CONV_CASES = [
    ConvCase(1, 4, 1, 9, 9, (3, 3)),
    ConvCase(3, 8, 1, 8, 7, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),
    ConvCase(33, 8, 1, 6, 6, (5, 3), padding=(2, 2, 1, 1)),  # "same" for an odd kernel
    ConvCase(48, 6, 3, 7, 5, (3, 3), stride=(2, 1), padding=(0, 1, 1, 0), dilation=(2, 1)),
    ConvCase(65, 5, 1, 5, 6, (2, 2), padding=(0, 1, 0, 1)),  # "same" for an even kernel
    ConvCase(64, 4, 1, 4, 4, (3, 3), padding=(1, 1, 1, 1)),
    ConvCase(33, 33, 33, 8, 8, (3, 3), padding=(1, 1, 1, 1)),  # depthwise
    ConvCase(33, 66, 33, 5, 5, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),  # depthwise x2
    ConvCase(3, 6, 3, 6, 6, (1, 1), stride=(2, 2)),
    ConvCase(3, 4, 1, 3, 3, (3, 3)),  # OH = OW = 1
    ConvCase(2, 3, 1, 4, 9, (2, 2), stride=(3, 2)),  # OH = 1 through the stride
    ConvCase(1, 1, 1, 1, 1, (1, 1)),
    ConvCase(5, 4, 1, 7, 6, (5, 3), dilation=(2, 2), padding=(4, 4, 2, 2)),  # "same", dilated
    ConvCase(6, 4, 2, 6, 8, (2, 2), dilation=(2, 2), padding=(1, 0, 0, 1)),
]
DENSITIES = [pytest.param(0.1, id="sparse"), pytest.param(1.0, id="dense")]


def case_id(case: ConvCase) -> str:
    return (
        f"c{case.channels}-o{case.out_channels}-g{case.groups}-{case.height}x{case.width}"
        f"-k{case.kernel[0]}x{case.kernel[1]}-s{case.stride[0]}{case.stride[1]}"
        f"-p{''.join(map(str, case.padding))}-d{case.dilation[0]}{case.dilation[1]}"
    )


def spike_like(rng: np.random.Generator, shape, density: float) -> np.ndarray:
    """Return float32 values of both signs where only about ``density`` of them are non-zero."""
    values = rng.standard_normal(shape).astype(np.float32)
    values[rng.random(shape) >= density] = 0.0
    return values


def fitting_case(groups, group_channels, group_out, kernel, stride, dilation, padding, extra) -> ConvCase:
    """Return a case whose input fits the dilated kernel after padding, plus ``extra`` (rows, columns)."""
    span = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in (0, 1)]
    height = max(1, span[0] - padding[0] - padding[1]) + extra[0]
    width = max(1, span[1] - padding[2] - padding[3]) + extra[1]
    return ConvCase(group_channels * groups, group_out * groups, groups, height, width, kernel, stride, padding, dilation)


def conv_inputs(rng: np.random.Generator, case: ConvCase, density: float):
    """Return (x, float weight, scale, bias) for a case; about 5 % of the weights are exactly 0."""
    x = spike_like(rng, (case.channels, case.height, case.width), density)
    weight_shape = (case.out_channels, case.group_channels, *case.kernel)
    weight = spike_like(rng, weight_shape, 0.95)
    scale = rng.uniform(-2.0, 2.0, case.out_channels).astype(np.float32)
    bias = rng.standard_normal(case.out_channels).astype(np.float32)
    return x, weight, scale, bias


def sign_weights(weight: np.ndarray) -> np.ndarray:
    return np.where(weight >= 0, 1.0, -1.0).astype(np.float32)


def pack_conv_weight(weight: np.ndarray) -> np.ndarray:
    """Pack (O, Cg, kh, kw) weights into the kernels' layout (O, kh, kw, words)."""
    return pack_signs(weight.transpose(0, 2, 3, 1))


def oracle_conv2d(x, weight, scale, bias, stride, padding, dilation, groups):
    """Compute the convolution in float64, one output element at a time, from the formula."""
    x = x.astype(np.float64)
    weight = weight.astype(np.float64)
    channels, height, width = x.shape
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    top, bottom, left, right = padding
    out_height = (height + top + bottom - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_width = (width + left + right - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    group_out = out_channels // groups

    out = np.empty((out_channels, out_height, out_width))
    for o in range(out_channels):
        first = (o // group_out) * group_channels
        for y in range(out_height):
            for x_out in range(out_width):
                total = 0.0
                for ky in range(kernel_h):
                    iy = y * stride[0] + ky * dilation[0] - top
                    if not 0 <= iy < height:
                        continue
                    for kx in range(kernel_w):
                        ix = x_out * stride[1] + kx * dilation[1] - left
                        if not 0 <= ix < width:
                            continue
                        total += weight[o, :, ky, kx] @ x[first : first + group_channels, iy, ix]
                out[o, y, x_out] = float(scale[o]) * total + float(bias[o])
    return out


def sum_tolerance(magnitude: np.ndarray, n_terms: int) -> np.ndarray:
    """Return the largest expected |a - b| between two float32 evaluations of the same sums.

    A float32 sum of n terms, in any order, is within (n - 1) * u * sum|term| of
    the exact sum (u = FLOAT32_EPS / 2). Rounding each product, the scale
    multiply and the bias add cost about 3 u more. Two such results differ by at
    most (n + 2) * FLOAT32_EPS * magnitude, where magnitude is
    |scale| * sum|term| + |bias|. The bound is loose for large n, but a wrong
    sign or a missed input changes a result by a whole input value.
    """
    return (n_terms + 2) * FLOAT32_EPS * magnitude


def assert_within(actual, expected, tolerance):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    excess = np.abs(actual - expected) - tolerance
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else None
    assert excess.size == 0 or excess.max() <= 0.0, (
        f"max excess {excess.max():.3g} at {worst}: actual {actual[worst]!r}, "
        f"expected {expected[worst]!r}, tolerance {np.asarray(tolerance)[worst]!r}"
    )


def conv_magnitude(case: ConvCase, x, weight, scale, bias) -> np.ndarray:
    return np.abs(
        oracle_conv2d(np.abs(x), np.abs(weight), np.abs(scale), np.abs(bias), **case.options())
    )


# ---------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_binary_conv2d_matches_reference(rng, case, density):
    x, weight, scale, bias = conv_inputs(rng, case, density)
    bits = pack_conv_weight(weight)
    signs = sign_weights(weight)

    actual = kernels.binary_conv2d(x, bits, scale, bias, in_channels=case.channels, **case.options())
    expected = reference.binary_conv2d(
        x, bits, scale, bias, in_channels=case.channels, **case.options()
    )

    assert actual.dtype == np.float32
    assert expected.dtype == np.float32
    tolerance = sum_tolerance(conv_magnitude(case, x, signs, scale, bias), case.fan_in)
    assert_within(actual, expected, tolerance)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_binary_conv2d_matches_oracle(rng, case, density):
    x, weight, scale, bias = conv_inputs(rng, case, density)
    bits = pack_conv_weight(weight)
    signs = sign_weights(weight)
    oracle = oracle_conv2d(x, signs, scale, bias, **case.options())
    tolerance = sum_tolerance(conv_magnitude(case, x, signs, scale, bias), case.fan_in)

    for backend in (kernels, reference):
        actual = backend.binary_conv2d(
            x, bits, scale, bias, in_channels=case.channels, **case.options()
        )
        assert_within(actual, oracle, tolerance)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_float_conv2d_matches_oracle(rng, case, density):
    x, weight, scale, bias = conv_inputs(rng, case, density)
    oracle = oracle_conv2d(x, weight, scale, bias, **case.options())
    tolerance = sum_tolerance(conv_magnitude(case, x, weight, scale, bias), case.fan_in)

    for backend in (kernels, reference):
        actual = backend.float_conv2d(x, weight, scale, bias, **case.options())
        assert actual.dtype == np.float32
        assert_within(actual, oracle, tolerance)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_binary_conv2d_equals_float_conv2d(rng, case, density):
    # Both kernels visit inputs and kernel offsets in the same order, and
    # v * (+1.0) and v * (-1.0) are exact, so sign-add and multiply agree bit for bit.
    x, weight, scale, bias = conv_inputs(rng, case, density)
    bits = pack_conv_weight(weight)

    binary = kernels.binary_conv2d(x, bits, scale, bias, in_channels=case.channels, **case.options())
    dense = kernels.float_conv2d(x, sign_weights(weight), scale, bias, **case.options())

    np.testing.assert_array_equal(binary, dense)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 2, 5, 31, 32, 33, 63, 64, 65]),
    group_out=st.integers(1, 3),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_conv2d_random_geometry(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, density, seed
):
    # Choose H and W so that the kernel span fits at least once after padding.
    span = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in (0, 1)]
    height = max(1, span[0] - padding[0] - padding[1]) + extra[0]
    width = max(1, span[1] - padding[2] - padding[3]) + extra[1]
    case = ConvCase(
        group_channels * groups, group_out * groups, groups, height, width,
        kernel, stride, padding, dilation,
    )
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    signs = sign_weights(weight)
    bits = pack_conv_weight(weight)

    actual = kernels.binary_conv2d(x, bits, scale, bias, in_channels=case.channels, **case.options())
    expected = reference.binary_conv2d(
        x, bits, scale, bias, in_channels=case.channels, **case.options()
    )
    dense = kernels.float_conv2d(x, signs, scale, bias, **case.options())

    tolerance = sum_tolerance(conv_magnitude(case, x, signs, scale, bias), case.fan_in)
    assert_within(actual, expected, tolerance)
    np.testing.assert_array_equal(actual, dense)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_conv2d_zero_input_gives_bias(rng, backend):
    case = CONV_CASES[3]
    _, weight, scale, bias = conv_inputs(rng, case, 1.0)
    x = np.zeros((case.channels, case.height, case.width), dtype=np.float32)

    out = backend.binary_conv2d(
        x, pack_conv_weight(weight), scale, bias, in_channels=case.channels, **case.options()
    )

    np.testing.assert_array_equal(out, np.broadcast_to(bias[:, None, None], out.shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_conv2d_zero_weight_is_plus_one(backend):
    # All weights 0.0 pack to +1, so each output is the plain sum of its window.
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    bits = pack_conv_weight(np.zeros((1, 1, 3, 3), dtype=np.float32))
    one = np.ones(1, dtype=np.float32)
    zero = np.zeros(1, dtype=np.float32)

    out = backend.binary_conv2d(x, bits, one, zero, in_channels=1)

    np.testing.assert_array_equal(out, [[[45.0]]])


def test_binary_conv2d_hand_example():
    # x = [[1, 2], [3, 4]]. Output channel 0 has signs [[+1, -1], [-1, +1]], so
    # z = 1 - 2 - 3 + 4 = 0 and the output is 2 * 0 + 0.5 = 0.5. Output channel 1
    # has all signs +1, so z = 10 and the output is 2 * 10 + 0.5 = 20.5.
    x = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    weight = np.array([[[[1.0, -1.0], [-1.0, 1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]], np.float32)
    scale = np.array([2.0, 2.0], dtype=np.float32)
    bias = np.array([0.5, 0.5], dtype=np.float32)

    out = kernels.binary_conv2d(x, pack_conv_weight(weight), scale, bias, in_channels=1)

    np.testing.assert_array_equal(out, [[[0.5]], [[20.5]]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_conv2d_ignores_padding_bits(rng, backend):
    case = CONV_CASES[2]  # 33 channels: 31 padding bits per row
    x, weight, scale, bias = conv_inputs(rng, case, 1.0)
    bits = pack_conv_weight(weight)
    dirty = bits | np.uint64(0xFFFF_FFFE_0000_0000)

    clean_out = backend.binary_conv2d(x, bits, scale, bias, in_channels=33, **case.options())
    dirty_out = backend.binary_conv2d(x, dirty, scale, bias, in_channels=33, **case.options())

    np.testing.assert_array_equal(dirty_out, clean_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_conv2d_accepts_float64_and_views(rng, backend):
    case = CONV_CASES[1]
    x, weight, scale, bias = conv_inputs(rng, case, 0.5)
    bits = pack_conv_weight(weight)
    strided = np.zeros((case.channels, case.height, 2 * case.width), dtype=np.float64)
    strided[:, :, ::2] = x

    from_view = backend.binary_conv2d(
        strided[:, :, ::2], bits, scale.astype(np.float64), bias, in_channels=3, **case.options()
    )
    from_copy = backend.binary_conv2d(x, bits, scale, bias, in_channels=3, **case.options())

    assert from_view.dtype == np.float32
    np.testing.assert_array_equal(from_view, from_copy)


def test_binary_conv2d_int_and_pair_parameters(rng):
    case = ConvCase(3, 2, 1, 6, 6, (3, 3), stride=(2, 2), padding=(1, 1, 1, 1), dilation=(1, 1))
    x, weight, scale, bias = conv_inputs(rng, case, 1.0)
    bits = pack_conv_weight(weight)

    with_ints = kernels.binary_conv2d(
        x, bits, scale, bias, in_channels=3, stride=2, padding=1, dilation=1
    )
    with_pair = kernels.binary_conv2d(
        x, bits, scale, bias, in_channels=3, stride=(2, 2), padding=(1, 1), dilation=(1, 1)
    )
    with_quad = kernels.binary_conv2d(x, bits, scale, bias, in_channels=3, **case.options())

    np.testing.assert_array_equal(with_ints, with_quad)
    np.testing.assert_array_equal(with_pair, with_quad)


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=case_id)
def test_float_conv2d_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x, weight, scale, bias = conv_inputs(rng, case, 0.3)
    top, bottom, left, right = case.padding

    padded = functional.pad(torch.from_numpy(x.astype(np.float64))[None], (left, right, top, bottom))
    z = functional.conv2d(
        padded,
        torch.from_numpy(weight.astype(np.float64)),
        stride=case.stride,
        dilation=case.dilation,
        groups=case.groups,
    )[0].numpy()
    expected = scale[:, None, None].astype(np.float64) * z + bias[:, None, None]

    actual = kernels.float_conv2d(x, weight, scale, bias, **case.options())

    tolerance = sum_tolerance(conv_magnitude(case, x, weight, scale, bias), case.fan_in)
    assert_within(actual, expected, tolerance)


# ---------------------------------------------------------------------------
# Linear layers
# ---------------------------------------------------------------------------

LINEAR_WIDTHS = [1, 3, 31, 32, 33, 63, 64, 65, 128]


def linear_inputs(rng, in_features, out_features, density):
    x = spike_like(rng, (in_features,), density)
    weight = spike_like(rng, (out_features, in_features), 0.95)
    scale = rng.uniform(-2.0, 2.0, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    return x, weight, scale, bias


def oracle_linear(x, weight, scale, bias):
    return scale.astype(np.float64) * (weight.astype(np.float64) @ x.astype(np.float64)) + bias


def linear_tolerance(x, weight, scale, bias):
    magnitude = oracle_linear(np.abs(x), np.abs(weight), np.abs(scale), np.abs(bias))
    return sum_tolerance(magnitude, x.shape[0])


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", LINEAR_WIDTHS)
def test_binary_linear_matches_reference(rng, width, density):
    x, weight, scale, bias = linear_inputs(rng, width, 7, density)
    bits = pack_signs(weight)

    actual = kernels.binary_linear(x, bits, scale, bias, in_features=width)
    expected = reference.binary_linear(x, bits, scale, bias, in_features=width)

    assert actual.dtype == np.float32
    assert actual.shape == (7,)
    assert_within(actual, expected, linear_tolerance(x, sign_weights(weight), scale, bias))


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", LINEAR_WIDTHS)
def test_binary_linear_matches_oracle(rng, width, density):
    x, weight, scale, bias = linear_inputs(rng, width, 7, density)
    signs = sign_weights(weight)
    oracle = oracle_linear(x, signs, scale, bias)
    tolerance = linear_tolerance(x, signs, scale, bias)

    for backend in (kernels, reference):
        actual = backend.binary_linear(x, pack_signs(weight), scale, bias, in_features=width)
        assert_within(actual, oracle, tolerance)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", LINEAR_WIDTHS)
def test_float_linear_matches_oracle(rng, width, density):
    x, weight, scale, bias = linear_inputs(rng, width, 5, density)
    oracle = oracle_linear(x, weight, scale, bias)
    tolerance = linear_tolerance(x, weight, scale, bias)

    for backend in (kernels, reference):
        actual = backend.float_linear(x, weight, scale, bias)
        assert actual.dtype == np.float32
        assert_within(actual, oracle, tolerance)


@pytest.mark.parametrize("width", LINEAR_WIDTHS)
def test_binary_linear_equals_float_linear(rng, width):
    # Same summation order, and multiplying by ±1.0 is exact.
    x, weight, scale, bias = linear_inputs(rng, width, 6, 0.4)

    binary = kernels.binary_linear(x, pack_signs(weight), scale, bias, in_features=width)
    dense = kernels.float_linear(x, sign_weights(weight), scale, bias)

    np.testing.assert_array_equal(binary, dense)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_linear_hand_example(backend):
    # Signs [+1, -1, +1] and x [0.5, 2, 0] give z = 0.5 - 2 = -1.5, so the output is 3 * -1.5 + 1.
    bits = pack_signs(np.array([[1.0, -1.0, 0.0]]))
    x = np.array([0.5, 2.0, 0.0], dtype=np.float32)

    out = backend.binary_linear(x, bits, np.float32([3.0]), np.float32([1.0]), in_features=3)

    np.testing.assert_array_equal(out, [-3.5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_linear_zero_input_gives_bias(rng, backend):
    _, weight, scale, bias = linear_inputs(rng, 65, 4, 1.0)

    out = backend.binary_linear(
        np.zeros(65, np.float32), pack_signs(weight), scale, bias, in_features=65
    )

    np.testing.assert_array_equal(out, bias)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_linear_ignores_padding_bits(rng, backend):
    x, weight, scale, bias = linear_inputs(rng, 65, 4, 1.0)
    bits = pack_signs(weight)
    dirty = bits.copy()
    dirty[:, -1] |= np.uint64(0xFFFF_FFFF_FFFF_FFFE)

    clean_out = backend.binary_linear(x, bits, scale, bias, in_features=65)
    dirty_out = backend.binary_linear(x, dirty, scale, bias, in_features=65)

    np.testing.assert_array_equal(dirty_out, clean_out)


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

POOL_CASES = [
    # (H, W, kernel, stride, padding, dilation)
    (8, 8, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
    (7, 9, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (6, 5, (3, 2), (1, 2), (0, 1, 1, 0), (1, 1)),
    (5, 5, (2, 2), (1, 1), (0, 1, 0, 1), (1, 1)),
    (3, 3, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),  # OH = OW = 1
    (9, 7, (3, 2), (3, 1), (1, 0, 1, 1), (2, 2)),  # max_pool2d only: dilation 2
    (4, 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
]


def pool_case_id(case) -> str:
    height, width, kernel, stride, padding, dilation = case
    return (
        f"{height}x{width}-k{kernel[0]}{kernel[1]}-s{stride[0]}{stride[1]}"
        f"-p{''.join(map(str, padding))}-d{dilation[0]}{dilation[1]}"
    )


AVG_POOL_CASES = [case for case in POOL_CASES if case[5] == (1, 1)]


def oracle_avg_pool2d(x, kernel, stride, padding):
    """Compute average pooling in float64 from the definition, dividing by kh * kw."""
    channels, height, width = x.shape
    top, bottom, left, right = padding
    out_height = (height + top + bottom - kernel[0]) // stride[0] + 1
    out_width = (width + left + right - kernel[1]) // stride[1] + 1
    out = np.zeros((channels, out_height, out_width))
    for y in range(out_height):
        for x_out in range(out_width):
            for ky in range(kernel[0]):
                for kx in range(kernel[1]):
                    iy = y * stride[0] + ky - top
                    ix = x_out * stride[1] + kx - left
                    if 0 <= iy < height and 0 <= ix < width:
                        out[:, y, x_out] += x[:, iy, ix]
    return out / (kernel[0] * kernel[1])


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=pool_case_id)
def test_avg_pool2d_matches_reference(rng, case, density):
    # Exact: both sum the window in float32 in the same row-major order and then divide.
    height, width, kernel, stride, padding, _ = case
    x = spike_like(rng, (4, height, width), density)

    actual = kernels.avg_pool2d(x, kernel, stride, padding)
    expected = reference.avg_pool2d(x, kernel, stride, padding)

    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=pool_case_id)
def test_avg_pool2d_matches_oracle(rng, case):
    height, width, kernel, stride, padding, _ = case
    x = spike_like(rng, (3, height, width), 0.7)
    n_terms = kernel[0] * kernel[1]
    tolerance = sum_tolerance(oracle_avg_pool2d(np.abs(x), kernel, stride, padding), n_terms)

    actual = kernels.avg_pool2d(x, kernel, stride, padding)

    assert_within(actual, oracle_avg_pool2d(x, kernel, stride, padding), tolerance)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_case_id)
def test_max_pool2d_matches_reference(rng, case, density):
    height, width, kernel, stride, padding, dilation = case
    x = spike_like(rng, (4, height, width), density)

    actual = kernels.max_pool2d(x, kernel, stride, padding, dilation)
    expected = reference.max_pool2d(x, kernel, stride, padding, dilation)

    assert actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("case", POOL_CASES, ids=pool_case_id)
def test_pool2d_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    height, width, kernel, stride, padding, dilation = case
    x = spike_like(rng, (3, height, width), 0.6)
    top, bottom, left, right = padding
    # PyTorch pads symmetrically only, so pad explicitly: 0 for the average
    # (its divisor stays kh * kw, as with count_include_pad=True) and -inf for the max.
    tensor = torch.from_numpy(x)[None]
    zero_padded = functional.pad(tensor, (left, right, top, bottom), value=0.0)
    inf_padded = functional.pad(tensor, (left, right, top, bottom), value=-np.inf)

    torch_max = functional.max_pool2d(inf_padded, kernel, stride, dilation=dilation)[0].numpy()
    actual_max = kernels.max_pool2d(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(actual_max, torch_max)

    if dilation == (1, 1):
        torch_avg = functional.avg_pool2d(zero_padded, kernel, stride)[0].numpy()
        actual_avg = kernels.avg_pool2d(x, kernel, stride, padding)
        n_terms = kernel[0] * kernel[1]
        magnitude = oracle_avg_pool2d(np.abs(x), kernel, stride, padding)
        assert_within(actual_avg, torch_avg, sum_tolerance(magnitude, n_terms))


def test_pool2d_symmetric_padding_matches_torch(rng):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = spike_like(rng, (2, 7, 7), 1.0)
    tensor = torch.from_numpy(x)[None]

    torch_avg = functional.avg_pool2d(tensor, 3, 2, padding=1)[0].numpy()
    torch_max = functional.max_pool2d(tensor, 3, 2, padding=1)[0].numpy()

    assert_within(kernels.avg_pool2d(x, 3, 2, 1), torch_avg, 11 * FLOAT32_EPS * np.abs(x).max())
    np.testing.assert_array_equal(kernels.max_pool2d(x, 3, 2, 1), torch_max)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool2d_propagates_nan(backend):
    x = np.array([[[1.0, np.nan, 3.0, 0.5], [2.0, 0.0, -1.0, 4.0]]], dtype=np.float32)

    out = backend.max_pool2d(x, (2, 2), (2, 2))

    assert np.isnan(out[0, 0, 0])
    assert out[0, 0, 1] == 4.0


def test_max_pool2d_nan_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.array([[[np.nan, 5.0, 1.0], [2.0, 0.0, np.nan], [7.0, 8.0, 9.0]]], dtype=np.float32)

    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x)[None], 2, 1)[0].numpy()

    np.testing.assert_array_equal(kernels.max_pool2d(x, 2, 1), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool2d_padding_never_wins(backend):
    x = -np.ones((1, 2, 2), dtype=np.float32)

    out = backend.max_pool2d(x, (2, 2), (1, 1), (1, 1, 1, 1))

    np.testing.assert_array_equal(out, -np.ones((1, 3, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_avg_pool2d_counts_padding(backend):
    x = np.ones((1, 2, 2), dtype=np.float32)

    out = backend.avg_pool2d(x, (2, 2), (2, 2), (1, 1, 1, 1))

    np.testing.assert_array_equal(out, np.full((1, 2, 2), 0.25))


# ---------------------------------------------------------------------------
# LIF neuron and residual add
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_hand_example(backend):
    # tau = 0.25, threshold = 0.5, inputs 0.3, 0.3, 0.6:
    # H = 0.3 (U = 0.3), H = 0.25 * 0.3 + 0.3 = 0.375 (U = 0.375),
    # H = 0.25 * 0.375 + 0.6 = 0.69375 >= 0.5, so it spikes 0.69375 and U = 0.
    membrane = np.zeros(1, dtype=np.float32)
    spikes = []
    membranes = []
    counts = []
    for current in (0.3, 0.3, 0.6):
        spike, n_fired = backend.lif_step(np.float32([current]), membrane, 0.25, 0.5)
        spikes.append(float(spike[0]))
        membranes.append(float(membrane[0]))
        counts.append(n_fired)

    np.testing.assert_allclose(spikes, [0.0, 0.0, 0.69375], rtol=1e-6)
    np.testing.assert_allclose(membranes, [0.3, 0.375, 0.0], rtol=1e-6)
    assert spikes[:2] == [0.0, 0.0]
    assert membranes[2] == 0.0
    assert counts == [0, 0, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_fires_at_threshold(backend):
    membrane = np.zeros(3, dtype=np.float32)
    current = np.float32([0.5, np.nextafter(np.float32(0.5), np.float32(0.0)), 0.75])

    spikes, n_fired = backend.lif_step(current, membrane, 0.25, 0.5)

    np.testing.assert_array_equal(spikes, [0.5, 0.0, 0.75])
    np.testing.assert_array_equal(membrane, [0.0, current[1], 0.0])
    assert n_fired == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_negative_input(backend):
    membrane = np.float32([0.4, -1.0])

    spikes, n_fired = backend.lif_step(np.float32([-0.2, -0.5]), membrane, 0.25, 0.5)

    np.testing.assert_array_equal(spikes, [0.0, 0.0])
    np.testing.assert_array_equal(membrane, np.float32([0.25 * 0.4 - 0.2, -0.75]))
    assert n_fired == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_negative_threshold(backend):
    # A negative threshold is legal: a neuron at H = -0.1 >= -0.2 emits the spike -0.1.
    membrane = np.zeros(1, dtype=np.float32)

    spikes, n_fired = backend.lif_step(np.float32([-0.1]), membrane, 0.5, -0.2)

    np.testing.assert_array_equal(spikes, np.float32([-0.1]))
    assert n_fired == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_threshold_rounded_to_float32(backend):
    # float32(0.1) is slightly above the float64 0.1. The comparison uses
    # float32(threshold), so an input of exactly float32(0.1) fires.
    membrane = np.zeros(1, dtype=np.float32)

    _, n_fired = backend.lif_step(np.float32([0.1]), membrane, 0.25, 0.1)

    assert n_fired == 1


def test_lif_step_matches_reference_over_time(rng):
    # Exact: both compute tau * U + I and the comparison in float32, element by element.
    shape = (6, 5, 4)
    membrane_numba = np.zeros(shape, dtype=np.float32)
    membrane_reference = np.zeros(shape, dtype=np.float32)
    total_fired = 0
    for _ in range(8):
        current = spike_like(rng, shape, 0.7) * np.float32(0.6)
        spikes_numba, fired_numba = kernels.lif_step(current, membrane_numba, 0.25, 0.5)
        spikes_reference, fired_reference = reference.lif_step(
            current, membrane_reference, 0.25, 0.5
        )

        np.testing.assert_array_equal(spikes_numba, spikes_reference)
        np.testing.assert_array_equal(membrane_numba, membrane_reference)
        assert fired_numba == fired_reference
        assert fired_numba == int(np.count_nonzero(spikes_numba))
        total_fired += fired_numba

    assert total_fired > 0


def test_lif_step_matches_float64_loop(rng):
    # Independent oracle: the equations in plain Python on float32 scalars.
    currents = spike_like(rng, (10, 7), 0.8)
    membrane = np.zeros(7, dtype=np.float32)
    state = [np.float32(0.0)] * 7
    tau = np.float32(0.25)
    threshold = np.float32(0.5)

    for current in currents:
        spikes, n_fired = kernels.lif_step(current, membrane, 0.25, 0.5)
        expected_spikes = []
        for k in range(7):
            potential = np.float32(tau * state[k] + current[k])
            fired = potential >= threshold
            expected_spikes.append(potential if fired else np.float32(0.0))
            state[k] = np.float32(0.0) if fired else potential

        np.testing.assert_array_equal(spikes, np.array(expected_spikes, dtype=np.float32))
        np.testing.assert_array_equal(membrane, np.array(state, dtype=np.float32))
        assert n_fired == sum(1 for s in expected_spikes if s != 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_writes_spikes_out(rng, backend):
    membrane = np.full((2, 3), 0.4, dtype=np.float32)
    current = np.float32([[0.5, 0.1, 0.0], [1.0, -1.0, 0.45]])
    spikes_out = np.full((2, 3), 7.0, dtype=np.float32)

    spikes, n_fired = backend.lif_step(current, membrane, 0.25, 0.5, spikes_out=spikes_out)

    assert spikes is spikes_out
    np.testing.assert_array_equal(spikes_out, np.float32([[0.6, 0.0, 0.0], [1.1, 0.0, 0.55]]))
    assert n_fired == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_spikes_out_may_be_current(backend):
    membrane = np.zeros(2, dtype=np.float32)
    current = np.float32([0.7, 0.2])

    spikes, n_fired = backend.lif_step(current, membrane, 0.25, 0.5, spikes_out=current)

    assert spikes is current
    np.testing.assert_array_equal(current, np.float32([0.7, 0.0]))
    np.testing.assert_array_equal(membrane, np.float32([0.0, 0.2]))
    assert n_fired == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_add_matches_numpy(rng, backend):
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((3, 4, 5)).astype(np.float32)

    out = backend.residual_add(a, b)

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_add_in_place(rng, backend):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal((2, 3)).astype(np.float32)
    expected = a + b

    out = backend.residual_add(a, b, out=a)

    assert out is a
    np.testing.assert_array_equal(a, expected)


# ---------------------------------------------------------------------------
# Bad input: both backends raise the same InputError
# ---------------------------------------------------------------------------


def conv_call(backend, **changes):
    """Call binary_conv2d with a valid 3-channel 5x5 setup, overriding the given arguments."""
    arguments = {
        "x": np.zeros((3, 5, 5), dtype=np.float32),
        "weight_bits": np.zeros((4, 3, 3, 1), dtype=np.uint64),
        "scale": np.ones(4, dtype=np.float32),
        "bias": np.zeros(4, dtype=np.float32),
        "in_channels": 3,
    }
    arguments.update(changes)
    x = arguments.pop("x")
    weight_bits = arguments.pop("weight_bits")
    scale = arguments.pop("scale")
    bias = arguments.pop("bias")
    return backend.binary_conv2d(x, weight_bits, scale, bias, **arguments)


BAD_CONV_ARGUMENTS = [
    ({"x": np.zeros((4, 5, 5), np.float32)}, r"x has 4 channels .* in_channels is 3"),
    ({"x": np.zeros((3, 5, 5), np.int64)}, r"x has dtype int64"),
    ({"x": np.zeros((3, 5), np.float32)}, r"x has shape \(3, 5\), expected 3 axes"),
    ({"x": np.zeros((3, 2, 5), np.float32)}, r"output height would be 0"),
    ({"x": np.zeros((3, 5, 1), np.float32), "padding": (1, 1, 0, 0)}, r"output width would be"),
    ({"weight_bits": np.zeros((4, 3, 3, 2), np.uint64)}, r"2 word\(s\) per kernel position"),
    ({"weight_bits": np.zeros((4, 3, 3, 1), np.int64)}, r"weight_bits has dtype int64"),
    ({"weight_bits": np.zeros((4, 3, 3), np.uint64)}, r"weight_bits has shape \(4, 3, 3\)"),
    ({"weight_bits": np.zeros((4, 0, 3, 1), np.uint64)}, r"kernel is 0x3"),
    ({"groups": 2}, r"groups is 2, which must divide .* in_channels \(3\)"),
    ({"groups": 0}, r"groups is 0, expected a positive int"),
    ({"in_channels": 0}, r"in_channels is 0"),
    ({"scale": np.ones(3, np.float32)}, r"scale has 3 entries, expected one per output"),
    ({"bias": np.ones((4, 1), np.float32)}, r"bias has shape \(4, 1\)"),
    ({"stride": 0}, r"stride is 0"),
    ({"stride": (1, 1, 1)}, r"stride is \(1, 1, 1\)"),
    ({"stride": True}, r"stride is True"),
    ({"dilation": (1, 0)}, r"dilation is \(1, 0\)"),
    ({"padding": (1, 1, -1, 0)}, r"padding is \(1, 1, -1, 0\)"),
    ({"padding": (1, 1, 1)}, r"padding is \(1, 1, 1\)"),
    ({"padding": 1.5}, r"padding is 1.5"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("changes", "message"), BAD_CONV_ARGUMENTS)
def test_binary_conv2d_rejects_bad_input(backend, changes, message):
    with pytest.raises(InputError, match=message):
        conv_call(backend, **changes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_conv2d_groups_must_divide_out_channels(backend):
    with pytest.raises(InputError, match=r"groups is 3, .* out_channels \(4\)"):
        conv_call(backend, groups=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_conv2d_rejects_bad_input(backend):
    x = np.zeros((4, 5, 5), dtype=np.float32)
    scale = np.ones(4, dtype=np.float32)

    with pytest.raises(InputError, match=r"x has 4 channels .* groups is 1, so x needs 3"):
        backend.float_conv2d(x, np.zeros((4, 3, 3, 3), np.float32), scale, scale)
    with pytest.raises(InputError, match=r"x has dtype int32"):
        backend.float_conv2d(x.astype(np.int32), np.zeros((4, 4, 3, 3)), scale, scale)
    with pytest.raises(InputError, match=r"groups is 3, which must divide"):
        backend.float_conv2d(
            np.zeros((6, 5, 5)), np.zeros((4, 2, 3, 3)), scale, scale, groups=3
        )
    with pytest.raises(InputError, match=r"output height would be 0"):
        backend.float_conv2d(x[:, :2], np.zeros((4, 4, 3, 3)), scale, scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_linear_rejects_bad_input(backend):
    x = np.zeros(65, dtype=np.float32)
    bits = np.zeros((3, 2), dtype=np.uint64)
    scale = np.ones(3, dtype=np.float32)

    with pytest.raises(InputError, match=r"x has 65 features, but in_features is 64"):
        backend.binary_linear(x, bits, scale, scale, in_features=64)
    with pytest.raises(InputError, match=r"1 word\(s\) per row .* in_features 65 takes 2"):
        backend.binary_linear(x, bits[:, :1], scale, scale, in_features=65)
    with pytest.raises(InputError, match=r"x has dtype int8"):
        backend.binary_linear(x.astype(np.int8), bits, scale, scale, in_features=65)
    with pytest.raises(InputError, match=r"bias has 2 entries"):
        backend.binary_linear(x, bits, scale, scale[:2], in_features=65)
    with pytest.raises(InputError, match=r"weight_bits has dtype float64"):
        backend.binary_linear(x, bits.astype(np.float64), scale, scale, in_features=65)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_linear_rejects_bad_input(backend):
    scale = np.ones(3, dtype=np.float32)

    with pytest.raises(InputError, match=r"x has 5 features, but weight has shape \(3, 4\)"):
        backend.float_linear(np.zeros(5, np.float32), np.zeros((3, 4)), scale, scale)
    with pytest.raises(InputError, match=r"weight has dtype bool"):
        backend.float_linear(np.zeros(4, np.float32), np.zeros((3, 4), bool), scale, scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool2d_rejects_bad_input(backend):
    x = np.zeros((2, 4, 4), dtype=np.float32)

    with pytest.raises(InputError, match=r"top padding is 2, but pooling allows at most 1"):
        backend.avg_pool2d(x, 3, 1, (2, 0, 0, 0))
    with pytest.raises(InputError, match=r"right padding is 2, but pooling allows at most 1"):
        backend.max_pool2d(x, 2, 1, (0, 0, 0, 2))
    with pytest.raises(InputError, match=r"output height would be 0"):
        backend.max_pool2d(x, (5, 1), 1)
    with pytest.raises(InputError, match=r"x has dtype uint8"):
        backend.avg_pool2d(x.astype(np.uint8), 2, 2)
    with pytest.raises(InputError, match=r"kernel is 0"):
        backend.avg_pool2d(x, 0, 1)


def test_pool2d_padding_limit_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 6, 6), dtype=np.float32)
    tensor = torch.from_numpy(x)[None]

    for kernel in (1, 2, 3, 4):
        for pad in (0, 1, 2):
            for dilation in (1, 2, 3):
                try:
                    torch.nn.functional.max_pool2d(tensor, kernel, 1, pad, dilation)
                    torch_accepts = True
                except RuntimeError:
                    torch_accepts = False
                try:
                    kernels.max_pool2d(x, kernel, 1, pad, dilation)
                    accepts = True
                except InputError:
                    accepts = False
                assert accepts == torch_accepts, (kernel, pad, dilation)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool2d_padding_limit_ignores_dilation(backend):
    # Kernel 2 with dilation 3 spans 4, but PyTorch still allows at most 2 // 2 = 1.
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)

    out = backend.max_pool2d(x, 2, 1, 1, dilation=3)

    assert out.shape == (1, 3, 3)
    with pytest.raises(InputError, match=r"top padding is 2, but pooling allows at most 1"):
        backend.max_pool2d(x, 2, 1, 2, dilation=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_rejects_bad_input(backend):
    membrane = np.zeros((2, 3), dtype=np.float32)
    current = np.zeros((2, 3), dtype=np.float32)

    with pytest.raises(InputError, match=r"membrane has dtype float64"):
        backend.lif_step(current, membrane.astype(np.float64), 0.25, 0.5)
    with pytest.raises(InputError, match=r"membrane must be a writeable C-contiguous"):
        backend.lif_step(current, np.zeros((3, 2), np.float32).T, 0.25, 0.5)
    with pytest.raises(InputError, match=r"current has shape \(3,\) but membrane has shape"):
        backend.lif_step(np.zeros(3, np.float32), membrane, 0.25, 0.5)
    with pytest.raises(InputError, match=r"current has dtype int64"):
        backend.lif_step(np.zeros((2, 3), np.int64), membrane, 0.25, 0.5)
    with pytest.raises(InputError, match=r"tau is 1.5, expected a decay factor in \[0, 1\]"):
        backend.lif_step(current, membrane, 1.5, 0.5)
    with pytest.raises(InputError, match=r"threshold is nan, expected a finite number"):
        backend.lif_step(current, membrane, 0.25, float("nan"))
    with pytest.raises(InputError, match=r"tau is '0.25', expected a real number"):
        backend.lif_step(current, membrane, "0.25", 0.5)
    with pytest.raises(InputError, match=r"spikes_out shares memory with membrane"):
        backend.lif_step(current, membrane, 0.25, 0.5, spikes_out=membrane)
    with pytest.raises(InputError, match=r"spikes_out has dtype float64"):
        backend.lif_step(current, membrane, 0.25, 0.5, spikes_out=np.zeros((2, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_step_rejects_read_only_membrane(backend):
    membrane = np.zeros(3, dtype=np.float32)
    membrane.flags.writeable = False

    with pytest.raises(InputError, match=r"membrane must be a writeable"):
        backend.lif_step(np.zeros(3, np.float32), membrane, 0.25, 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_add_rejects_bad_input(backend):
    a = np.zeros((2, 3), dtype=np.float32)

    with pytest.raises(InputError, match=r"a has shape \(2, 3\) but b has shape \(3, 2\)"):
        backend.residual_add(a, np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match=r"out has dtype float32 and shape \(3,\)"):
        backend.residual_add(a, a, out=np.zeros(3, np.float32))
    with pytest.raises(InputError, match=r"b has dtype int32"):
        backend.residual_add(a, a.astype(np.int32))


def test_words_for_matches_conv_layout():
    # The layout that binary_conv2d expects: one row of words per (o, ky, kx).
    bits = pack_conv_weight(np.ones((2, 65, 3, 1), dtype=np.float32))

    assert bits.shape == (2, 3, 1, words_for(65))
