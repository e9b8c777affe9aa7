"""The popcount convolution for binary inputs: the NumPy twin, the float kernels and the engine's choice."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge import InputError, kernels, reference
from reverb_edge.bitpack import pack_signs
from reverb_edge.kernels.checks import check_binary_conv2d
from reverb_edge.kernels.conv import PreparedConv2d
from reverb_edge.kernels.popcount import POPCOUNT_DENSITY, POPCOUNT_FROM

from helpers import CountingCalls
from test_kernels import ConvCase


def binary_case(rng, case: ConvCase, density: float):
    x = (rng.random((case.channels, case.height, case.width)) < density).astype(np.float32)
    bits = pack_signs(rng.standard_normal((case.out_channels, *case.kernel, case.group_channels)))
    scale = rng.uniform(-2.0, 2.0, case.out_channels).astype(np.float32)
    bias = rng.standard_normal(case.out_channels).astype(np.float32)
    return x, bits, scale, bias


@settings(derandomize=True, max_examples=50, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 2, 16, 63, 64, 65, 130]),
    group_out=st.sampled_from([1, 3, 16, 17]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_popcount_conv2d_equals_twin_and_float(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, density, seed
):
    span = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in (0, 1)]
    height = max(1, span[0] - padding[0] - padding[1]) + extra[0]
    width = max(1, span[1] - padding[2] - padding[3]) + extra[1]
    case = ConvCase(group_channels * groups, group_out * groups, groups, height, width, kernel, stride, padding, dilation)
    x, bits, scale, bias = binary_case(np.random.default_rng(seed), case, density)
    options = dict(in_channels=case.channels, **case.options())

    actual = kernels.binary_conv2d_popcount(x, bits, scale, bias, **options)

    # Integer sums are exact, so all three agree bit for bit.
    np.testing.assert_array_equal(actual, reference.binary_conv2d_popcount(x, bits, scale, bias, **options))
    np.testing.assert_array_equal(actual, kernels.binary_conv2d(x, bits, scale, bias, **options))


@pytest.mark.parametrize("backend", [kernels, reference], ids=["numba", "reference"])
def test_popcount_conv2d_rejects_real_input(rng, backend):
    case = ConvCase(4, 2, 1, 5, 5, (3, 3))
    x, bits, scale, bias = binary_case(rng, case, 0.5)
    x[1, 2, 3] = 0.5
    with pytest.raises(InputError, match=r"only 0.0 and 1.0, got values such as \[0.5\]"):
        backend.binary_conv2d_popcount(x, bits, scale, bias, in_channels=4)


def test_prepared_conv2d_uses_popcount_for_binary_input(rng):
    case = ConvCase(POPCOUNT_FROM * 2, 20, 1, 9, 7, (3, 3), padding=(1, 1, 1, 1))
    x, bits, scale, bias = binary_case(rng, case, 0.3)
    signs = np.ascontiguousarray(
        np.where(np.unpackbits(bits.view(np.uint8), bitorder="little").reshape(20, 3, 3, -1)[..., :case.channels], 1.0, -1.0)
        .astype(np.float32).transpose(0, 3, 1, 2)
    )
    geometry = check_binary_conv2d("test", x, bits, scale, bias, case.channels, 1, case.padding, 1, 1)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, 9, 7, weight_bits=bits)
    x_last = np.ascontiguousarray(x.transpose(1, 2, 0))
    layer.popcount = CountingCalls(layer.popcount)

    out, events = layer(x_last)

    assert layer.popcount.calls == 1
    assert events == np.count_nonzero(x)
    np.testing.assert_array_equal(out.copy(), layer(x_last, dense=False)[0])
    real = x_last * np.float32(0.5)
    layer(real)
    assert layer.popcount.calls == 1
    # Few ones: the float kernel's work follows them, so it is chosen (all zeros cost it almost nothing).
    sparse = (rng.random(x_last.shape) < POPCOUNT_DENSITY / 3).astype(np.float32)
    for few_ones in (np.zeros_like(x_last), sparse):
        out, events = layer(few_ones)
        assert layer.popcount.calls == 1
        assert events == np.count_nonzero(few_ones)
