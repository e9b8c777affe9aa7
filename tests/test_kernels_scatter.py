"""The scatter kernel against the gather kernel, on awkward shapes and on real N-MNIST spikes.

``_conv2d_scatter`` must give the bits of ``_conv2d_pairs``, whose own tests
compare it with the NumPy reference twins. That holds for every layer it can
serve, and for all it computes: the currents, the spikes, the membrane
potentials, the pooled spikes and the counts, for one timestep or two. The
hypothesis test drives the kernel directly over input channel counts from
1 to 70: below 16 it finds the non-zero inputs of a row 64 values at a
time, from 16 one pixel at a time.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge import Engine, reference
from reverb_edge.datasets import load_mnist
from reverb_edge.events.nmnist import load_nmnist
from reverb_edge.kernels.checks import check_float_conv2d
from reverb_edge.kernels.conv import PreparedConv2d
from reverb_edge.kernels.scatter import SCATTER_BLOCK, _count_events, scatter_buffers, scatter_eligible, scatter_weights

from conftest import data_root
from helpers import CountingCalls
from test_kernels import ConvCase, assert_within, conv_inputs, conv_magnitude, pack_conv_weight, sign_weights, spike_like, sum_tolerance
from test_timestep_pairs import channels_last, second_input


def layer_pair(case: ConvCase, signs, scale, bias) -> tuple[PreparedConv2d, PreparedConv2d]:
    """Return the same layer twice: one that scatters whatever its channel counts, one that gathers."""
    geometry = check_float_conv2d("test", np.empty((case.channels, case.height, case.width), np.float32), signs, scale,
                                  bias, 1, case.padding, 1, 1)[4]
    scattering = PreparedConv2d(signs, scale, bias, geometry, case.height, case.width)
    scattering.scatter = (scatter_weights(scattering.rows), *scatter_buffers(case.width, case.channels))
    gathering = PreparedConv2d(signs, scale, bias, geometry, case.height, case.width)
    gathering.scatter = None
    return scattering, gathering


def pooling(layer: PreparedConv2d) -> tuple:
    """Return the (kh, kw, pooled, pooled_next, rows, rows_next) argument of ``fire`` for a 2 x 2 max pooling."""
    out_height, out_width, out_channels = layer.out.shape
    pooled = [np.full((out_height // 2, out_width // 2, out_channels), np.nan, np.float32) for _ in range(2)]
    rows = [np.full((2, out_width, out_channels), np.nan, np.float32) for _ in range(2)]
    return (2, 2, *pooled, *rows)


def assert_bits(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@settings(derandomize=True, max_examples=120, deadline=None)
@given(
    channels=st.sampled_from([1, 2, 15, 16, 17, 33, 64, 70]),
    out_channels=st.sampled_from([1, 5, 16, 17, 31, 32]),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    following=st.sampled_from([None, "zero", "same", "grown", "other"]),
    neurons=st.sampled_from(["none", "fire", "fire and pool"]),
    fresh=st.booleans(),
    keep=st.booleans(),
    binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_scatter_equals_gather(channels, out_channels, padding, extra, density, following, neurons, fresh, keep, binary,
                               seed):
    height = max(1, 3 - padding[0] - padding[1]) + extra[0]
    width = max(1, 3 - padding[2] - padding[3]) + extra[1]
    case = ConvCase(channels, out_channels, 1, height, width, (3, 3), padding=padding)
    rng = np.random.default_rng(seed)
    x, weight, scale, bias = conv_inputs(rng, case, density)
    inputs = [channels_last(x)]
    if following is not None:
        inputs.append(channels_last(second_input(rng, x, following)))
    signs = sign_weights(weight) if binary else weight
    scattering, gathering = layer_pair(case, signs, scale, bias)
    out_shape = scattering.out.shape

    if neurons == "none":
        if len(inputs) == 2:
            got = [array.copy() if isinstance(array, np.ndarray) else array for array in scattering.pair(*inputs)]
            expected = gathering.pair(*inputs)
        else:
            got = [array.copy() if isinstance(array, np.ndarray) else array for array in scattering(inputs[0])]
            expected = gathering(inputs[0])
        for got_item, expected_item in zip(got, expected):
            if isinstance(got_item, np.ndarray):
                assert_bits(got_item, expected_item)
            else:
                assert got_item == expected_item
        for x_now, current in zip(inputs, got[: len(inputs)]):
            chw = x_now.transpose(2, 0, 1)
            want = reference.float_conv2d(chw, signs, scale, bias, **case.options())
            tolerance = sum_tolerance(conv_magnitude(case, chw, signs, scale, bias), case.fan_in)
            assert_within(current.transpose(2, 0, 1), want, tolerance)
        return

    if neurons == "fire and pool" and (out_shape[0] < 2 or out_shape[1] < 2):
        neurons = "fire"
    tau, threshold = np.float32(0.25), np.float32(0.5)
    stored = rng.normal(0.0, 1.0, out_shape).astype(np.float32)
    results = []
    for layer in (scattering, gathering):
        membrane = stored.copy()
        spikes = [np.full(out_shape, np.nan, np.float32) for _ in range(2)]
        pool = pooling(layer) if neurons == "fire and pool" else None
        counts = layer.fire(*inputs, *([None] if len(inputs) == 1 else []), (membrane, tau, threshold, *spikes), fresh,
                            keep=keep, pool=pool)
        outputs = list(pool[2:4]) if pool is not None else spikes
        results.append((counts, membrane, outputs[: len(inputs)]))

    (got_counts, got_membrane, got_outputs), (counts, membrane, outputs) = results
    assert got_counts == counts
    assert got_counts[: len(inputs)] == tuple(np.count_nonzero(x_now) for x_now in inputs)
    if keep:
        assert_bits(got_membrane, membrane)
    for got_output, output in zip(got_outputs, outputs):
        assert_bits(got_output, output)


def test_scatter_buffers_stay_clean(rng):
    """A call leaves its rings' output columns zero, so calls after it (and after a NaN input) are exact."""
    case = ConvCase(32, 20, 1, 6, 7, (3, 3), padding=(1, 1, 1, 1))
    x, weight, scale, bias = conv_inputs(rng, case, 0.3)
    scattering, gathering = layer_pair(case, sign_weights(weight), scale, bias)
    poisoned = channels_last(x)
    poisoned[2, 3, 5] = np.nan
    poisoned[4, 0, 0] = np.inf
    for x_now in (poisoned, channels_last(spike_like(rng, (32, 6, 7), 0.2)), poisoned):
        got = scattering(x_now)[0].copy()
        assert_bits(got, gathering(x_now)[0])
    assert np.isnan(got).any()


def test_scatter_gives_way_to_popcount(rng):
    """With a popcount kernel, a 0/1 input dense enough for it still takes popcounts on the plan."""
    case = ConvCase(32, 20, 1, 9, 7, (3, 3), padding=(1, 1, 1, 1))
    _, weight, scale, bias = conv_inputs(rng, case, 1.0)
    signs = sign_weights(weight)
    geometry = check_float_conv2d("test", np.empty((32, 9, 7), np.float32), signs, scale, bias, 1, case.padding, 1, 1)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, 9, 7, weight_bits=pack_conv_weight(signs))
    assert layer.scatter is not None
    layer.popcount = CountingCalls(layer.popcount)
    binary = channels_last((rng.random((32, 9, 7)) < 0.4).astype(np.float32))
    spikes = channels_last(spike_like(rng, (32, 9, 7), 0.3))

    layer(spikes)
    assert layer.popcount.calls == 0
    out, events = layer(binary)
    assert layer.popcount.calls == 1
    assert events == np.count_nonzero(binary)
    np.testing.assert_array_equal(out, layer(binary, dense=False)[0])


@pytest.mark.parametrize("kernel,stride,dilation,groups,padding,expected", [
    ((3, 3), (1, 1), (1, 1), 1, (1, 1, 1, 1), True),
    ((3, 3), (1, 1), (1, 1), 1, (0, 2, 2, 0), True),
    ((3, 3), (2, 2), (1, 1), 1, (1, 1, 1, 1), False),
    ((3, 3), (1, 1), (2, 2), 1, (1, 1, 1, 1), False),
    ((3, 3), (1, 1), (1, 1), 2, (1, 1, 1, 1), False),
    ((3, 3), (1, 1), (1, 1), 1, (3, 1, 1, 1), False),
    ((1, 1), (1, 1), (1, 1), 1, (0, 0, 0, 0), False),
    ((5, 5), (1, 1), (1, 1), 1, (2, 2, 2, 2), False),
])
def test_scatter_eligible_geometry(kernel, stride, dilation, groups, padding, expected):
    assert scatter_eligible(kernel, stride, dilation, groups, padding) is expected


@pytest.mark.parametrize("channels", [1, 3])
def test_scatter_weights_are_a_copy(channels):
    """With one input channel the reordered rows are contiguous already, yet they must not share the rows' memory."""
    rows = np.arange(9 * channels * 16, dtype=np.float32).reshape(1, 3, 3, channels, 16)
    weights = scatter_weights(rows)
    assert not np.may_share_memory(weights, rows)
    np.testing.assert_array_equal(weights, rows[0].transpose(2, 0, 1, 3))


def test_engine_picks_scatter_by_outputs():
    """The shipped N-MNIST model scatters into its two 32-channel layers, not into the one with 64 outputs."""
    engine = Engine.load("nmnist")
    picked = {name: executor.layer.scatter is not None for name, executor in engine._executors.items()
              if isinstance(getattr(executor, "layer", None), PreparedConv2d)}
    assert picked == {"layers.0": True, "layers.3": True, "layers.7": False}
    for name in ("layers.0", "layers.3"):
        assert engine._executors[name].layer.geometry.out_channels <= SCATTER_BLOCK
    assert engine._executors["layers.7"].layer.geometry.out_channels > SCATTER_BLOCK


def without_scatter(engine: Engine) -> Engine:
    for executor in engine._executors.values():
        if isinstance(getattr(executor, "layer", None), PreparedConv2d):
            executor.layer.scatter = None
    return engine


def test_real_nmnist_scatter_equals_gather():
    """On real N-MNIST recordings, both engine paths and the program give the gather kernel's scores and statistics."""
    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    recordings, _ = load_nmnist(folder, "test", limit=25)
    scattering = Engine.load("nmnist")
    gathering = without_scatter(Engine.load("nmnist"))
    for recording in recordings:
        for event_driven in (False, True):
            assert_bits(scattering.predict_events(recording, event_driven=event_driven),
                        gathering.predict_events(recording, event_driven=event_driven))
    assert scattering.layer_stats() == gathering.layer_stats()
    assert scattering.stats["layers.3"].input_events > 0


def test_real_mnist_scatter_equals_gather(mnist_dir):
    """On real MNIST digits, predict and predict_frames give the gather kernel's scores and statistics."""
    scattering = Engine.load("mnist")
    gathering = without_scatter(Engine.load("mnist"))
    images, _ = load_mnist(mnist_dir, "test")
    for image in (scattering.preprocess(image) for image in images[:60]):
        assert_bits(scattering.predict(image), gathering.predict(image))
        assert_bits(scattering.predict_frames(np.stack([image] * 4)), gathering.predict_frames(np.stack([image] * 4)))
    assert scattering.layer_stats() == gathering.layer_stats()


@pytest.mark.parametrize("shape", [(34, 34, 32), (5, 7, 3), (1, 1, 17), (1, 1, 1)])
def test_count_events_matches_numpy(rng, shape):
    """The popcount test's counts: non-zero values (NaN included) and exact ones, with a tail of fewer than 16."""
    x = spike_like(rng, shape, 0.3)
    flat = x.reshape(-1)
    flat[rng.random(flat.size) < 0.2] = 1.0
    flat[0] = np.nan
    flat[-1] = 1.0
    if flat.size > 2:
        flat[1] = np.nextafter(np.float32(1.0), np.float32(2.0))

    events, ones = _count_events(x)

    assert events == np.count_nonzero(x)
    assert ones == np.count_nonzero(x == 1.0)
