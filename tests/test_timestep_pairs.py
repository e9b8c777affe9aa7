"""Two timesteps at once: the engine's pair kernels against two one-timestep calls.

``Engine.predict`` and ``predict_frames`` run the network node by node over
two timesteps at a time, and a node with a pair kernel computes both
timesteps in one call. Every pair kernel must give the same bits as two
calls of its one-timestep kernel, whose own tests compare it with the NumPy
reference twins. The shapes are the awkward ones of ``test_kernels_prepared``:
odd channel counts, strides, padding, dilation and groups, and inputs that
are all zero at one of the two timesteps.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge import reference
from reverb_edge.kernels.checks import check_float_conv2d, check_pool2d
from reverb_edge.kernels.conv import PreparedConv2d, prepare_linear
from reverb_edge.kernels.layout import _flatten_pair_kernel, flatten_channels_first
from reverb_edge.kernels.neuron import _lif_first_step_kernel, _lif_pair_kernel, _lif_step_kernel
from reverb_edge.kernels.pool import (
    _max_pool2d_kernel, avg_pool2d_hwc, avg_pool2d_hwc_pair, max_pool2d_hwc, max_pool2d_hwc_pair,
)
from reverb_edge.kernels.popcount import POPCOUNT_FROM

from helpers import CountingCalls
from test_kernels import ConvCase, fitting_case, assert_within, conv_inputs, conv_magnitude, pack_conv_weight, sign_weights, spike_like, sum_tolerance


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(1, 2, 0))


def second_input(rng, x: np.ndarray, kind: str) -> np.ndarray:
    """The next timestep's input: overlapping with ``x`` as spikes of one layer are, or not at all."""
    if kind == "zero":
        return np.zeros_like(x)
    if kind == "same":
        return x.copy()
    if kind == "grown":
        # Neurons that fired keep firing with other values, and a few more join.
        grown = np.where(x != 0, x * np.float32(1.5), 0).astype(np.float32)
        extra = spike_like(rng, x.shape, 0.05)
        return np.where(grown != 0, grown, extra).astype(np.float32)
    return spike_like(rng, x.shape, 0.3)


@settings(derandomize=True, max_examples=80, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 3, 16, 31, 33]),
    group_out=st.sampled_from([1, 5, 16, 17, 48, 65]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    density=st.sampled_from([0.0, 0.1, 0.5, 0.95, 1.0]),
    following=st.sampled_from(["zero", "same", "grown", "other"]),
    binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_pair_equals_two_calls(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, density, following, binary, seed
):
    case = fitting_case(groups, group_channels, group_out, kernel, stride, dilation, padding, extra)
    height, width = case.height, case.width
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    x_next = second_input(rng, x, following)
    signs = sign_weights(weight) if binary else weight
    geometry = check_float_conv2d("test", x, signs, scale, bias, stride, padding, dilation, groups)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, height, width)

    out, out_next, events, events_next = layer.pair(channels_last(x), channels_last(x_next))
    out, out_next = out.copy(), out_next.copy()
    single, single_events = layer(channels_last(x))
    np.testing.assert_array_equal(out, single)
    single_next, next_events = layer(channels_last(x_next))
    np.testing.assert_array_equal(out_next, single_next)

    assert (events, events_next) == (single_events, next_events)
    assert (events, events_next) == (np.count_nonzero(x), np.count_nonzero(x_next))
    for inputs, result in ((x, out), (x_next, out_next)):
        expected = reference.float_conv2d(inputs, signs, scale, bias, **case.options())
        tolerance = sum_tolerance(conv_magnitude(case, inputs, signs, scale, bias), case.fan_in)
        assert_within(result.transpose(2, 0, 1), expected, tolerance)


@pytest.mark.parametrize("binary_step", [0, 1])
def test_conv_pair_binary_input_popcount(rng, binary_step):
    """A 0/1 input at either timestep sends both through the one-timestep calls, one of them by popcounts."""
    case = ConvCase(POPCOUNT_FROM * 2, 20, 1, 9, 7, (3, 3), padding=(1, 1, 1, 1))
    _, weight, scale, bias = conv_inputs(rng, case, 1.0)
    signs = sign_weights(weight)
    geometry = check_float_conv2d("test", np.empty((case.channels, 9, 7), np.float32), signs, scale, bias,
                                  1, case.padding, 1, 1)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, 9, 7, weight_bits=pack_conv_weight(signs))
    layer.popcount = CountingCalls(layer.popcount)
    inputs = [spike_like(rng, (case.channels, 9, 7), 0.3), spike_like(rng, (case.channels, 9, 7), 0.3)]
    inputs[binary_step] = (rng.random((case.channels, 9, 7)) < 0.4).astype(np.float32)

    out, out_next, events, events_next = layer.pair(*[channels_last(x) for x in inputs])

    assert layer.popcount.calls == 1
    assert (events, events_next) == tuple(np.count_nonzero(x) for x in inputs)
    for x, result in zip(inputs, (out.copy(), out_next.copy())):
        expected, _ = layer(channels_last(x), dense=False)
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("out_features", [1, 10, 17, 64, 65, 130])
@pytest.mark.parametrize("following", ["zero", "same", "grown", "other"])
def test_linear_pair_equals_two_calls(rng, out_features, following):
    in_features = 301
    weight = sign_weights(rng.standard_normal((out_features, in_features)).astype(np.float32))
    scale = rng.uniform(-2, 2, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    layer = prepare_linear(weight, scale, bias)
    x = spike_like(rng, (in_features,), 0.1)
    x_next = second_input(rng, x, following)
    x[:3] = [-0.0, 0.0, 1.0]

    out, out_next, events, events_next = layer.pair(x, x_next)
    out, out_next = out.copy(), out_next.copy()

    for inputs, result in ((x, out), (x_next, out_next)):
        expected, count = layer(inputs)
        np.testing.assert_array_equal(result, expected)
    assert (events, events_next) == (np.count_nonzero(x), np.count_nonzero(x_next))


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("size", [1, 15, 16, 17, 1000])
def test_lif_pair_equals_two_steps(rng, fresh, keep, size):
    tau, threshold = np.float32(0.25), np.float32(0.5)
    current = rng.normal(0.3, 0.6, size).astype(np.float32)
    current_next = rng.normal(0.3, 0.6, size).astype(np.float32)
    # Exactly at the threshold fires; a signed zero and a huge value must pass through unchanged.
    current[: min(size, 3)] = [threshold, -0.0, 3e38][: min(size, 3)]
    stored = rng.normal(0.0, 1.0, size).astype(np.float32)

    membrane = stored.copy()
    spikes, spikes_next = np.empty(size, np.float32), np.empty(size, np.float32)
    fired = _lif_pair_kernel(current, current_next, membrane, tau, threshold, spikes, spikes_next, (0,) if fresh else (),
                             keep)

    expected_membrane = stored.copy()
    expected_spikes, expected_next = np.empty(size, np.float32), np.empty(size, np.float32)
    if fresh:
        first = _lif_first_step_kernel(current, expected_membrane, threshold, expected_spikes)
    else:
        first = _lif_step_kernel(current, expected_membrane, tau, threshold, expected_spikes)
    second = _lif_step_kernel(current_next, expected_membrane, tau, threshold, expected_next)
    assert fired == (first, second)
    # Without keep, the stored potentials stay as they were.
    expected_membrane = expected_membrane if keep else stored
    for got, expected in ((spikes, expected_spikes), (spikes_next, expected_next), (membrane, expected_membrane)):
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))

    # The reference twin agrees with the first step.
    reference_membrane = np.zeros(size, np.float32) if fresh else stored.copy()
    reference_spikes, _ = reference.lif_step(current, reference_membrane, tau, threshold)
    np.testing.assert_array_equal(reference_spikes, expected_spikes)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((7, 9, 17), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((28, 28, 32), (2, 2), (2, 2), (0, 0, 0, 0)),
    ((5, 6, 3), (3, 2), (1, 2), (1, 1, 0, 1)),
])
def test_pool_pair_equals_two_calls(rng, kind, shape, kernel, stride, padding):
    x = spike_like(rng, shape, 0.3)
    x_next = spike_like(rng, shape, 0.3)
    geometry = check_pool2d("test", np.empty((shape[2], shape[0], shape[1]), np.float32), kernel, stride, padding, (1, 1))[1]
    out_shape = (geometry.out_height, geometry.out_width, shape[2])
    single, pair = (max_pool2d_hwc, max_pool2d_hwc_pair) if kind == "max" else (avg_pool2d_hwc, avg_pool2d_hwc_pair)

    out, out_next = pair(x, x_next, geometry, np.empty(out_shape, np.float32), np.empty(out_shape, np.float32))

    for inputs, result in ((x, out), (x_next, out_next)):
        np.testing.assert_array_equal(result, single(inputs, geometry, np.empty(out_shape, np.float32)))


@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 1, 17), (4, 4, 64), (3, 2, 1)])
@pytest.mark.parametrize("out_features", [10, 70])
def test_linear_reads_map_in_flatten_order(rng, shape, out_features):
    """A Linear node reading a channels-last map directly gives the bits of Flatten then Linear, one timestep or two."""
    x, x_next = spike_like(rng, shape, 0.5), spike_like(rng, shape, 0.3)
    x_next[0, 0, 0] = 0.0
    weight = np.where(rng.random((out_features, x.size)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    layer = prepare_linear(weight, scale, bias)
    flat, flat_next = flatten_channels_first(x), flatten_channels_first(x_next)

    expected, expected_events = layer(flat)
    expected = expected.copy()
    got, events = layer(x.reshape(-1), channels=shape[2])
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert events == expected_events

    expected_pair = [array.copy() if isinstance(array, np.ndarray) else array for array in layer.pair(flat, flat_next)]
    got_pair = layer.pair(x.reshape(-1), x_next.reshape(-1), 1, shape[2])
    for got_item, expected_item in zip(got_pair, expected_pair):
        np.testing.assert_array_equal(got_item, expected_item)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    pixels=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    channels=st.sampled_from([1, 2, 3, 17, 63, 64, 65, 130]),
    out_features=st.sampled_from([1, 10, 16, 17, 64, 65, 130]),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    following=st.sampled_from(["zero", "same", "other"]),
    special=st.sampled_from([None, "nan", "negative zero"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_masks_equal_convolution_kernel(pixels, channels, out_features, density, following, special, seed):
    """The linear kernels, which find the non-zero inputs 64 pixels of a channel at a time, against the convolution kernel.

    The maps cross 64 and 128 pixels, and the channel counts 64 and 128; more
    than 64 outputs take several blocks. The convolution kernel reads the
    flattened map as a 1 x 1 image, so it shares no code with the masks.
    """
    rng = np.random.default_rng(seed)
    shape = (*pixels, channels)
    x = spike_like(rng, shape, density)
    x_next = {"zero": np.zeros_like(x), "same": x.copy(), "other": spike_like(rng, shape, density)}[following]
    if special == "nan":
        x[rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(0, channels)] = np.nan
    elif special == "negative zero":
        x[x == 0.0] = -0.0
    weight = np.where(rng.random((out_features, x.size)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    layer = prepare_linear(weight, scale, bias)
    flat, flat_next = flatten_channels_first(x), flatten_channels_first(x_next)
    # The layer reuses its output buffer, so keep copies.
    expected, expected_events = layer(flat, dense=False)
    expected = expected.copy()
    expected_next, expected_events_next = layer(flat_next, dense=False)
    expected_next = expected_next.copy()

    for step_channels, step_x, step_next in ((channels, x.reshape(-1), x_next.reshape(-1)), (1, flat, flat_next)):
        got, events = layer(step_x, channels=step_channels)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        assert events == expected_events
        got, got_next, events, events_next = layer.pair(step_x, step_next, 1, step_channels)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        np.testing.assert_array_equal(got_next.view(np.uint32), expected_next.view(np.uint32))
        assert events == expected_events
        assert events_next == expected_events_next


def test_linear_strided_input_equals_copy(rng):
    """A non-contiguous input gives the bits of its contiguous copy: the kernels' vector loads ignore strides."""
    weight = np.where(rng.random((10, 70)) < 0.5, -1.0, 1.0).astype(np.float32)
    layer = prepare_linear(weight, np.ones(10, np.float32), np.zeros(10, np.float32))
    wide = spike_like(rng, (2, 70), 0.5)
    strided = wide.T.reshape(-1)[::2]
    assert not strided.flags.c_contiguous
    for channels in (1, 2, 35):
        expected, expected_events = layer(np.ascontiguousarray(strided), channels=channels)
        expected = expected.copy()
        got, events = layer(strided, channels=channels)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        assert events == expected_events
        got_pair = layer.pair(strided, strided, 1, channels)
        np.testing.assert_array_equal(got_pair[0].view(np.uint32), expected.view(np.uint32))
        np.testing.assert_array_equal(got_pair[1].view(np.uint32), expected.view(np.uint32))


def test_flatten_pair_equals_two_calls(rng):
    x, x_next = spike_like(rng, (7, 5, 3), 0.5), spike_like(rng, (7, 5, 3), 0.5)
    out, out_next = np.empty(105, np.float32), np.empty(105, np.float32)
    _flatten_pair_kernel(x, x_next, out, out_next)
    np.testing.assert_array_equal(out, flatten_channels_first(x))
    np.testing.assert_array_equal(out_next, flatten_channels_first(x_next))


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 3, 16, 33]),
    group_out=st.sampled_from([1, 5, 16, 17, 65]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    following=st.sampled_from([None, "zero", "grown", "other", "itself"]),
    fresh=st.booleans(),
    keep=st.booleans(),
    binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_fire_equals_conv_then_lif(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, density, following, fresh, keep, binary,
    seed,
):
    """The convolution with its LIF neurons fused gives the spikes, potentials and counts of the two run apart."""
    case = fitting_case(groups, group_channels, group_out, kernel, stride, dilation, padding, extra)
    height, width = case.height, case.width
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    inputs = [channels_last(x)]
    if following == "itself":
        inputs.append(inputs[0])  # a time-invariant layer: the layer runs once, its neurons twice
    elif following is not None:
        inputs.append(channels_last(second_input(rng, x, following)))
    signs = sign_weights(weight) if binary else weight
    geometry = check_float_conv2d("test", x, signs, scale, bias, stride, padding, dilation, groups)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, height, width)
    tau, threshold = np.float32(0.25), np.float32(0.5)
    stored = rng.normal(0.0, 1.0, layer.out.shape).astype(np.float32)

    membrane = stored.copy()
    spikes = [np.full(layer.out.shape, np.nan, np.float32) for _ in range(2)]
    counts = layer.fire(*inputs, *([None] if following is None else []), (membrane, tau, threshold, *spikes), fresh,
                        keep=keep)

    expected_membrane = stored.copy().reshape(-1)
    for step, inputs_now in enumerate(inputs):
        current, events = layer(inputs_now)
        expected = np.empty(current.size, np.float32)
        if step == 0 and fresh:
            fired = _lif_first_step_kernel(current.reshape(-1), expected_membrane, threshold, expected)
        else:
            fired = _lif_step_kernel(current.reshape(-1), expected_membrane, tau, threshold, expected)
        np.testing.assert_array_equal(spikes[step].reshape(-1).view(np.uint32), expected.view(np.uint32))
        assert (counts[step], counts[2 + step]) == (events, fired)
    if keep:
        np.testing.assert_array_equal(membrane.reshape(-1).view(np.uint32), expected_membrane.view(np.uint32))
    if following is None:
        assert counts[1] == counts[3] == 0


@settings(derandomize=True, max_examples=80, deadline=None)
@given(
    groups=st.integers(1, 3),
    group_channels=st.sampled_from([1, 3, 16, 33]),
    group_out=st.sampled_from([1, 5, 16, 17, 65]),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    pool=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    following=st.sampled_from([None, "zero", "grown", "other", "itself"]),
    threads=st.sampled_from([1, 2]),
    fresh=st.booleans(),
    keep=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fire_pooled_equals_fire_then_pool(
    groups, group_channels, group_out, kernel, stride, dilation, padding, extra, pool, density, following, threads,
    fresh, keep, seed,
):
    """Pooling the spikes row by row inside the kernel gives the pooled maps, potentials and counts of fire then pool.

    On one thread the kernel keeps only pool_h output rows of spikes. The
    rows that no pooling window covers (an odd last row under 2 x 2) still
    update their membrane potentials.
    """
    case = fitting_case(groups, group_channels, group_out, kernel, stride, dilation, padding, extra)
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    inputs = [channels_last(x)]
    if following == "itself":
        inputs.append(inputs[0])  # a time-invariant layer: the layer runs once, its neurons twice
    elif following is not None:
        inputs.append(channels_last(second_input(rng, x, following)))
    signs = sign_weights(weight)
    geometry = check_float_conv2d("test", x, signs, scale, bias, stride, padding, dilation, groups)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, case.height, case.width)
    out_height, out_width, out_channels = layer.out.shape
    kernel_h, kernel_w = pool
    if out_height < kernel_h or out_width < kernel_w:
        return
    pooled_shape = (out_height // kernel_h, out_width // kernel_w, out_channels)
    tau, threshold = np.float32(0.25), np.float32(0.5)
    stored = rng.normal(0.0, 1.0, layer.out.shape).astype(np.float32)

    membrane = stored.copy()
    spikes = [np.full(layer.out.shape, np.nan, np.float32) for _ in range(2)]
    pooled = [np.full(pooled_shape, np.nan, np.float32) for _ in range(2)]
    rows = [np.full((kernel_h, out_width, out_channels), np.nan, np.float32) for _ in range(2)]
    arguments = (membrane, tau, threshold, *spikes)
    counts = layer.fire(*inputs, *([None] if following is None else []), arguments, fresh, threads, keep,
                        (kernel_h, kernel_w, *pooled, *rows))

    expected_membrane = stored.copy()
    expected_spikes = [np.empty(layer.out.shape, np.float32) for _ in range(2)]
    expected_counts = layer.fire(*inputs, *([None] if following is None else []),
                                 (expected_membrane, tau, threshold, *expected_spikes), fresh)
    assert counts == expected_counts
    for step in range(len(inputs)):
        expected = np.empty(pooled_shape, np.float32)
        _max_pool2d_kernel(expected_spikes[step], kernel_h, kernel_w, kernel_h, kernel_w, 0, 0, 1, 1, expected)
        np.testing.assert_array_equal(pooled[step].view(np.uint32), expected.view(np.uint32))
    if keep:
        np.testing.assert_array_equal(membrane.view(np.uint32), expected_membrane.view(np.uint32))
