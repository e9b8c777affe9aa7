"""ResNet-20 as a ReverB-SNN, the paper-scale network of the benchmarks.

The layout is the ResNet-20 for 32 × 32 × 3 images (CIFAR-10) of He, Zhang,
Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016). A
3 × 3 convolution with 16 channels comes first. Three stages of three basic
blocks follow, with 16, 32 and 64 channels, and the first block of stages two
and three halves the resolution. Global average pooling and a linear readout
of 10 classes end it. Every convolution and the readout have binary weights,
and each convolution is followed by BatchNorm. LIF neurons stand where ResNet
has ReLU: after the first convolution of each block, and after the sum of a
block and its shortcut. Downsampling shortcuts are binary 1 × 1 convolutions
with stride 2.

The weights are random. :func:`resnet20` then calibrates every BatchNorm on
random images drawn around the input normalisation, so that each layer's
input current has about zero mean and unit variance. The neurons then fire at
rates of 0.3 to 0.55 on random images. The predictions mean nothing: the
network exists to time the engine at a realistic size. Convert it with::

    reverb-edge convert reverb_edge.converters.resnet:resnet20 -o resnet20.reverb
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import LIF, BinaryConv2d, BinaryLinear
from .model import Residual, ReverbNet

# CIFAR-10's per-channel mean and standard deviation of pixel / 255, the usual normalisation.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        BinaryConv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


def _basic_block(in_channels: int, out_channels: int, stride: int, neuron) -> nn.Sequential:
    body = nn.Sequential(
        *_conv_bn(in_channels, out_channels, 3, stride),
        neuron(),
        *_conv_bn(out_channels, out_channels, 3, 1),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))
    return nn.Sequential(Residual(body, shortcut), neuron())


def resnet20(timesteps: int = 2, tau: float = 0.25, threshold: float = 0.5, seed: int = 0,
             calibration_batches: int = 4) -> ReverbNet:
    """Build ResNet-20 with random binary weights and BatchNorm calibrated on random images.

    Returns the network in eval mode. The same ``seed`` gives the same weights.
    """
    torch.manual_seed(seed)

    def neuron() -> LIF:
        return LIF(tau=tau, threshold=threshold)

    layers: list[nn.Module] = [*_conv_bn(3, 16, 3, 1), neuron()]
    in_channels = 16
    for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            layers.append(_basic_block(in_channels, out_channels, stride if block == 0 else 1, neuron))
            in_channels = out_channels
    layers += [nn.AvgPool2d(8), nn.Flatten(), BinaryLinear(64, len(CIFAR_LABELS))]

    input_spec = {
        "shape": [3, 32, 32],
        "mean": list(CIFAR_MEAN),
        "std": list(CIFAR_STD),
        "invert": False,
        "labels": list(CIFAR_LABELS),
    }
    model = ReverbNet(nn.Sequential(*layers), timesteps, input_spec)
    calibrate_batchnorm(model, calibration_batches, seed)
    return model


def calibrate_batchnorm(model: ReverbNet, batches: int, seed: int, batch_size: int = 32) -> None:
    """Set every BatchNorm's running statistics from random normalised images, then switch to eval mode.

    The images are uniform random pixels, normalised like the network's input.
    The statistics are the plain average over the batches (momentum None).
    """
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(model.input_spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(model.input_spec["std"]).view(1, -1, 1, 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None

    model.train()
    with torch.no_grad():
        for _ in range(batches):
            pixels = torch.rand((batch_size, *model.input_spec["shape"]), generator=generator)
            model((pixels - mean) / std)
    model.eval()
