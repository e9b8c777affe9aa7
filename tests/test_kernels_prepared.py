"""The engine's prepared channels-last layers: modes, output widths, threads and event counts.

``test_kernels.py`` reaches the same Numba kernel through the channels-first
public functions. These tests drive ``PreparedConv2d`` directly, as the engine
does: the sparse and dense modes must agree bit for bit, output widths that
fill 16-lane vectors partly or over several 64-channel blocks must match the
reference twin, and a split over threads must not change a single bit.
"""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge import reference
from reverb_edge.kernels.checks import check_float_conv2d
from reverb_edge.kernels.conv import PreparedConv2d, prepare_linear, weight_rows
from reverb_edge.kernels.layout import _channels_last_copy, flatten_channels_first

from test_kernels import ConvCase, fitting_case, assert_within, conv_inputs, conv_magnitude, sign_weights, sum_tolerance

TWO_THREADS = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba may start only one thread here")


def prepared(case: ConvCase, weight, scale, bias) -> PreparedConv2d:
    x = np.empty((case.channels, case.height, case.width), np.float32)
    geometry = check_float_conv2d("test", x, weight, scale, bias, case.stride, case.padding, case.dilation, case.groups)[4]
    return PreparedConv2d(weight, scale, bias, geometry, case.height, case.width)


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(1, 2, 0))


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 3, 16, 31, 33, 64]),
    group_out=st.sampled_from([1, 5, 15, 16, 17, 48, 63, 64, 65, 130]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_prepared_conv2d_modes_equal_and_match_reference(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, density, binary, seed
):
    case = fitting_case(groups, group_channels, group_out, kernel, stride, dilation, padding, extra)
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    # Binary rows take fused multiply-adds and float rows a separate multiply and add. Both match the
    # dense mode exactly, because it sums the same terms in the same order.
    signs = sign_weights(weight) if binary else weight
    layer = prepared(case, signs, scale, bias)
    if binary:
        assert layer.binary_tag != ()

    sparse, sparse_events = layer(channels_last(x), dense=False)
    sparse = sparse.copy()
    dense, dense_events = layer(channels_last(x), dense=True)

    np.testing.assert_array_equal(sparse, dense)
    assert sparse_events == dense_events == np.count_nonzero(x)
    expected = reference.float_conv2d(x, signs, scale, bias, **case.options())
    tolerance = sum_tolerance(conv_magnitude(case, x, signs, scale, bias), case.fan_in)
    assert_within(sparse.transpose(2, 0, 1), expected, tolerance)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    channels=st.sampled_from([1, 2, 3, 5, 16]),
    out_channels=st.sampled_from([1, 5, 16, 17, 31, 32]),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 9), st.integers(0, 18)),
    density=st.sampled_from([0.5, 0.95, 1.0]),
    binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_strip_kernel_equals_pixel_pairs(channels, out_channels, kernel, stride, padding, extra, density, binary, seed):
    """The strip kernel of dense ungrouped layers gives the pixel-pair kernel's bits, at any width (strips of 8)."""
    case = fitting_case(1, channels, out_channels, kernel, stride, (1, 1), padding, extra)
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    x[0, 0, 0] = -0.0  # a signed zero inside the image is read like any input
    signs = sign_weights(weight) if binary else weight
    layer = prepared(case, signs, scale, bias)
    assert layer.bordered is not None

    strips, events = layer(channels_last(x), dense=True)
    strips = strips.copy()
    layer.bordered = None
    pairs, pair_events = layer(channels_last(x), dense=True)

    np.testing.assert_array_equal(strips.view(np.uint32), pairs.view(np.uint32))
    assert events == pair_events == np.count_nonzero(x)


@TWO_THREADS
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("case", [
    ConvCase(32, 32, 1, 28, 28, (3, 3), padding=(1, 1, 1, 1)),
    ConvCase(5, 70, 1, 3, 9, (3, 2), stride=(2, 1), padding=(1, 0, 1, 1)),  # fewer row bands than threads
    ConvCase(6, 34, 2, 7, 5, (1, 3), dilation=(1, 2), padding=(0, 0, 2, 2)),
], ids=["mnist-layer", "one-row", "grouped"])
def test_prepared_conv2d_threads_change_no_bit(rng, case, dense):
    x, weight, scale, bias = conv_inputs(rng, case, 0.3)
    layer = prepared(case, sign_weights(weight), scale, bias)
    serial = layer(channels_last(x), threads=1, dense=dense)[0].copy()
    numba.set_num_threads(2)
    try:
        parallel = layer(channels_last(x), threads=2, dense=dense)[0]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(parallel, serial)


def test_prepared_conv2d_reuses_its_output_buffer(rng):
    case = ConvCase(3, 4, 1, 5, 5, (3, 3))
    x, weight, scale, bias = conv_inputs(rng, case, 0.5)
    layer = prepared(case, sign_weights(weight), scale, bias)
    first, _ = layer(channels_last(x))
    second, _ = layer(channels_last(x * 2))
    assert first is second


@pytest.mark.parametrize("out_features", [1, 10, 16, 64, 65, 200])
def test_prepared_linear_matches_reference(rng, out_features):
    x = rng.standard_normal(3136).astype(np.float32)
    x[rng.random(3136) < 0.7] = 0.0
    weight = np.where(rng.random((out_features, 3136)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    layer = prepare_linear(weight, scale, bias)
    out, events = layer(x)
    out = out.copy()
    assert events == np.count_nonzero(x)
    # The linear kernel and the convolution kernels sum in the same order.
    for dense in (False, True):
        np.testing.assert_array_equal(layer(x, dense=dense)[0], out)
    expected = reference.float_linear(x, weight, scale, bias)
    magnitude = np.abs(scale) * (np.abs(weight) @ np.abs(x)) + np.abs(bias)
    assert_within(out, expected, sum_tolerance(magnitude, 3136))


def test_weight_rows_layout():
    # (O=3, Cg=2, kh=1, kw=2), one group: row [0, 0, kx, ci] contains weight[:, ci, 0, kx], zero-padded to 16.
    weight = np.arange(12, dtype=np.float32).reshape(3, 2, 1, 2)
    rows = weight_rows(weight, 1)
    assert rows.shape == (1, 1, 2, 2, 16)
    np.testing.assert_array_equal(rows[0, 0, 1, 0, :3], weight[:, 0, 0, 1])
    assert not rows[..., 3:].any()


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    channels=st.sampled_from([1, 5, 16, 17, 33, 64]),
    multiplier=st.sampled_from([1, 2]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    density=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_depthwise_kernel_equals_general_kernel(channels, multiplier, kernel, stride, dilation, padding, extra, density, seed):
    span = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in (0, 1)]
    height = max(1, span[0] - padding[0] - padding[1]) + extra[0]
    width = max(1, span[1] - padding[2] - padding[3]) + extra[1]
    case = ConvCase(channels, channels * multiplier, channels, height, width, kernel, stride, padding, dilation)
    x, weight, scale, bias = conv_inputs(np.random.default_rng(seed), case, density)
    layer = prepared(case, weight, scale, bias)
    assert (layer.depthwise is not None) == (multiplier == 1)

    chosen, events = layer(channels_last(x))
    chosen = chosen.copy()
    general, _ = layer(channels_last(x), dense=False)

    # Both sum each output over (ky, kx) in the same order, so they agree bit for bit.
    np.testing.assert_array_equal(chosen, general)
    assert events == np.count_nonzero(x)


@TWO_THREADS
def test_depthwise_kernel_threads_change_no_bit(rng):
    case = ConvCase(40, 40, 40, 9, 7, (3, 3), stride=(2, 1), padding=(1, 1, 1, 1))
    x, weight, scale, bias = conv_inputs(rng, case, 0.5)
    layer = prepared(case, weight, scale, bias)
    serial = layer(channels_last(x))[0].copy()
    numba.set_num_threads(2)
    try:
        parallel = layer(channels_last(x), threads=2)[0]
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(parallel, serial)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 40)), seed=st.integers(0, 2**32 - 1))
def test_flatten_channels_first_matches_numpy(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(flatten_channels_first(x), x.transpose(2, 0, 1).reshape(-1))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 5, 7), (2, 1, 1)])
def test_channels_last_copy_matches_numpy(rng, shape):
    """The engine's input pass equals NumPy's transpose, and finds the largest magnitude, NaN and infinity included."""
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[0] = -7.5
    out = np.empty((shape[1], shape[2], shape[0]), np.float32)

    assert _channels_last_copy(x, out) == np.abs(x).max() == 7.5
    np.testing.assert_array_equal(out, x.transpose(1, 2, 0))
    x.flat[-1] = -np.inf
    assert _channels_last_copy(x, out) == np.inf
    x.flat[0] = np.nan
    assert np.isnan(_channels_last_copy(x, out))
