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

# Kernels that split their work over Numba's thread pool (``prange``). The
# engine calls them only when more than one thread is asked for.
PARALLEL_OPTIONS = dict(NJIT_OPTIONS, parallel=True)
