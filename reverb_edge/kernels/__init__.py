"""Numba compute kernels of the inference engine.

Every public function here checks and converts its inputs, then calls a
private ``@njit`` kernel compiled with ``reverb_edge.kernels.config.NJIT_OPTIONS``.
``reverb_edge.reference`` contains plain NumPy twins with the same names,
signatures and input checks. Data is single-sample, channels-first float32.
"""

from reverb_edge.kernels.conv import binary_conv2d, float_conv2d
from reverb_edge.kernels.events import binary_conv2d_events
from reverb_edge.kernels.linear import binary_linear, float_linear
from reverb_edge.kernels.neuron import lif_step, residual_add
from reverb_edge.kernels.pool import avg_pool2d, max_pool2d
from reverb_edge.kernels.popcount import binary_conv2d_popcount

__all__ = [
    "avg_pool2d",
    "binary_conv2d",
    "binary_conv2d_events",
    "binary_conv2d_popcount",
    "binary_linear",
    "float_conv2d",
    "float_linear",
    "lif_step",
    "max_pool2d",
    "residual_add",
]
