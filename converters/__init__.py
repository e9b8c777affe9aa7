"""The PyTorch side of reverb-edge: layers, training, re-parameterization and export.

Installed as ``reverb_edge.converters``; needs the torch extra
(``pip install torch==2.13.0 "reverb-edge[torch]"``).
"""

from .export import export_model, to_graph
from .layers import LIF, BinaryConv2d, BinaryLinear, binarize
from .model import ConvNetConfig, ReverbNet, Residual, build_convnet, load_checkpoint, save_checkpoint

__all__ = [
    "LIF",
    "BinaryConv2d",
    "BinaryLinear",
    "binarize",
    "ConvNetConfig",
    "ReverbNet",
    "Residual",
    "build_convnet",
    "load_checkpoint",
    "save_checkpoint",
    "export_model",
    "to_graph",
]
