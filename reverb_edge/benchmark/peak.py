"""A loop of float32 vector additions that measures one core's add throughput (see ``bench.cpu_peak``)."""

import numpy as np
from numba import njit

from ..kernels.config import NJIT_OPTIONS
from ..kernels.simd import LANES, vadd, vlane, vload, vzero

ACCUMULATORS = 6
LANES_PER_ACCUMULATOR = LANES
ADDS_PER_ITERATION = ACCUMULATORS * LANES


@njit(**NJIT_OPTIONS)
def add_throughput(step, iterations):
    """Add ``step`` (16 float32) to six independent vector accumulators ``iterations`` times; return a lane sum.

    Float addition is not reassociated by the compiler, so each iteration
    issues six vector additions whose only dependence is on the same
    accumulator one iteration earlier. The result is returned so that the
    loop is not removed.
    """
    increment = vload(step, 0)
    acc0 = vzero()
    acc1 = vzero()
    acc2 = vzero()
    acc3 = vzero()
    acc4 = vzero()
    acc5 = vzero()
    for _ in range(iterations):
        acc0 = vadd(acc0, increment)
        acc1 = vadd(acc1, increment)
        acc2 = vadd(acc2, increment)
        acc3 = vadd(acc3, increment)
        acc4 = vadd(acc4, increment)
        acc5 = vadd(acc5, increment)
    total = vadd(vadd(vadd(acc0, acc1), vadd(acc2, acc3)), vadd(acc4, acc5))
    result = np.float32(0.0)
    for lane in range(LANES):
        result += vlane(total, lane)
    return result
