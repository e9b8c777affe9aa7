"""reverb-edge: spiking neural networks with binary weights and real-valued spikes on the CPU.

The runtime needs numpy, numba, pillow, click and tqdm, and never imports
torch; the PyTorch side is :mod:`reverb_edge.converters` (the torch extra).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reverb-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from .jit_cache import configure_cache

# Before any @njit(cache=True) decorator runs, so that a read-only install still imports.
configure_cache()

from .engine import Engine, LayerStats  # noqa: E402
from .errors import ConversionError, GraphError, InputError, MissingExtraError, ModelFileError, ReverbError
from .graph import Graph, InputSpec
from .modelfile import Model, load_model, save_model
from .registry import resolve_model

__all__ = [
    "__version__",
    "Engine",
    "LayerStats",
    "Graph",
    "InputSpec",
    "Model",
    "load_model",
    "save_model",
    "resolve_model",
    "ReverbError",
    "ModelFileError",
    "GraphError",
    "ConversionError",
    "InputError",
    "MissingExtraError",
]
