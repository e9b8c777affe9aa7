"""Parity on real data: the shipped model in the engine against its PyTorch checkpoint, full MNIST test set."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reverb_edge import Engine  # noqa: E402
from reverb_edge.converters.parity import torch_scores  # noqa: E402
from reverb_edge.datasets import load_mnist  # noqa: E402
from reverb_edge.evaluation import normalise_images  # noqa: E402
from reverb_edge.registry import resolve_checkpoint  # noqa: E402

# Logits are means of float32 sums that the engine and PyTorch's convolution take in
# different orders. A membrane potential within ~1e-6 of the threshold can therefore
# fire on one side only. So logits must agree within LOGIT_TOLERANCE for at least
# CLOSE_FRACTION of the images, and the argmax for at least AGREEMENT of them.
LOGIT_TOLERANCE = 1e-3
CLOSE_FRACTION = 0.995
AGREEMENT = 0.999


@pytest.fixture(scope="module")
def scores(mnist_dir):
    images, labels = load_mnist(mnist_dir, split="test")
    engine = Engine.load("mnist")
    inputs = normalise_images(images, engine)
    return labels, engine.predict_batch(inputs), torch_scores(resolve_checkpoint("mnist"), inputs)


def test_parity_full_test_set_argmax(scores):
    labels, engine_scores, torch_logits = scores
    assert len(labels) == 10_000
    agreement = (engine_scores.argmax(axis=1) == torch_logits.argmax(axis=1)).mean()
    assert agreement >= AGREEMENT


def test_parity_full_test_set_accuracy(scores):
    labels, engine_scores, torch_logits = scores
    engine_accuracy = (engine_scores.argmax(axis=1) == labels).mean()
    torch_accuracy = (torch_logits.argmax(axis=1) == labels).mean()
    assert abs(engine_accuracy - torch_accuracy) <= 0.001
    assert engine_accuracy >= 0.99


def test_parity_full_test_set_logits(scores):
    _, engine_scores, torch_logits = scores
    close = np.all(np.abs(engine_scores - torch_logits) <= LOGIT_TOLERANCE * (1 + np.abs(torch_logits)), axis=1)
    assert close.mean() >= CLOSE_FRACTION
