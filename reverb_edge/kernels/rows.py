"""The steps that finish an output row of a convolution: scale and bias, LIF neurons, max pooling.

Both convolution kernels (``_conv2d_pairs`` in ``conv.py``, which gathers each
output pixel's inputs, and ``_conv2d_scatter`` in ``scatter.py``, which adds
each input to the pixels it reaches) end an output row the same way, with
the functions here. Each one equals the separate kernel it stands for
(``_lif_step_kernel``, ``_max_pool2d_kernel``) bit for bit, so a kernel may
fuse them or not without changing a spike.
"""

import numpy as np
from numba import njit

from reverb_edge.kernels.config import NJIT_OPTIONS
from reverb_edge.kernels.pool import _max_pool_window_row
from reverb_edge.kernels.simd import LANES, vaffine, vcount_fired, vfire, vlane, vload, vmuladd, vreset, vstore


@njit(inline="always")
def _store_pixel(acc0, acc1, acc2, acc3, flat_scale, flat_bias, constants, flat_out, at, vectors, valid):
    """Apply scale and bias to one pixel's accumulators and store its ``valid`` outputs at ``at``."""
    acc0 = vaffine(acc0, vload(flat_scale, constants), vload(flat_bias, constants))
    if vectors > 1:
        acc1 = vaffine(acc1, vload(flat_scale, constants + LANES), vload(flat_bias, constants + LANES))
    if vectors > 2:
        acc2 = vaffine(acc2, vload(flat_scale, constants + 2 * LANES), vload(flat_bias, constants + 2 * LANES))
    if vectors > 3:
        acc3 = vaffine(acc3, vload(flat_scale, constants + 3 * LANES), vload(flat_bias, constants + 3 * LANES))
    if valid == vectors * LANES:
        vstore(flat_out, at, acc0)
        if vectors > 1:
            vstore(flat_out, at + LANES, acc1)
        if vectors > 2:
            vstore(flat_out, at + 2 * LANES, acc2)
        if vectors > 3:
            vstore(flat_out, at + 3 * LANES, acc3)
    else:
        # The last block of a group whose width is not a multiple of 16.
        for j in range(valid):
            if j < LANES:
                flat_out[at + j] = vlane(acc0, j)
            elif j < 2 * LANES:
                flat_out[at + j] = vlane(acc1, j - LANES)
            elif j < 3 * LANES:
                flat_out[at + j] = vlane(acc2, j - 2 * LANES)
            else:
                flat_out[at + j] = vlane(acc3, j - 3 * LANES)


@njit(**NJIT_OPTIONS)
def _fire_row(flat_spikes, flat_membrane, first_at, lag, out_width, out_channels, valid, tau, threshold, fresh, keep):
    """Run one LIF step for ``valid`` channels of each pixel of an output row, whose currents are in ``flat_spikes``.

    The channels of pixel ox start at first_at + ox * out_channels, and
    their membrane potentials ``lag`` elements later. Each current is
    replaced by its spike, with the arithmetic of ``_lif_step_kernel``
    (``_lif_first_step_kernel`` when ``fresh``), 16 neurons per vector. The
    membrane potentials are stored only when ``keep``. Returns how many
    neurons fired.
    """
    fired = 0
    zero = np.float32(0.0)
    whole = valid - valid % LANES
    for ox in range(out_width):
        at = first_at + ox * out_channels
        for j in range(at, at + whole, LANES):
            current = vload(flat_spikes, j)
            potential = current if fresh else vmuladd(current, vload(flat_membrane, j + lag), tau)
            vstore(flat_spikes, j, vfire(potential, threshold))
            if keep:
                vstore(flat_membrane, j + lag, vreset(potential, threshold))
            fired += vcount_fired(potential, threshold)
        for j in range(at + whole, at + valid):
            potential = flat_spikes[j] if fresh else tau * flat_membrane[j + lag] + flat_spikes[j]
            spike = potential >= threshold
            flat_spikes[j] = potential if spike else zero
            if keep:
                flat_membrane[j + lag] = zero if spike else potential
            fired += 1 if spike else 0
    return fired


@njit(**NJIT_OPTIONS)
def _fire_row_pair(flat_spikes, flat_next, flat_membrane, first_at, lag, out_width, out_channels, valid, tau,
                   threshold, fresh, keep, repeat):
    """Run two consecutive LIF steps over an output row, as two calls of :func:`_fire_row` would.

    The currents of the first step are in ``flat_spikes`` and of the second
    in ``flat_next``; both are replaced by spikes. With ``repeat`` the
    second step takes the first one's currents again and ``flat_next``
    only receives spikes. The potential between the steps stays in a
    register, so ``flat_membrane`` is read only when not ``fresh`` and
    written only when ``keep``. Returns the two counts of neurons fired.
    """
    fired = 0
    fired_next = 0
    zero = np.float32(0.0)
    whole = valid - valid % LANES
    for ox in range(out_width):
        at = first_at + ox * out_channels
        for j in range(at, at + whole, LANES):
            current = vload(flat_spikes, j)
            potential = current if fresh else vmuladd(current, vload(flat_membrane, j + lag), tau)
            vstore(flat_spikes, j, vfire(potential, threshold))
            fired += vcount_fired(potential, threshold)
            current = current if repeat else vload(flat_next, j)
            potential = vmuladd(current, vreset(potential, threshold), tau)
            vstore(flat_next, j, vfire(potential, threshold))
            fired_next += vcount_fired(potential, threshold)
            if keep:
                vstore(flat_membrane, j + lag, vreset(potential, threshold))
        for j in range(at + whole, at + valid):
            current = flat_spikes[j]
            potential = current if fresh else tau * flat_membrane[j + lag] + current
            spike = potential >= threshold
            flat_spikes[j] = potential if spike else zero
            fired += 1 if spike else 0
            current_next = current if repeat else flat_next[j]
            potential = tau * (zero if spike else potential) + current_next
            spike = potential >= threshold
            flat_next[j] = potential if spike else zero
            fired_next += 1 if spike else 0
            if keep:
                flat_membrane[j + lag] = zero if spike else potential
    return fired, fired_next



@njit(**NJIT_OPTIONS)
def _finish_row(flat_out, flat_out_next, flat_membrane, oy, ring, out_width, out_channels, channel_first, valid,
                tau, threshold, neuron, steps, fresh, keep, flat_pooled, flat_pooled_next, pooled_height,
                pooled_width, pool_h, pool_w):
    """Run the neurons and the pooling over output row ``oy``, whose currents are stored.

    The row is row ``oy % ring`` of ``flat_out`` (and ``flat_out_next`` for
    the second of two timesteps), channels [channel_first, channel_first +
    valid) of each pixel. With ``neuron`` the currents become spikes (see
    :func:`_fire_row`). With ``pool_h`` > 0, a finished row of pooling
    windows goes into ``flat_pooled`` (see ``_max_pool_window_row``). The
    arguments are those of ``_conv2d_pairs``. Returns how many neurons
    fired at each of the two timesteps (0 for a missing one).
    """
    fired = 0
    fired_next = 0
    row_at = (oy % ring) * out_width
    if neuron:
        first_at = row_at * out_channels + channel_first
        lag = (oy * out_width - row_at) * out_channels
        if steps > 1:
            fired, fired_next = _fire_row_pair(flat_out, flat_out_next, flat_membrane, first_at, lag, out_width,
                                               out_channels, valid, tau, threshold, fresh, keep, False)
        else:
            fired = _fire_row(flat_out, flat_membrane, first_at, lag, out_width, out_channels, valid, tau, threshold,
                              fresh, keep)
    _pool_row(flat_out, flat_out_next, oy, ring, out_width, out_channels, channel_first, valid, steps, flat_pooled,
              flat_pooled_next, pooled_height, pooled_width, pool_h, pool_w)
    return fired, fired_next


@njit(**NJIT_OPTIONS)
def _pool_row(flat_out, flat_out_next, oy, ring, out_width, out_channels, channel_first, valid, steps, flat_pooled,
              flat_pooled_next, pooled_height, pooled_width, pool_h, pool_w):
    """Max-pool the window row that output row ``oy`` completes, if it completes one (see :func:`_finish_row`)."""
    if pool_h > 0 and oy % pool_h == pool_h - 1 and oy // pool_h < pooled_height:
        first_row = oy % ring - (pool_h - 1)
        _max_pool_window_row(flat_out, first_row, out_width, out_channels, flat_pooled, oy // pool_h, pooled_width,
                             pool_h, pool_w, channel_first, valid)
        if steps > 1:
            _max_pool_window_row(flat_out_next, first_row, out_width, out_channels, flat_pooled_next, oy // pool_h,
                                 pooled_width, pool_h, pool_w, channel_first, valid)
