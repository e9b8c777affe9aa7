"""The shipped N-MNIST model on the real recordings: accuracy, and the engine against PyTorch."""

import numpy as np
import pytest

from conftest import data_root

torch = pytest.importorskip("torch")

from reverb_edge import Engine  # noqa: E402
from reverb_edge.converters.parity import torch_scores  # noqa: E402
from reverb_edge.events.nmnist import load_nmnist  # noqa: E402
from reverb_edge.registry import resolve_checkpoint  # noqa: E402

# Engine and PyTorch sum float32 values in different orders, so a membrane potential within
# rounding of the threshold may fire on one side only. Logits are compared with this tolerance.
LOGIT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def real_test():
    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    return load_nmnist(folder, "test")


@pytest.fixture(scope="module")
def scores(real_test):
    recordings, labels = real_test
    engine = Engine.load("nmnist")
    engine_scores = np.stack([engine.predict_events(events) for events in recordings])
    frames = np.stack([engine.events_to_frames(events) for events in recordings])
    return labels, engine_scores, torch_scores(resolve_checkpoint("nmnist"), frames)


def test_nmnist_real_test_accuracy(scores):
    labels, engine_scores, _ = scores
    assert len(labels) == 100
    assert (engine_scores.argmax(axis=1) == labels).mean() >= 0.95


def test_nmnist_engine_agrees_with_torch(scores):
    _, engine_scores, torch_logits = scores
    assert (engine_scores.argmax(axis=1) == torch_logits.argmax(axis=1)).all()
    close = np.all(np.abs(engine_scores - torch_logits) <= LOGIT_TOLERANCE * (1 + np.abs(torch_logits)), axis=1)
    assert close.mean() >= 0.98
