"""Accuracy, per-class accuracy and confusion matrix of an engine on a labelled data set."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .engine import Engine
from .errors import InputError


@dataclass
class EvalResult:
    """Scores and summary of one evaluation run; ``scores`` is (n, classes) float32."""

    labels: tuple[str, ...]
    targets: np.ndarray
    scores: np.ndarray
    seconds: float
    layer_stats: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.targets)

    @property
    def predictions(self) -> np.ndarray:
        return self.scores.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.targets).mean()) if self.n else 0.0

    @property
    def confusion(self) -> np.ndarray:
        """Counts (classes, classes): row = true class, column = predicted class."""
        classes = len(self.labels)
        matrix = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(matrix, (self.targets, self.predictions), 1)
        return matrix

    @property
    def per_class_accuracy(self) -> dict[str, float | None]:
        matrix = self.confusion
        totals = matrix.sum(axis=1)
        return {
            label: (float(matrix[i, i] / totals[i]) if totals[i] else None)
            for i, label in enumerate(self.labels)
        }

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion.tolist(),
            "labels": list(self.labels),
            "seconds": round(self.seconds, 3),
            "ms_per_sample": round(1000.0 * self.seconds / self.n, 3) if self.n else None,
            "layer_stats": self.layer_stats,
        }


def normalise_images(images: np.ndarray, engine: Engine) -> np.ndarray:
    """Map uint8 images (N, H, W) or (N, C, H, W) to the model's normalised float32 input."""
    spec = engine.input_spec
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None, :, :]
    if array.shape[1:] != spec.shape:
        raise InputError(
            f"images have shape {array.shape[1:]} each, but the model expects {spec.shape}; "
            "use a data set of the model's input size"
        )
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    return ((array.astype(np.float32) / np.float32(255.0)) - mean) / std


def evaluate(engine: Engine, images: np.ndarray, targets: np.ndarray, progress: bool = False) -> EvalResult:
    """Classify every image with ``engine`` and compare with the integer ``targets``."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(images) != len(targets):
        raise InputError(f"{len(images)} images but {len(targets)} labels; they must be the same count")
    classes = len(engine.labels)
    if len(targets) and (targets.min() < 0 or targets.max() >= classes):
        raise InputError(f"labels must be in [0, {classes - 1}] for this model, got {targets.min()}..{targets.max()}")

    inputs = normalise_images(images, engine)
    engine.reset_stats()
    started = time.perf_counter()
    scores = engine.predict_batch(inputs, progress=progress)
    seconds = time.perf_counter() - started
    return EvalResult(engine.labels, targets, scores, seconds, engine.layer_stats())


def evaluate_recordings(engine: Engine, recordings: list[np.ndarray], targets: np.ndarray, progress: bool = False) -> EvalResult:
    """Classify each event recording with ``engine.predict_events`` and compare with ``targets``."""
    from tqdm import tqdm

    targets = np.asarray(targets, dtype=np.int64)
    if len(recordings) != len(targets):
        raise InputError(f"{len(recordings)} recordings but {len(targets)} labels; they must be the same count")
    engine.reset_stats()
    started = time.perf_counter()
    scores = np.stack([
        engine.predict_events(events)
        for events in tqdm(recordings, disable=not progress, unit="recording", desc="predict")
    ]) if recordings else np.zeros((0, len(engine.labels)), np.float32)
    seconds = time.perf_counter() - started
    return EvalResult(engine.labels, targets, scores, seconds, engine.layer_stats())
