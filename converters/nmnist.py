"""Training data and training loop for an N-MNIST ReverB-SNN.

Only a few hundred real N-MNIST recordings are available here, so training
mixes two sources, both binned into ``timesteps`` frames of (2, 34, 34)
event counts (OFF, ON) with ``n_time_bins``:

- MNIST training digits moved by :mod:`reverb_edge.events.simulator`, which
  imitates the three-saccade recording of N-MNIST;
- the real N-MNIST training recordings, repeated ``real_repeats`` times per epoch.

Accuracy is reported separately on the real test and training recordings.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reverb_edge.datasets import load_mnist
from reverb_edge.events.frames import to_frames
from reverb_edge.events.nmnist import load_nmnist
from reverb_edge.events.simulator import SaccadeSimulator, simulate_saccades

from .layers import LIF
from .model import ConvNetConfig, build_convnet, save_checkpoint
from .train import check_finite_loss, check_rate_penalty, with_rate_penalty

logger = logging.getLogger(__name__)

SENSOR_SIZE = (34, 34, 2)
# Each N-MNIST recording is three saccades of about 100 ms.
RECORDING_US = 300_000


def bin_recording(events: np.ndarray, timesteps: int) -> np.ndarray:
    """Return ``timesteps`` frames (T, 2, 34, 34) of event counts, uint8, saturating at 255."""
    frames = to_frames(events, SENSOR_SIZE, n_time_bins=timesteps, dtype=np.float32)
    return np.minimum(frames, 255).astype(np.uint8)


def _simulate_chunk(args) -> np.ndarray:
    images, seed, timesteps = args
    rng = np.random.default_rng(seed)
    simulator = SaccadeSimulator()
    return np.stack([bin_recording(simulate_saccades(image, rng, simulator), timesteps) for image in images])


def simulate_dataset(images: np.ndarray, timesteps: int, seed: int, workers: int = 2, chunk: int = 500) -> np.ndarray:
    """Simulate an N-MNIST recording for every image; return uint8 frames (N, T, 2, 34, 34)."""
    jobs = [(images[i:i + chunk], seed * 100_003 + i, timesteps) for i in range(0, len(images), chunk)]
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for frames in tqdm(pool.map(_simulate_chunk, jobs), total=len(jobs), desc="simulate", unit="chunk"):
            results.append(frames)
    return np.concatenate(results) if results else np.zeros((0, timesteps, 2, 34, 34), np.uint8)


def load_real_split(folder: str | Path, split: str, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    """Read and bin the real recordings of one split; return uint8 frames and labels."""
    recordings, labels = load_nmnist(folder, split)
    return np.stack([bin_recording(events, timesteps) for events in recordings]), labels


def _shift_frames(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each recording's frames (B, T, C, H, W) by up to ``max_shift`` pixels, filling with 0."""
    if max_shift == 0:
        return x
    batch, _, _, height, width = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (batch,), generator=generator)
    return torch.stack([padded[i, ..., dy[i]:dy[i] + height, dx[i]:dx[i] + width] for i in range(batch)])


@dataclass
class NmnistResult:
    """Accuracies on the real recordings and the training time."""

    real_test_accuracy: float
    real_train_accuracy: float
    seconds: float
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def accuracy(model, frames: np.ndarray, labels: np.ndarray, batch_size: int = 100) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(frames), batch_size):
        x = torch.from_numpy(frames[start:start + batch_size].astype(np.float32))
        correct += int((model(x).argmax(dim=1) == torch.from_numpy(labels[start:start + batch_size])).sum())
    return correct / max(len(frames), 1)


def train_nmnist(
    mnist_dir: str | Path,
    nmnist_dir: str | Path,
    output: str | Path,
    *,
    simulated: int = 16_000,
    real_repeats: int = 8,
    timesteps: int = 6,
    channels: tuple[int, int, int] = (32, 32, 64),
    epochs: int = 4,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    max_shift: int = 2,
    seed: int = 0,
    workers: int = 2,
    threads: int | None = None,
    rate_penalty: float = 0.0,
) -> NmnistResult:
    """Train on simulated plus real recordings and save a checkpoint to ``output``.

    ``rate_penalty`` adds a firing-rate term to the loss, as in
    :func:`reverb_edge.converters.train.train`.
    """
    check_rate_penalty(rate_penalty)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    images, image_labels = load_mnist(mnist_dir, split="train")
    pick = np.random.default_rng(seed).permutation(len(images))[:simulated]
    sim_frames = simulate_dataset(images[pick], timesteps, seed, workers=workers)
    sim_labels = image_labels[pick].astype(np.int64)
    real_train, real_train_labels = load_real_split(nmnist_dir, "train", timesteps)
    real_test, real_test_labels = load_real_split(nmnist_dir, "test", timesteps)
    logger.info("data ready: %d simulated, %d real train, %d real test recordings in %.0f s",
                len(sim_frames), len(real_train), len(real_test), time.perf_counter() - started)

    frames = np.concatenate([sim_frames] + [real_train] * real_repeats)
    labels = np.concatenate([sim_labels] + [real_train_labels] * real_repeats)

    config = ConvNetConfig(
        channels=channels, timesteps=timesteps, in_channels=2, image_size=34, mean=0.0, std=1.0,
        name="nmnist-convnet", event_window_us=RECORDING_US,
    )
    model = build_convnet(config)
    neurons = [module for module in model.modules() if isinstance(module, LIF)]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = (len(frames) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=epochs * steps)

    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(frames), generator=generator).numpy()
        running = 0.0
        running_cross_entropy = 0.0
        running_rates = np.zeros(len(neurons))
        for step in tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False):
            index = order[step * batch_size:(step + 1) * batch_size]
            x = _shift_frames(torch.from_numpy(frames[index].astype(np.float32)), max_shift, generator)
            cross_entropy = F.cross_entropy(model(x), torch.from_numpy(labels[index]))
            loss, rates = with_rate_penalty(cross_entropy, neurons, rate_penalty)
            check_finite_loss(loss, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
            running_cross_entropy += float(cross_entropy.detach())
            running_rates += rates
        test_accuracy = accuracy(model, real_test, real_test_labels)
        # Firing rates: the mean over the epoch's training batches, as in train().
        history.append({"epoch": epoch, "loss": running / steps, "cross_entropy": running_cross_entropy / steps,
                        "real_test_accuracy": test_accuracy,
                        "train_firing_rates": [round(float(rate), 4) for rate in running_rates / steps],
                        "seconds": round(time.perf_counter() - started, 1)})
        logger.info("epoch %d: loss %.4f, real test accuracy %.4f", epoch, running / steps, test_accuracy)

    result = NmnistResult(
        real_test_accuracy=accuracy(model, real_test, real_test_labels),
        real_train_accuracy=accuracy(model, real_train, real_train_labels),
        seconds=time.perf_counter() - started,
        history=history,
    )
    save_checkpoint(output, model, config, {
        "real_test_accuracy": result.real_test_accuracy, "real_train_accuracy": result.real_train_accuracy,
        "simulated": simulated, "real_repeats": real_repeats, "epochs": epochs, "seed": seed,
        "rate_penalty": rate_penalty,
        "seconds": round(result.seconds, 1),
    })
    return result
