"""The saccade simulator: N-MNIST-like event counts, timing and layout from still digits."""

import numpy as np
import pytest

from reverb_edge.errors import InputError
from reverb_edge.events import EVENT_DTYPE
from reverb_edge.events.simulator import SaccadeSimulator, simulate_saccades


def _digit() -> np.ndarray:
    """A synthetic '1': a bright vertical bar on black, 28×28."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255
    return image


def test_simulator_output_layout(rng):
    events = simulate_saccades(_digit(), rng)
    assert events.dtype == EVENT_DTYPE
    assert len(events) > 500
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["x"].min() >= 0
    assert events["x"].max() < 34
    assert events["y"].min() >= 0
    assert events["y"].max() < 34
    assert set(np.unique(events["p"])) == {0, 1}


def test_simulator_three_saccades(rng):
    events = simulate_saccades(_digit(), rng, SaccadeSimulator(noise_rate_hz=0.0))
    assert events["t"].max() < 300_000
    counts, _ = np.histogram(events["t"], bins=[0, 100_000, 200_000, 300_000])
    assert np.all(counts > 100)
    # Each saccade starts and ends slowly, so its middle third has the most events.
    first = events["t"][events["t"] < 100_000]
    middle = np.count_nonzero((first >= 33_000) & (first < 67_000))
    assert middle > len(first) / 3


def test_simulator_polarity_follows_motion(rng):
    simulator = SaccadeSimulator(noise_rate_hz=0.0, jitter=0.0, path=((0.0, 0.0), (4.0, 0.0)))
    events = simulate_saccades(_digit(), rng, simulator)
    on = events[events["p"] == 1]
    off = events[events["p"] == 0]
    # Moving right, the bar's leading (right) edge brightens and its trailing edge darkens.
    assert on["x"].mean() > off["x"].mean()


def test_simulator_black_image_gives_only_noise(rng):
    quiet = simulate_saccades(np.zeros((28, 28), np.uint8), rng, SaccadeSimulator(noise_rate_hz=0.0))
    assert len(quiet) == 0
    assert quiet.dtype == EVENT_DTYPE
    noisy = simulate_saccades(np.zeros((28, 28), np.uint8), rng, SaccadeSimulator(noise_rate_hz=10.0))
    assert 0 < len(noisy) < 34 * 34 * 10


def test_simulator_is_reproducible():
    first = simulate_saccades(_digit(), np.random.default_rng(5))
    second = simulate_saccades(_digit(), np.random.default_rng(5))
    np.testing.assert_array_equal(first, second)


def test_simulator_rejects_large_image(rng):
    with pytest.raises(InputError, match="no larger than the sensor"):
        simulate_saccades(np.zeros((40, 40), np.uint8), rng)


def test_simulator_rejects_bad_parameters():
    with pytest.raises(InputError, match="step_us"):
        SaccadeSimulator(step_us=0)
    with pytest.raises(InputError, match="threshold"):
        SaccadeSimulator(threshold=0.0)


def test_simulator_event_rate_like_nmnist(mnist_dir):
    from reverb_edge.datasets import load_mnist

    images, _ = load_mnist(mnist_dir, split="test")
    rng = np.random.default_rng(0)
    counts = [len(simulate_saccades(images[i], rng)) for i in range(20)]
    # Real N-MNIST recordings average about 4,000 events; the defaults are tuned to that.
    assert 2_500 < np.mean(counts) < 6_000
