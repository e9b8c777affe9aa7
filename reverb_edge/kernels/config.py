"""Numba compilation flags, kept in one place so every kernel compiles the same way.

``fastmath`` stays off: the kernels must give the same spikes as the NumPy
reference twins and as PyTorch, and re-associated float sums would move
membrane potentials across the threshold.
"""

NJIT_OPTIONS = {
    "cache": True,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
}
