"""ResNet-20 with random binary weights: the paper-scale network of the benchmarks converts and runs exactly."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reverb_edge import Engine  # noqa: E402
from reverb_edge.converters import export_model  # noqa: E402
from reverb_edge.converters.parity import torch_scores  # noqa: E402
from reverb_edge.converters.resnet import resnet20  # noqa: E402


@pytest.fixture(scope="module")
def network():
    return resnet20(seed=3)


@pytest.fixture(scope="module")
def engine(network, tmp_path_factory):
    return Engine.load(export_model(network, tmp_path_factory.mktemp("resnet") / "resnet20.reverb"))


def random_images(engine, count, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.random((count, *engine.input_spec.shape), dtype=np.float32)
    mean = np.asarray(engine.input_spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(engine.input_spec.std, np.float32).reshape(-1, 1, 1)
    return (pixels - mean) / std


def test_resnet20_layout(engine):
    graph = engine.graph
    assert engine.input_spec.shape == (3, 32, 32)
    assert sum(node.type_name == "Conv2d" for node in graph.nodes) == 21  # 19 of 3 x 3, 2 shortcuts of 1 x 1
    assert sum(node.type_name == "Add" for node in graph.nodes) == 9
    assert all(node.weight_format == "binary" for node in graph.nodes if node.type_name in ("Conv2d", "Linear"))


def test_resnet20_engine_matches_torch(network, engine):
    inputs = random_images(engine, 8, seed=1)
    np.testing.assert_allclose(engine.predict_batch(inputs), torch_scores(network, inputs), rtol=1e-4, atol=1e-4)


def test_resnet20_firing_rates_realistic(engine):
    engine.reset_stats()
    engine.predict_batch(random_images(engine, 4, seed=2))
    rates = [stats["firing_rate"] for stats in engine.layer_stats() if stats["firing_rate"] is not None]
    assert len(rates) == 19
    assert all(0.05 < rate < 0.8 for rate in rates), rates


def test_resnet20_same_seed_same_weights():
    first, second = resnet20(seed=5, calibration_batches=1), resnet20(seed=5, calibration_batches=1)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
