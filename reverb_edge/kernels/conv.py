"""2-D convolutions and fully connected layers, channels-last and event-driven over non-zero inputs.

Every kernel here computes, for output channel ``o`` in group ``g = o // Og``::

    z[o, y, x]   = sum over ky, kx, ci < Cg (in that order) of
                   w[o, ci, ky, kx] * x[g*Cg + ci, y*sh + ky*dh - top, x*sw + kx*dw - left]
    out[o, y, x] = scale[o] * z[o, y, x] + bias[o]

where ``Cg = C / groups``, ``Og = O / groups``, and positions outside the input
(the zero padding) contribute nothing. A fully connected layer is the same
sum over a 1 x 1 image with C = in_features.

Layout. Activations are channels-last (H, W, C): the channels of one pixel
are contiguous. Weights are prepared once per layer into rows of output
channels, ``rows[g, ky, kx, ci, :]``, padded with zero weights to a multiple
of 16, so that one input value times one row updates up to 64 output
channels held in four 16-lane vector registers (``reverb_edge.kernels.simd``).
Binary weights are stored as ±1.0: multiplying a value by ±1.0 is exact, so
the result is the sign-add, bit for bit.

Event-driven. Each output pixel gathers its receptive field, one kernel row
at a time. In the sparse mode it walks a list of the non-zero inputs of
each input row, so the work is proportional to the number of non-zero
inputs (spikes) times their fan-out. In the dense mode it walks every input
and skips the list, which is cheaper when most inputs are non-zero. Both add
the same values in the same order, so they give the same result.

Pixel pairs. Without dilation along x, two horizontally adjacent output
pixels are computed together (``_conv2d_pairs``): an input in the columns
both receptive fields share is read once and added to both, and the two
pixels' accumulators are independent, so their additions overlap in the
CPU's pipelines instead of waiting for one another. Dilated and grouped
dense layers take the one-pixel kernel (``_conv2d_rows``).

Scatter. A 3 x 3, stride-1 layer with enough input channels takes
``_conv2d_scatter`` (``scatter.py``) instead, which adds each non-zero input
to the output pixels it reaches, in an order that gives the same sums.

Sums are accumulated in float32 in the order shown above. Float weights
take a separate multiply and add. Binary weight rows take a fused
multiply-add, which gives the same result because a product with -1, 0 or
+1 is exact.
"""

import numpy as np
from numba import literal_unroll, literally, njit, prange

from reverb_edge.bitpack import unpack_signs
from reverb_edge.kernels.checks import Conv2dGeometry, check_binary_conv2d, check_float_conv2d
from reverb_edge.kernels.config import NJIT_OPTIONS, PARALLEL_OPTIONS
from reverb_edge.kernels.neuron import _lif_first_step_kernel, _lif_pair_kernel, _lif_step_kernel
from reverb_edge.kernels.pool import _max_pool2d_kernel
from reverb_edge.kernels.popcount import POPCOUNT_DENSITY, POPCOUNT_FROM, PopcountConv2d, trailing_zeros
from reverb_edge.kernels.rows import _finish_row, _fire_row_pair, _store_pixel
from reverb_edge.kernels.scatter import (
    SCATTER_BLOCK,
    _conv2d_scatter,
    _count_events,
    _nonzero_mask,
    scatter_buffers,
    scatter_eligible,
    scatter_weights,
)
from reverb_edge.kernels.simd import (
    LANES,
    vaffine,
    vlane,
    vload,
    vmuladd_lanes,
    vrowadd,
    vnonzero_bits,
    vstore,
    vzero,
)

# One output pixel keeps up to this many channels in registers (four 16-lane vectors).
BLOCK = 4 * LANES

# Use the dense mode when at least this fraction of a layer's inputs is non-zero. On
# random inputs shaped like the MNIST model's second convolution (32 to 32 channels,
# 28 x 28), the dense mode was faster only above 80 to 90 % non-zero inputs.
DENSE_FROM = 0.9

# The scatter kernel serves every eligible layer with at most SCATTER_BLOCK outputs, whatever its
# input channels. It was timed on the spikes of 100 real N-MNIST recordings, one thread, both
# timesteps of a pair. For 32 to 32 channels at 34 x 34 it took 116 against 155 us. For the
# 2-channel first layer, neurons merged, it took 30 against 46 us, and 66 us both on a dense input.
# With more outputs the sums do not fit in the registers. For 32 to 64 channels at 17 x 17, reading
# the input once per 32 outputs took 122 against 92 us. Keeping 36 vectors of sums (LLVM spilling
# some to memory) took 86 against 67 us.
# TODO: pairs whose timesteps share most non-zero inputs cost the scatter kernel up to twice the
# additions of the gather kernel (docs/engine.md); a choice per pair would need a cheaper test.

# Pixels of one channel per 64-bit mask of non-zero inputs in the linear kernels.
MASK_BITS = 64

# Time tags for _list_row_events and _conv2d_pairs: one timestep, or two at once.
ONE_TIMESTEP = (0,)
TWO_TIMESTEPS = (0, 0)

# The neuron constants passed to _conv2d_pairs when no neurons are fused (float32, like real ones).
NO_CONSTANT = np.float32(0.0)


class PreparedConv2d:
    """One convolution (or linear layer) with its weight rows and scratch buffers prepared once.

    ``weight`` is float (O, C / groups, kh, kw), the ±1.0 signs for a binary
    layer. Calling the object runs the layer on a channels-last input
    (H, W, C) and returns the output (OH, OW, O) and the number of non-zero
    inputs. The output array is reused by the next call, so copy it to keep it.
    The object has mutable buffers, so use one per thread.
    """

    def __init__(self, weight: np.ndarray, scale: np.ndarray, bias: np.ndarray, geometry: Conv2dGeometry,
                 in_height: int, in_width: int, weight_bits: np.ndarray | None = None,
                 rows: np.ndarray | None = None) -> None:
        self.geometry = geometry
        # A binary layer with wide inputs also gets the popcount kernel, used when an input is all 0 and 1
        # with enough ones (POPCOUNT_DENSITY).
        self.popcount = None
        if weight_bits is not None and geometry.in_channels // geometry.groups >= POPCOUNT_FROM:
            self.popcount = PopcountConv2d(weight_bits, scale, bias, geometry, in_height, in_width)
        # ``rows`` may come from another layer over the same weights: it is only read.
        self.rows = weight_rows(weight, geometry.groups) if rows is None else rows
        self.scale = _padded_constants(scale, geometry.groups, self.rows.shape[-1])
        self.bias = _padded_constants(bias, geometry.groups, self.rows.shape[-1])
        self.group_in = geometry.in_channels // geometry.groups
        # Type tags that select compiled variants (see _conv2d_pairs): vectors per block, and whether
        # every weight is -1, 0 or +1, so that fused multiply-adds round like separate ones.
        padded = self.rows.shape[-1]
        self.vector_tag = (0,) * (padded // LANES) if padded <= BLOCK else ()
        self.binary_tag = (0,) if bool(np.isin(self.rows, (-1.0, 0.0, 1.0)).all()) else ()
        self.in_shape = (in_height, in_width, geometry.in_channels)
        # The non-zero inputs of each input row and group, in (column, channel) order: key
        # column * Cg + channel, value, and where each column's run starts.
        self.keys = np.empty((in_height, geometry.groups, in_width * self.group_in), np.int32)
        # ``pair`` lists two timesteps at once, with two values per entry. One timestep uses the
        # first half of the same buffer, and the kernels index both as flat arrays of that shape.
        self.value_pairs = np.empty((in_height, geometry.groups, 2 * in_width * self.group_in), np.float32)
        self.values = self.value_pairs.reshape(-1)[: self.value_pairs.size // 2].reshape(self.keys.shape)
        self.starts = np.empty((in_height, geometry.groups, in_width + 1), np.int64)
        self.out = np.empty((geometry.out_height, geometry.out_width, geometry.out_channels), np.float32)
        self.out_next = np.empty_like(self.out)  # the second timestep's output in ``pair``
        (self.stride_h, self.stride_w), self.dilation = geometry.stride, geometry.dilation
        self.top, self.left = geometry.padding[0], geometry.padding[2]
        # A dense input to an ungrouped, undilated layer with at most 32 outputs goes to the strip
        # kernel, which reads it from this zero-bordered copy (see _conv2d_strips).
        self.bordered = None
        if geometry.groups == 1 and tuple(self.dilation) == (1, 1) and padded <= 2 * LANES:
            kernel_h, kernel_w = geometry.kernel
            strips_width = -(-geometry.out_width // 8) * 8
            self.bordered = np.zeros((
                max(self.top + in_height, (geometry.out_height - 1) * self.stride_h + kernel_h),
                max(self.left + in_width, (strips_width - 1) * self.stride_w + kernel_w),
                geometry.in_channels,
            ), np.float32)
        # A 3 x 3, stride-1 layer with at most 32 outputs scatters its non-zero inputs on one thread
        # (see scatter.py): its weights reordered, and two rings of accumulator rows.
        self.scatter = None
        if (scatter_eligible(geometry.kernel, geometry.stride, self.dilation, geometry.groups, geometry.padding)
                and padded <= SCATTER_BLOCK):
            self.scatter = (scatter_weights(self.rows), *scatter_buffers(in_width, geometry.in_channels))
        # A depthwise layer (one input and one output channel per group) runs its own kernel, which
        # puts 16 channels in one vector instead of 16 outputs of one channel.
        self.depthwise = None
        if self.group_in == 1 and geometry.out_channels == geometry.groups:
            self.depthwise = (
                np.ascontiguousarray(self.rows[:, :, :, 0, 0].transpose(1, 2, 0)),  # (kh, kw, C)
                np.ascontiguousarray(self.scale[:, 0]),
                np.ascontiguousarray(self.bias[:, 0]),
            )

    def __call__(self, x: np.ndarray, threads: int = 1, dense: bool | None = None,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        out = self.out if out is None else out
        if self.depthwise is not None and dense is None:
            weights, scale, bias = self.depthwise
            arguments = (x, weights, scale, bias, self.stride_h, self.stride_w, self.top, self.left,
                         self.dilation[0], self.dilation[1], out)
            if threads > 1 and out.shape[0] > 1:
                _depthwise_parallel(*arguments, min(threads, out.shape[0]))
            else:
                _depthwise_rows(*arguments, 0, out.shape[0])
            return out, int(np.count_nonzero(x))
        if (self.bordered is not None and self.popcount is None and dense is not False
                and (threads == 1 or out.shape[0] == 1)):
            # The strip kernel needs no list, only the count of non-zero inputs to choose it.
            events = int(np.count_nonzero(x))
            if dense or events >= DENSE_FROM * x.size:
                _conv2d_strips(x, self.bordered, self.rows, self.scale, self.bias, self.stride_h, self.stride_w,
                               self.top, self.left, out, self.vector_tag, self.binary_tag)
                return out, events
        if dense is None and self._scatter_serves(threads, x, None):
            return out, self._scatter(x, x, out, out, ONE_TIMESTEP)[0]
        events, _, ones, _ = _list_row_events(x, x, self.group_in, self.keys, self.values, self.starts, ONE_TIMESTEP)
        if dense is None and self._popcount_pays(events, ones, x.size):
            return self.popcount(x, out), events
        if dense is None:
            dense = events >= DENSE_FROM * x.size
        if self.dilation[1] == 1 and (not dense or self.geometry.groups == 1):
            self._pairs(x, x, out, out, dense, ONE_TIMESTEP, threads)
            return out, events
        arguments = (
            x, self.keys, self.values, self.starts, self.rows, self.scale, self.bias, self.stride_h, self.stride_w,
            self.top, self.left, self.dilation[0], self.dilation[1], dense, self.binary_tag, out,
        )
        parts = min(threads, out.shape[0])
        if parts > 1:
            _conv2d_parallel(*arguments, parts)
        else:
            _conv2d_rows(*arguments, 0, out.shape[0])
        return out, events

    def pair(self, x: np.ndarray, x_next: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Run two consecutive timesteps; return (out, out_next, non-zero inputs of x, of x_next).

        Where :func:`_conv2d_pairs` serves the layer, one list of both inputs
        and one pass over it compute both outputs, which shares the weight
        loads and the loop overhead between the timesteps. Otherwise this is
        two calls. The results equal two calls bit for bit either way.
        """
        if self._scatter_serves(threads, x, x_next):
            events, events_next, _, _ = self._scatter(x, x_next, self.out, self.out_next, TWO_TIMESTEPS)
            return self.out, self.out_next, events, events_next
        listed = self._list_for_pairs(x, x_next)
        if listed is not None:
            events, events_next, dense = listed
            self._pairs(x, x_next, self.out, self.out_next, dense, TWO_TIMESTEPS, threads)
            return self.out, self.out_next, events, events_next
        out, events = self(x, threads)
        out_next, events_next = self(x_next, threads, out=self.out_next)
        return out, out_next, events, events_next

    def _list_for_pairs(self, x: np.ndarray, x_next: np.ndarray | None) -> tuple[int, int, bool] | None:
        """List the non-zero inputs of one timestep (``x_next`` None) or two for :func:`_conv2d_pairs`.

        Returns (non-zero inputs of x, of x_next, whether to take the dense
        mode), or None where the pair kernel does not serve this layer and
        input: a depthwise or x-dilated layer, a binary input for the
        popcount kernel, or a dense input to a grouped layer.
        """
        if self.depthwise is not None or self.dilation[1] != 1:
            return None
        two = x_next is not None
        events, events_next, ones, ones_next = _list_row_events(
            x, x_next if two else x, self.group_in, self.keys, self.value_pairs if two else self.values, self.starts,
            TWO_TIMESTEPS if two else ONE_TIMESTEP,
        )
        if self.popcount is not None and (self._popcount_pays(events, ones, x.size)
                                          or self._popcount_pays(events_next, ones_next, x.size)):
            return None
        dense = max(events, events_next) >= DENSE_FROM * x.size
        if dense and self.geometry.groups != 1:
            return None
        return events, events_next, dense

    def _scatter_serves(self, threads: int, x: np.ndarray, x_next: np.ndarray | None) -> bool:
        """Return whether :func:`_conv2d_scatter` runs this layer on these inputs: one thread, and no popcount input."""
        if self.scatter is None or threads != 1:
            return False
        if self.popcount is None:
            return True
        return not any(self._popcount_pays(*_count_events(value), value.size)
                       for value in (x, x_next) if value is not None)

    def _scatter(self, x, x_next, out, out_next, time_tag, neuron=None, fresh=False, keep=True,
                 pool=None) -> tuple[int, int, int, int]:
        """Run :func:`_conv2d_scatter`; return (non-zero inputs, at the next timestep, neurons fired, at the next)."""
        weights, accumulators, masks = self.scatter
        membrane, tau, threshold = (out, NO_CONSTANT, NO_CONSTANT) if neuron is None else neuron
        kernel_h, kernel_w, pooled, pooled_next = (0, 0, out, out) if pool is None else pool[:4]
        return _conv2d_scatter(
            x, x_next, weights, self.scale, self.bias, self.top, self.left, accumulators, masks, out, out_next, membrane,
            tau, threshold, self.vector_tag, self.binary_tag, time_tag, () if neuron is None else (0,), bool(fresh),
            bool(keep), pooled, pooled_next, kernel_h, kernel_w,
        )

    def _popcount_pays(self, events: int, ones: int, size: int) -> bool:
        """Return whether the popcount kernel serves an input with these counts: binary, with enough ones."""
        return self.popcount is not None and ones == events and ones >= POPCOUNT_DENSITY * size

    def fire(self, x: np.ndarray, x_next: np.ndarray | None, neuron: tuple, fresh: bool,
             threads: int = 1, keep: bool = True, pool: tuple | None = None) -> tuple[int, int, int, int]:
        """Run the layer and the LIF neurons it feeds, for one timestep or (with ``x_next``) two.

        ``neuron`` is (membrane, tau, threshold, spikes, spikes_next): the
        neurons' float32 membrane potentials and spike buffers, shaped like
        the output, and float32 constants. ``fresh`` is True when the first
        timestep is the first after a reset; ``keep`` False allows the
        potentials after the last timestep to go unstored. Where
        :func:`_conv2d_scatter` or :func:`_conv2d_pairs` serves the layer, it
        runs the neuron step over each output row as soon as the row is
        finished, so the currents are never stored. Otherwise the currents go
        to ``self.out`` and the LIF kernels run after. Either way the spikes
        and potentials equal those of the layer followed by ``lif_step``, bit
        for bit.

        ``pool``, if given, is (kh, kw, pooled, pooled_next, rows,
        rows_next): the spikes also go through a max pooling of
        non-overlapping kh x kw windows into ``pooled`` and ``pooled_next``,
        equal to ``_max_pool2d_kernel``'s. ``rows`` and ``rows_next`` are kh
        output rows each. On one thread the kernel writes the spikes there
        and pools each window row as soon as it is done, so the spike
        buffers are not written; elsewhere they hold the spikes.

        ``x_next`` may be ``x`` itself: the input of a time-invariant layer
        under direct encoding. The layer then runs once and its currents
        drive the neurons for both timesteps.

        Returns (non-zero inputs, at the next timestep, neurons fired, at the
        next timestep).
        """
        membrane, tau, threshold, spikes, spikes_next = neuron
        if x_next is x:
            return self._fire_repeated(x, neuron, fresh, threads, keep, pool)
        if self._scatter_serves(threads, x, x_next):
            second, time_tag = (x, ONE_TIMESTEP) if x_next is None else (x_next, TWO_TIMESTEPS)
            if pool is not None:
                spikes, spikes_next = pool[4], pool[5]
            return self._scatter(x, second, spikes, spikes_next, time_tag, (membrane, tau, threshold), fresh, keep,
                                 pool)
        listed = self._list_for_pairs(x, x_next)
        if listed is not None:
            events, events_next, dense = listed
            second, time_tag = (x, ONE_TIMESTEP) if x_next is None else (x_next, TWO_TIMESTEPS)
            if pool is not None and min(threads, spikes.shape[0]) == 1:
                spikes, spikes_next = pool[4], pool[5]
            fired, fired_next = self._pairs(x, second, spikes, spikes_next, dense, time_tag, threads,
                                            (membrane, tau, threshold), fresh, keep, pool)
            return events, events_next, fired, fired_next
        flat_membrane = membrane.reshape(-1)
        if x_next is None:
            current, events = self(x, threads)
            step = _lif_first_step_kernel if fresh else _lif_step_kernel
            constants = (threshold,) if fresh else (tau, threshold)
            fired, events_next, fired_next = step(current.reshape(-1), flat_membrane, *constants, spikes.reshape(-1)), 0, 0
        else:
            current, current_next, events, events_next = self.pair(x, x_next, threads)
            fired, fired_next = _lif_pair_kernel(current.reshape(-1), current_next.reshape(-1), flat_membrane, tau,
                                                 threshold, spikes.reshape(-1), spikes_next.reshape(-1),
                                                 (0,) if fresh else (), keep)
        _pool_spikes(pool, spikes, spikes_next if x_next is not None else None)
        return events, events_next, fired, fired_next

    def _fire_repeated(self, x, neuron, fresh, threads, keep, pool) -> tuple[int, int, int, int]:
        """Run :meth:`fire` with the same input at both timesteps: one pass of the layer, two neuron steps."""
        membrane, tau, threshold, spikes, spikes_next = neuron
        if self.bordered is not None and self.popcount is None and (threads == 1 or spikes.shape[0] == 1):
            events = int(np.count_nonzero(x))
            if events >= DENSE_FROM * x.size:
                # The currents go to the spike buffer, and the neuron steps replace them there.
                _conv2d_strips(x, self.bordered, self.rows, self.scale, self.bias, self.stride_h, self.stride_w,
                               self.top, self.left, spikes, self.vector_tag, self.binary_tag)
                out_height, out_width, out_channels = spikes.shape
                fired, fired_next = _fire_row_pair(spikes.reshape(-1), spikes_next.reshape(-1), membrane.reshape(-1), 0,
                                                   0, out_height * out_width, out_channels, out_channels, tau, threshold,
                                                   bool(fresh), bool(keep), True)
                _pool_spikes(pool, spikes, spikes_next)
                return events, events, fired, fired_next
        current, events = self(x, threads)
        flat_current = current.reshape(-1)
        fired, fired_next = _lif_pair_kernel(flat_current, flat_current, membrane.reshape(-1), tau, threshold,
                                             spikes.reshape(-1), spikes_next.reshape(-1), (0,) if fresh else (), keep)
        _pool_spikes(pool, spikes, spikes_next)
        return events, events, fired, fired_next

    def _pairs(self, x, x_next, out, out_next, dense, time_tag, threads, neuron=None, fresh=False,
               keep=True, pool=None) -> tuple[int, int]:
        """Run :func:`_conv2d_pairs` on the current lists (or, dense, on the inputs); return the neurons fired."""
        values = self.values if len(time_tag) == 1 else self.value_pairs
        membrane, tau, threshold = (out, NO_CONSTANT, NO_CONSTANT) if neuron is None else neuron
        kernel_h, kernel_w, pooled, pooled_next = (0, 0, out, out) if pool is None else pool[:4]
        arguments = (
            x, x_next, self.keys, values, self.starts, self.rows, self.scale, self.bias,
            self.stride_h, self.stride_w, self.top, self.left, self.dilation[0], out, out_next, membrane, tau, threshold,
            self.vector_tag, self.binary_tag, (0,) if dense else (), time_tag, () if neuron is None else (0,),
            bool(fresh), bool(keep), pooled, pooled_next, kernel_h, kernel_w,
        )
        out_height = self.geometry.out_height
        parts = min(threads, out_height)
        if parts > 1:
            return _conv2d_pairs_parallel(*arguments, parts)
        return _conv2d_pairs(*arguments, 0, out_height)


def _pool_spikes(pool: tuple | None, spikes: np.ndarray, spikes_next: np.ndarray | None) -> None:
    """Max-pool full spike maps into ``pool``'s outputs (see :meth:`PreparedConv2d.fire`), where the kernel did not."""
    if pool is None:
        return
    kernel_h, kernel_w, pooled, pooled_next = pool[:4]
    _max_pool2d_kernel(spikes, kernel_h, kernel_w, kernel_h, kernel_w, 0, 0, 1, 1, pooled)
    if spikes_next is not None:
        _max_pool2d_kernel(spikes_next, kernel_h, kernel_w, kernel_h, kernel_w, 0, 0, 1, 1, pooled_next)


def weight_rows(weight: np.ndarray, groups: int) -> np.ndarray:
    """Rearrange float weights (O, C / groups, kh, kw) into zero-padded rows (groups, kh, kw, C / groups, P).

    P is O / groups rounded up to a multiple of 16. Row [g, ky, kx, ci] contains
    the weights from input channel ci of group g to that group's outputs.
    """
    # NOTE: a grouped layer with fewer than 16 outputs per group fills only part of each 16-lane
    # vector in the general kernel. Depthwise layers have their own kernel; other such layers do not.
    out_channels, group_in, kernel_h, kernel_w = weight.shape
    group_out = out_channels // groups
    padded = -(-group_out // LANES) * LANES
    rows = np.zeros((groups, kernel_h, kernel_w, group_in, padded), np.float32)
    by_group = weight.reshape(groups, group_out, group_in, kernel_h, kernel_w)
    rows[..., :group_out] = by_group.transpose(0, 3, 4, 2, 1)
    return rows


def _padded_constants(values: np.ndarray, groups: int, padded: int) -> np.ndarray:
    """Lay per-output-channel constants out as (groups, P), zero-padded like the weight rows."""
    by_group = np.asarray(values, np.float32).reshape(groups, -1)
    constants = np.zeros((groups, padded), np.float32)
    constants[:, :by_group.shape[1]] = by_group
    return constants


def binary_conv2d(
    x: np.ndarray,
    weight_bits: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    in_channels: int,
    stride=(1, 1),
    padding=(0, 0, 0, 0),
    dilation=(1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Convolve ``x`` with packed ±1 weights and apply the per-channel affine ``scale * z + bias``.

    Args:
        x: input of shape (C, H, W) with C == in_channels, any float dtype.
        weight_bits: uint64 array (O, kh, kw, words_for(C / groups)). The sign
            of weight[o, ci, ky, kx] is bit ci of the row weight_bits[o, ky, kx, :],
            using the convention of ``reverb_edge.bitpack``.
        scale, bias: float arrays of shape (O,).
        in_channels: C. The packed words cannot tell it exactly, so it is passed.
        stride, dilation: int or (height, width) pair.
        padding: int, (ph, pw) or (top, bottom, left, right) zero padding.
        groups: number of channel groups; it must divide C and O.

    Returns:
        float32 array (O, OH, OW), with OH = (H + top + bottom - dh*(kh-1) - 1)
        // sh + 1 and OW likewise.

    Raises:
        InputError: on a wrong dtype or shape, a bad parameter, or OH or OW < 1.

    This channels-first function unpacks the signs and transposes on every
    call; the engine prepares a :class:`PreparedConv2d` once per layer instead.
    """
    x, weight_bits, scale, bias, geometry = check_binary_conv2d(
        "binary_conv2d", x, weight_bits, scale, bias, in_channels, stride, padding, dilation, groups
    )
    signs = unpack_signs(weight_bits, in_channels // geometry.groups).transpose(0, 3, 1, 2)
    return _channels_first(x, signs, scale, bias, geometry)


def float_conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    *,
    stride=(1, 1),
    padding=(0, 0, 0, 0),
    dilation=(1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Convolve ``x`` with float weights and apply the per-channel affine ``scale * z + bias``.

    Used for full-precision first and last layers. ``weight`` has PyTorch's
    layout (O, C / groups, kh, kw). The other arguments, the output and the
    errors are those of ``binary_conv2d``. Zero inputs are skipped here too.
    """
    x, weight, scale, bias, geometry = check_float_conv2d(
        "float_conv2d", x, weight, scale, bias, stride, padding, dilation, groups
    )
    return _channels_first(x, weight, scale, bias, geometry)


class PreparedLinear:
    """A linear layer run as a 1 x 1 convolution over a 1 x 1 image; see :class:`PreparedConv2d`.

    Calling it with a vector (I,) returns the output (O,) and the number of non-zero inputs.
    With ``channels`` C > 1 the vector is a channels-last map (H, W, C),
    flattened, read in PyTorch's (C, H, W) order (see :func:`_linear_events`).
    """

    def __init__(self, conv: PreparedConv2d) -> None:
        self.conv = conv
        self.rows = conv.rows.reshape(conv.rows.shape[3], -1)  # (I, P)
        self.scale = conv.scale.reshape(-1)
        self.bias = conv.bias.reshape(-1)
        self.out = conv.out.reshape(-1)
        self.out_next = conv.out_next.reshape(-1)
        self._masks: dict[int, np.ndarray] = {}

    def __call__(self, x: np.ndarray, threads: int = 1, dense: bool | None = None,
                 out: np.ndarray | None = None, channels: int = 1) -> tuple[np.ndarray, int]:
        out = self.out if out is None else out
        x = np.ascontiguousarray(x)  # the kernels load vectors, which ignore strides
        if dense is None or channels > 1:
            # One compiled call that skips the zeros as it reads them. A readout layer has too few
            # outputs for the list of non-zero inputs and the convolution's pixel loop to pay off.
            events = _linear_events(x, self.rows, self.scale, self.bias, out, self.conv.vector_tag,
                                    self.conv.binary_tag, channels, self.masks(channels))
            return out, events
        result, events = self.conv(x.reshape(1, 1, -1), 1, dense, out=out.reshape(self.conv.out.shape))
        return result.reshape(-1), events

    def masks(self, channels: int) -> np.ndarray:
        """Return the linear kernels' scratch buffer for an input of ``channels`` channels, made once per count."""
        if channels not in self._masks:
            self._masks[channels] = linear_masks(self.rows.shape[0], channels)
        return self._masks[channels]

    def pair(self, x: np.ndarray, x_next: np.ndarray, threads: int = 1,
             channels: int = 1) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Run two consecutive timesteps in one pass; see :meth:`PreparedConv2d.pair`."""
        x, x_next = np.ascontiguousarray(x), np.ascontiguousarray(x_next)
        events, events_next = _linear_events_pair(x, x_next, self.rows, self.scale, self.bias, self.out,
                                                  self.out_next, self.conv.vector_tag, self.conv.binary_tag, channels,
                                                  self.masks(channels))
        return self.out, self.out_next, events, events_next


def prepare_linear(weight: np.ndarray, scale: np.ndarray, bias: np.ndarray, rows: np.ndarray | None = None) -> PreparedLinear:
    """Prepare a linear layer with float weights (O, I) (±1.0 for a binary layer); see :class:`PreparedConv2d`."""
    out_features, in_features = weight.shape
    geometry = Conv2dGeometry(in_features, out_features, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1)
    weight = np.asarray(weight, np.float32).reshape(out_features, in_features, 1, 1)
    return PreparedLinear(PreparedConv2d(weight, scale, bias, geometry, 1, 1, rows=rows))


def _channels_first(x, weight, scale, bias, geometry) -> np.ndarray:
    """Run a convolution on a channels-first input and return a channels-first output."""
    _, height, width = x.shape
    layer = PreparedConv2d(weight, scale, bias, geometry, height, width)
    out, _ = layer(np.ascontiguousarray(x.transpose(1, 2, 0)))
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@njit(**NJIT_OPTIONS)
def _list_row_events(x, x_next, group_in, keys, values, starts, time_tag):
    """Compress the non-zero inputs of every input row and group; return how many there are.

    For row iy and group g, entry k of ``keys[iy, g]`` is ix * Cg + c and of
    ``values[iy, g]`` the value of input channel c (within the group) at
    column ix, in increasing key order. The entries of column ix are
    [starts[iy, g, ix], starts[iy, g, ix + 1]). Channels are tested 16 at a
    time with one vector compare, and only the set bits of the result are
    visited, so the work follows the number of non-zero inputs.

    With a two-element ``time_tag``, ``x`` and ``x_next`` are the inputs of
    two consecutive timesteps: an entry lists an input that is non-zero in
    either, and ``values[iy, g]`` holds its two values at 2k and 2k + 1.
    With a one-element tag ``x_next`` is not read.

    Returns (non-zero inputs of ``x``, of ``x_next``, inputs equal to 1.0 in
    ``x``, in ``x_next``), with zeros for ``x_next`` with one timestep. An
    input is binary (all 0 and 1) when its ones equal its non-zero inputs,
    which is the test for the popcount kernel; counting here spares a second
    pass over the input.
    """
    steps = len(time_tag)
    height, width, channels = x.shape
    groups = keys.shape[1]
    flat_x = x.reshape(-1)
    flat_next = x_next.reshape(-1)
    total = 0
    total_next = 0
    ones = 0
    ones_next = 0
    for iy in range(height):
        for group in range(groups):
            row_keys = keys[iy, group]
            row_values = values[iy, group]
            row_starts = starts[iy, group]
            n = 0
            for ix in range(width):
                row_starts[ix] = n
                pixel = (iy * width + ix) * channels + group * group_in
                channel = 0
                while channel + LANES <= group_in:
                    bits = vnonzero_bits(flat_x, pixel + channel)
                    if steps > 1:
                        bits |= vnonzero_bits(flat_next, pixel + channel)
                    while bits != 0:
                        found = channel + np.int64(trailing_zeros(bits))
                        # Unsigned indices: Numba then adds no test for negative ones to each access.
                        at = np.uint64(pixel + found)
                        slot = np.uint64(n)
                        value = flat_x[at]
                        row_keys[slot] = ix * group_in + found
                        row_values[np.uint64(steps) * slot] = value
                        ones += 1 if value == 1.0 else 0
                        if steps > 1:
                            value_next = flat_next[at]
                            row_values[np.uint64(steps) * slot + np.uint64(1)] = value_next
                            total += 1 if value != 0.0 else 0
                            total_next += 1 if value_next != 0.0 else 0
                            ones_next += 1 if value_next == 1.0 else 0
                        n += 1
                        bits &= bits - np.uint64(1)
                    channel += LANES
                # The last group_in % 16 channels, without a branch on the value.
                while channel < group_in:
                    at = np.uint64(pixel + channel)
                    slot = np.uint64(n)
                    value = flat_x[at]
                    row_keys[slot] = ix * group_in + channel
                    row_values[np.uint64(steps) * slot] = value
                    listed = value != 0.0
                    ones += 1 if value == 1.0 else 0
                    if steps > 1:
                        value_next = flat_next[at]
                        row_values[np.uint64(steps) * slot + np.uint64(1)] = value_next
                        total += 1 if listed else 0
                        total_next += 1 if value_next != 0.0 else 0
                        ones_next += 1 if value_next == 1.0 else 0
                        listed = listed or value_next != 0.0
                    n += 1 if listed else 0
                    channel += 1
            row_starts[width] = n
            if steps == 1:
                total += n
    return total, total_next, ones, ones_next


@njit(**NJIT_OPTIONS)
def _conv2d_rows(
    x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
    dilation_w, dense, binary_tag, out, row_start, row_stop,
):
    """Compute output rows [row_start, row_stop) of a channels-last convolution, one pixel at a time.

    The engine uses it for kernels dilated along x and for the dense mode of
    grouped layers; the other layers take :func:`_conv2d_pairs`.
    """
    # Constant arguments, so that Numba compiles one version per mode with no test of the mode inside.
    if dense:
        _conv2d_rows_in_mode(
            x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
            dilation_w, True, binary_tag, out, row_start, row_stop,
        )
    else:
        _conv2d_rows_in_mode(
            x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
            dilation_w, False, binary_tag, out, row_start, row_stop,
        )


@njit(**NJIT_OPTIONS)
def _conv2d_rows_in_mode(
    x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
    dilation_w, dense, binary_tag, out, row_start, row_stop,
):
    """Compute output rows [row_start, row_stop) of a channels-last convolution in one mode.

    ``scale`` and ``bias`` are zero-padded per group to (groups, P) like the
    rows. Indexing is flat and unsigned: array slices in the inner loops
    would cost a reference count update each, and signed indices a check for
    negative values.
    """
    literally(dense)
    height, width, channels = x.shape
    groups, kernel_h, kernel_w, group_in, padded = rows.shape
    out_width, out_channels = out.shape[1], out.shape[2]
    group_out = out_channels // groups
    flat_x = x.reshape(-1)
    flat_keys = keys.reshape(-1)
    flat_values = values.reshape(-1)
    flat_starts = starts.reshape(-1)
    flat_rows = rows.reshape(-1)
    flat_scale = scale.reshape(-1)
    flat_bias = bias.reshape(-1)
    flat_out = out.reshape(-1)
    stride = np.uint64(padded)
    # With no dilation along x, the kernel columns of one kernel row meet adjacent input columns,
    # whose non-zero inputs are one contiguous run of the row's list: one loop instead of kw.
    segments = 1 if dilation_w == 1 else kernel_w
    dense_segments = 1 if dilation_w == 1 and groups == 1 else kernel_w

    for group in range(groups):
        for block in range(0, padded, 4 * LANES):
            vectors = min(4, (padded - block) // LANES)
            valid = min(4 * LANES, group_out - block)
            constants = group * padded + block
            for oy in range(row_start, row_stop):
                for ox in range(out_width):
                    acc0 = vzero()
                    acc1 = vzero()
                    acc2 = vzero()
                    acc3 = vzero()
                    first_column = ox * stride_w - left
                    for ky in range(kernel_h):
                        iy = oy * stride_h + ky * dilation_h - top
                        if iy < 0 or iy >= height:
                            continue
                        if dense:
                            # TODO: pair output pixels here too (grouped or x-dilated layers), as _conv2d_pairs does.
                            for segment in range(dense_segments):
                                if dense_segments == 1:
                                    # One group and no dilation along x: the inputs of columns low to high
                                    # and their weight rows are both contiguous, (column, channel) in order.
                                    low = max(first_column, 0)
                                    high = min(first_column + kernel_w, width)
                                    kx = low - first_column
                                    run = (high - low) * group_in
                                else:
                                    kx = segment
                                    low = first_column + kx * dilation_w
                                    run = group_in
                                    if low < 0 or low >= width:
                                        continue
                                if run <= 0:
                                    continue
                                pixel = np.uint64((iy * width + low) * channels + group * group_in)
                                row = np.uint64((((group * kernel_h + ky) * kernel_w + kx) * group_in) * padded + block)
                                for k in range(np.uint64(run)):
                                    value = flat_x[pixel + k]
                                    at = row + k * stride
                                    acc0 = vrowadd(acc0, vload(flat_rows, at), value, binary_tag)
                                    if vectors > 1:
                                        acc1 = vrowadd(acc1, vload(flat_rows, at + LANES), value, binary_tag)
                                    if vectors > 2:
                                        acc2 = vrowadd(acc2, vload(flat_rows, at + 2 * LANES), value, binary_tag)
                                    if vectors > 3:
                                        acc3 = vrowadd(acc3, vload(flat_rows, at + 3 * LANES), value, binary_tag)
                            continue

                        listed = (iy * groups + group) * width * group_in
                        runs = (iy * groups + group) * (width + 1)
                        for segment in range(segments):
                            if segments == 1:
                                low = max(first_column, 0)
                                high = min(first_column + kernel_w, width)
                                kx_minus_ix = -first_column
                            else:
                                low = first_column + segment * dilation_w
                                high = low + 1
                                kx_minus_ix = segment - low
                                if low < 0 or low >= width:
                                    continue
                            if low >= high:
                                continue
                            # Entry key = ix * Cg + c has weight row ((g * kh + ky) * kw + kx) * Cg + c.
                            base = (((group * kernel_h + ky) * kernel_w + kx_minus_ix) * group_in) * padded + block
                            for k in range(np.uint64(listed + flat_starts[runs + low]), np.uint64(listed + flat_starts[runs + high])):
                                value = flat_values[k]
                                at = np.uint64(base + np.int64(flat_keys[k]) * padded)
                                acc0 = vrowadd(acc0, vload(flat_rows, at), value, binary_tag)
                                if vectors > 1:
                                    acc1 = vrowadd(acc1, vload(flat_rows, at + LANES), value, binary_tag)
                                if vectors > 2:
                                    acc2 = vrowadd(acc2, vload(flat_rows, at + 2 * LANES), value, binary_tag)
                                if vectors > 3:
                                    acc3 = vrowadd(acc3, vload(flat_rows, at + 3 * LANES), value, binary_tag)

                    acc0 = vaffine(acc0, vload(flat_scale, constants), vload(flat_bias, constants))
                    if vectors > 1:
                        acc1 = vaffine(acc1, vload(flat_scale, constants + LANES), vload(flat_bias, constants + LANES))
                    if vectors > 2:
                        acc2 = vaffine(acc2, vload(flat_scale, constants + 2 * LANES), vload(flat_bias, constants + 2 * LANES))
                    if vectors > 3:
                        acc3 = vaffine(acc3, vload(flat_scale, constants + 3 * LANES), vload(flat_bias, constants + 3 * LANES))
                    at = (oy * out_width + ox) * out_channels + group * group_out + block
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
def _conv2d_pairs(
    x, x_next, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
    out, out_next, membrane, tau, threshold, vector_tag, binary_tag, dense_tag, time_tag, neuron_tag, fresh, keep,
    pooled, pooled_next, pool_h, pool_w, row_start, row_stop,
):
    """Both modes with no dilation along x, two horizontally adjacent output pixels at a time.

    The two pixels' receptive fields overlap (when the stride is below the
    kernel width), so a non-zero input in the shared columns is read once and
    added to both. Their accumulators are independent, so the additions of the
    two pixels overlap in the CPU's pipelines. Each pixel still sums its terms
    in the order of the general kernel, so the results are the same.

    The tags are tuples whose length is fixed by their Numba type, so each
    layer shape gets its own compiled loop: ``len(vector_tag)`` is the number
    of 16-lane vectors per block when a group has at most 64 outputs (0
    otherwise), and a non-empty ``binary_tag`` says that every weight is -1,
    0 or +1, where a fused multiply-add (``vrowadd``) rounds like the
    separate multiply and add. A non-empty ``dense_tag`` selects the dense
    mode, which walks every input instead of the lists; it needs one group,
    so that the inputs of adjacent columns are contiguous like the list entries.

    With a two-element ``time_tag`` the kernel computes two timesteps at once:
    ``x`` into ``out`` and ``x_next`` into ``out_next``, from the lists that
    ``_list_row_events`` built for both. Each weight row is loaded once for
    both, and the list is walked once. An input that is zero at one of the
    two timesteps adds 0 there, which leaves a sum that starts at +0 unchanged,
    so each timestep's result equals a one-timestep call bit for bit.

    With a non-empty ``neuron_tag`` the outputs feed LIF neurons with decay
    ``tau`` and threshold ``threshold``, whose membrane potentials are in
    ``membrane`` (the output's shape): ``out`` and ``out_next`` receive
    their spikes instead of the currents (see ``_fire_row``). A non-empty
    ``fresh`` (a bool, tested at run time: a tag would double the compiled
    variants) is True when the first timestep is the first after a reset.
    ``keep`` (also a bool) False says that nobody reads the membrane
    potentials after the last timestep, so they are not stored: with
    ``fresh`` too, ``membrane`` is not touched at all.

    With ``pool_h`` > 0 the outputs also go through a max pooling of
    non-overlapping pool_h x pool_w windows into ``pooled`` and
    ``pooled_next``: each window row is pooled as soon as its last output
    row is finished (``_max_pool_window_row``). ``out`` may then hold fewer
    rows than the output, at least pool_h: output row oy goes to row
    oy % len(out), so a small buffer that stays in the cache replaces the
    whole feature map. ``membrane`` always has the output's full shape.
    Bands (row_start) must then start at a multiple of pool_h.
    Returns how many neurons fired at each timestep (0, 0 without neurons).
    """
    block_vectors = len(vector_tag)
    neuron = len(neuron_tag) > 0
    flat_membrane = membrane.reshape(-1)
    fired = 0
    fired_next = 0
    dense = len(dense_tag) > 0
    steps = len(time_tag)
    height, width, channels = x.shape
    flat_x = x.reshape(-1)
    flat_x_next = x_next.reshape(-1)
    groups, kernel_h, kernel_w, group_in, padded = rows.shape
    ring, out_width, out_channels = out.shape
    pooled_height, pooled_width = pooled.shape[0], pooled.shape[1]
    flat_pooled = pooled.reshape(-1)
    flat_pooled_next = pooled_next.reshape(-1)
    group_out = out_channels // groups
    flat_keys = keys.reshape(-1)
    flat_values = values.reshape(-1)
    flat_starts = starts.reshape(-1)
    flat_rows = rows.reshape(-1)
    flat_scale = scale.reshape(-1)
    flat_bias = bias.reshape(-1)
    flat_out = out.reshape(-1)
    flat_out_next = out_next.reshape(-1)
    shift = stride_w * group_in * padded  # from pixel A's weight row of an input to pixel B's

    for group in range(groups):
        for block in range(0, padded, 4 * LANES):
            # A constant when the caller passes the vector count (one block per group), so that
            # the tests of it below are resolved at compile time.
            vectors = block_vectors if block_vectors > 0 else min(4, (padded - block) // LANES)
            valid = min(4 * LANES, group_out - block)
            constants = group * padded + block
            for oy in range(row_start, row_stop):
                row_at = (oy % ring) * out_width  # the first pixel of row oy in out
                for ox in range(0, out_width, 2):
                    pair = ox + 1 < out_width
                    # Accumulators: a for pixel A, b for pixel B; c and d for them at the next timestep.
                    a0 = vzero()
                    a1 = vzero()
                    a2 = vzero()
                    a3 = vzero()
                    b0 = vzero()
                    b1 = vzero()
                    b2 = vzero()
                    b3 = vzero()
                    c0 = vzero()
                    c1 = vzero()
                    c2 = vzero()
                    c3 = vzero()
                    d0 = vzero()
                    d1 = vzero()
                    d2 = vzero()
                    d3 = vzero()
                    first_a = ox * stride_w - left
                    low_a = min(max(first_a, 0), width)
                    high_a = max(min(first_a + kernel_w, width), low_a)
                    if pair:
                        low_b = min(max(first_a + stride_w, 0), width)
                        high_b = max(min(first_a + stride_w + kernel_w, width), low_b)
                    else:
                        low_b = high_a
                        high_b = high_a
                    # Columns [low_a, end_a) reach only A, [low_b, end_both) both, [start_b, high_b) only B.
                    end_a = max(min(high_a, low_b), low_a)
                    end_both = max(high_a, low_b)
                    start_b = end_both
                    for ky in range(kernel_h):
                        iy = oy * stride_h + ky * dilation_h - top
                        if iy < 0 or iy >= height:
                            continue
                        listed = (iy * groups + group) * width * group_in
                        runs = np.uint64((iy * groups + group) * (width + 1))
                        pixels = iy * width * channels  # dense mode: input (iy, ix, c) is at pixels + ix * Cg + c
                        # Entry key = ix * Cg + c has weight row ((g * kh + ky) * kw + ix - first_a) * Cg + c for A.
                        base_a = (((group * kernel_h + ky) * kernel_w - first_a) * group_in) * padded + block
                        base_b = base_a - shift
                        first_k = low_a * group_in if dense else listed + flat_starts[runs + np.uint64(low_a)]
                        last_k = end_a * group_in if dense else listed + flat_starts[runs + np.uint64(end_a)]
                        for k in range(np.uint64(first_k), np.uint64(last_k)):
                            value = flat_x[np.uint64(pixels) + k] if dense else flat_values[steps * k]
                            value_next = flat_x_next[np.uint64(pixels) + k] if dense else flat_values[steps * k + steps - 1]
                            offset = (np.int64(k) if dense else np.int64(flat_keys[k])) * padded
                            at = np.uint64(base_a + offset)
                            row = vload(flat_rows, at)
                            a0 = vrowadd(a0, row, value, binary_tag)
                            c0 = vrowadd(c0, row, value_next, binary_tag) if steps > 1 else c0
                            if vectors > 1:
                                row = vload(flat_rows, at + LANES)
                                a1 = vrowadd(a1, row, value, binary_tag)
                                c1 = vrowadd(c1, row, value_next, binary_tag) if steps > 1 else c1
                            if vectors > 2:
                                row = vload(flat_rows, at + 2 * LANES)
                                a2 = vrowadd(a2, row, value, binary_tag)
                                c2 = vrowadd(c2, row, value_next, binary_tag) if steps > 1 else c2
                            if vectors > 3:
                                row = vload(flat_rows, at + 3 * LANES)
                                a3 = vrowadd(a3, row, value, binary_tag)
                                c3 = vrowadd(c3, row, value_next, binary_tag) if steps > 1 else c3
                        first_k = low_b * group_in if dense else listed + flat_starts[runs + np.uint64(low_b)]
                        last_k = end_both * group_in if dense else listed + flat_starts[runs + np.uint64(end_both)]
                        for k in range(np.uint64(first_k), np.uint64(last_k)):
                            value = flat_x[np.uint64(pixels) + k] if dense else flat_values[steps * k]
                            value_next = flat_x_next[np.uint64(pixels) + k] if dense else flat_values[steps * k + steps - 1]
                            offset = (np.int64(k) if dense else np.int64(flat_keys[k])) * padded
                            at = np.uint64(base_a + offset)
                            row = vload(flat_rows, at)
                            a0 = vrowadd(a0, row, value, binary_tag)
                            c0 = vrowadd(c0, row, value_next, binary_tag) if steps > 1 else c0
                            if vectors > 1:
                                row = vload(flat_rows, at + LANES)
                                a1 = vrowadd(a1, row, value, binary_tag)
                                c1 = vrowadd(c1, row, value_next, binary_tag) if steps > 1 else c1
                            if vectors > 2:
                                row = vload(flat_rows, at + 2 * LANES)
                                a2 = vrowadd(a2, row, value, binary_tag)
                                c2 = vrowadd(c2, row, value_next, binary_tag) if steps > 1 else c2
                            if vectors > 3:
                                row = vload(flat_rows, at + 3 * LANES)
                                a3 = vrowadd(a3, row, value, binary_tag)
                                c3 = vrowadd(c3, row, value_next, binary_tag) if steps > 1 else c3
                            at = np.uint64(base_b + offset)
                            row = vload(flat_rows, at)
                            b0 = vrowadd(b0, row, value, binary_tag)
                            d0 = vrowadd(d0, row, value_next, binary_tag) if steps > 1 else d0
                            if vectors > 1:
                                row = vload(flat_rows, at + LANES)
                                b1 = vrowadd(b1, row, value, binary_tag)
                                d1 = vrowadd(d1, row, value_next, binary_tag) if steps > 1 else d1
                            if vectors > 2:
                                row = vload(flat_rows, at + 2 * LANES)
                                b2 = vrowadd(b2, row, value, binary_tag)
                                d2 = vrowadd(d2, row, value_next, binary_tag) if steps > 1 else d2
                            if vectors > 3:
                                row = vload(flat_rows, at + 3 * LANES)
                                b3 = vrowadd(b3, row, value, binary_tag)
                                d3 = vrowadd(d3, row, value_next, binary_tag) if steps > 1 else d3
                        first_k = start_b * group_in if dense else listed + flat_starts[runs + np.uint64(start_b)]
                        last_k = high_b * group_in if dense else listed + flat_starts[runs + np.uint64(high_b)]
                        for k in range(np.uint64(first_k), np.uint64(last_k)):
                            value = flat_x[np.uint64(pixels) + k] if dense else flat_values[steps * k]
                            value_next = flat_x_next[np.uint64(pixels) + k] if dense else flat_values[steps * k + steps - 1]
                            offset = (np.int64(k) if dense else np.int64(flat_keys[k])) * padded
                            at = np.uint64(base_b + offset)
                            row = vload(flat_rows, at)
                            b0 = vrowadd(b0, row, value, binary_tag)
                            d0 = vrowadd(d0, row, value_next, binary_tag) if steps > 1 else d0
                            if vectors > 1:
                                row = vload(flat_rows, at + LANES)
                                b1 = vrowadd(b1, row, value, binary_tag)
                                d1 = vrowadd(d1, row, value_next, binary_tag) if steps > 1 else d1
                            if vectors > 2:
                                row = vload(flat_rows, at + 2 * LANES)
                                b2 = vrowadd(b2, row, value, binary_tag)
                                d2 = vrowadd(d2, row, value_next, binary_tag) if steps > 1 else d2
                            if vectors > 3:
                                row = vload(flat_rows, at + 3 * LANES)
                                b3 = vrowadd(b3, row, value, binary_tag)
                                d3 = vrowadd(d3, row, value_next, binary_tag) if steps > 1 else d3
                    at = (row_at + ox) * out_channels + group * group_out + block
                    _store_pixel(a0, a1, a2, a3, flat_scale, flat_bias, constants, flat_out, at, vectors, valid)
                    if pair:
                        _store_pixel(b0, b1, b2, b3, flat_scale, flat_bias, constants, flat_out, at + out_channels, vectors, valid)
                    if steps > 1:
                        _store_pixel(c0, c1, c2, c3, flat_scale, flat_bias, constants, flat_out_next, at, vectors, valid)
                        if pair:
                            _store_pixel(d0, d1, d2, d3, flat_scale, flat_bias, constants, flat_out_next, at + out_channels,
                                         vectors, valid)
                # The row's currents are still in the cache: run the neurons and the pooling over them.
                counts = _finish_row(flat_out, flat_out_next, flat_membrane, oy, ring, out_width, out_channels,
                                     group * group_out + block, valid, tau, threshold, neuron, steps, fresh, keep,
                                     flat_pooled, flat_pooled_next, pooled_height, pooled_width, pool_h, pool_w)
                fired += counts[0]
                fired_next += counts[1]
    return fired, fired_next


@njit(**NJIT_OPTIONS)
def _conv2d_strips(x, bordered, rows, scale, bias, stride_h, stride_w, top, left, out, vector_tag, binary_tag):
    """The dense mode of an ungrouped layer with at most 32 outputs, eight output pixels of a row at a time.

    ``bordered`` is a zeroed buffer that contains ``x`` at (top, left) with room
    for every receptive field of whole strips of eight. The kernel copies
    ``x`` in, then adds every weight row of a window to the eight pixels'
    accumulators (two vectors each: 16 in all) without bounds tests. The
    zero border adds +0 or -0 where the general kernel skips the padding,
    which leaves a sum that starts at +0 unchanged. The other terms are
    summed in the general kernel's order (ky, kx, c), so the result is the
    same bit for bit. On the MNIST model's first layer (1 to 32 channels, 28 x 28)
    the pixel-pair kernel spends most of its time on loop overhead, because
    each kernel row has only three inputs.
    """
    height, width, channels = x.shape
    _, kernel_h, kernel_w, _, padded = rows.shape
    out_height, out_width, out_channels = out.shape
    two = len(vector_tag) > 1
    bordered_width = bordered.shape[1]
    flat_in = bordered.reshape(-1)
    flat_x = x.reshape(-1)
    line = width * channels
    for iy in range(height):
        start = ((top + iy) * bordered_width + left) * channels
        for k in range(line):
            flat_in[start + k] = flat_x[iy * line + k]
    flat_rows = rows.reshape(-1)
    flat_out = out.reshape(-1)
    flat_scale = scale.reshape(-1)
    flat_bias = bias.reshape(-1)
    step = np.uint64(stride_w * channels)  # from one output pixel's inputs to the next one's
    for oy in range(out_height):
        for first in range(0, out_width, 8):
            a0 = vzero()
            a1 = vzero()
            b0 = vzero()
            b1 = vzero()
            c0 = vzero()
            c1 = vzero()
            d0 = vzero()
            d1 = vzero()
            e0 = vzero()
            e1 = vzero()
            f0 = vzero()
            f1 = vzero()
            g0 = vzero()
            g1 = vzero()
            h0 = vzero()
            h1 = vzero()
            for ky in range(kernel_h):
                for kx in range(kernel_w):
                    # Unsigned indices: Numba then adds no test for negative ones to each load.
                    at = np.uint64((ky * kernel_w + kx) * channels * padded)
                    pixel = np.uint64(((oy * stride_h + ky) * bordered_width + first * stride_w + kx) * channels)
                    for c in range(np.uint64(channels)):
                        row = vload(flat_rows, at + c * np.uint64(padded))
                        row_high = vload(flat_rows, at + c * np.uint64(padded) + np.uint64(LANES)) if two else row
                        k = pixel + c
                        value = flat_in[k]
                        a0 = vrowadd(a0, row, value, binary_tag)
                        a1 = vrowadd(a1, row_high, value, binary_tag) if two else a1
                        value = flat_in[k + step]
                        b0 = vrowadd(b0, row, value, binary_tag)
                        b1 = vrowadd(b1, row_high, value, binary_tag) if two else b1
                        value = flat_in[k + np.uint64(2) * step]
                        c0 = vrowadd(c0, row, value, binary_tag)
                        c1 = vrowadd(c1, row_high, value, binary_tag) if two else c1
                        value = flat_in[k + np.uint64(3) * step]
                        d0 = vrowadd(d0, row, value, binary_tag)
                        d1 = vrowadd(d1, row_high, value, binary_tag) if two else d1
                        value = flat_in[k + np.uint64(4) * step]
                        e0 = vrowadd(e0, row, value, binary_tag)
                        e1 = vrowadd(e1, row_high, value, binary_tag) if two else e1
                        value = flat_in[k + np.uint64(5) * step]
                        f0 = vrowadd(f0, row, value, binary_tag)
                        f1 = vrowadd(f1, row_high, value, binary_tag) if two else f1
                        value = flat_in[k + np.uint64(6) * step]
                        g0 = vrowadd(g0, row, value, binary_tag)
                        g1 = vrowadd(g1, row_high, value, binary_tag) if two else g1
                        value = flat_in[k + np.uint64(7) * step]
                        h0 = vrowadd(h0, row, value, binary_tag)
                        h1 = vrowadd(h1, row_high, value, binary_tag) if two else h1
            vectors = 2 if two else 1
            at = (oy * out_width + first) * out_channels
            count = min(8, out_width - first)
            _store_pixel(a0, a1, a0, a0, flat_scale, flat_bias, 0, flat_out, at, vectors, out_channels)
            if count > 1:
                _store_pixel(b0, b1, b0, b0, flat_scale, flat_bias, 0, flat_out, at + out_channels, vectors, out_channels)
            if count > 2:
                _store_pixel(c0, c1, c0, c0, flat_scale, flat_bias, 0, flat_out, at + 2 * out_channels, vectors, out_channels)
            if count > 3:
                _store_pixel(d0, d1, d0, d0, flat_scale, flat_bias, 0, flat_out, at + 3 * out_channels, vectors, out_channels)
            if count > 4:
                _store_pixel(e0, e1, e0, e0, flat_scale, flat_bias, 0, flat_out, at + 4 * out_channels, vectors, out_channels)
            if count > 5:
                _store_pixel(f0, f1, f0, f0, flat_scale, flat_bias, 0, flat_out, at + 5 * out_channels, vectors, out_channels)
            if count > 6:
                _store_pixel(g0, g1, g0, g0, flat_scale, flat_bias, 0, flat_out, at + 6 * out_channels, vectors, out_channels)
            if count > 7:
                _store_pixel(h0, h1, h0, h0, flat_scale, flat_bias, 0, flat_out, at + 7 * out_channels, vectors, out_channels)


@njit(inline="always")
def _transpose_bits(masks, at):
    """Transpose the 64 x 64 bit matrix in masks[at:at + 64] in place: bit j of word i becomes bit i of word j.

    Each round swaps the off-diagonal blocks of every 2w x 2w block on the
    diagonal, for w = 32, 16, ..., 1 (``low`` selects the low w bits of
    every 2w bits). The int64 words hold the uint64 masks' bits.
    """
    width = 32
    low = np.uint64(0x00000000FFFFFFFF)
    while width > 0:
        shift = np.uint64(width)
        for i in range(64):
            if i & width == 0:
                upper = np.uint64(masks[at + i])
                lower = np.uint64(masks[at + i + width])
                swapped = ((upper >> shift) ^ lower) & low
                masks[at + i] = np.int64(upper ^ (swapped << shift))
                masks[at + i + width] = np.int64(lower ^ swapped)
        width //= 2
        low ^= low << np.uint64(width)


@njit(inline="always")
def _channel_masks(flat_x, flat_next, two, channels, pixels, first, count, masks):
    """Set masks[64 k + c] to the non-zero bits of pixels [64 k, 64 k + 64) of channel ``first + c``, for c < count.

    ``flat_x`` is a flattened channels-last map (pixels, channels). With
    ``two``, an input non-zero in either map counts. Each pixel's ``count``
    channels give one mask, 64 pixels' masks a 64 x 64 bit matrix, and its
    transpose the channels' masks.
    """
    for start in range(0, pixels, MASK_BITS):
        for p in range(MASK_BITS):
            mask = np.uint64(0)
            if start + p < pixels:
                at = (start + p) * channels + first
                mask = _nonzero_mask(flat_x, at, count)
                if two:
                    mask |= _nonzero_mask(flat_next, at, count)
            masks[start + p] = np.int64(mask)
        _transpose_bits(masks, start)


@njit(inline="always")
def _pixel_mask(flat_x, flat_next, two, channels, pixels, first, channel, start, masks):
    """Return the non-zero bits of pixels [start, start + 64) of ``channel``; see :func:`_channel_masks`.

    With one channel the pixels are contiguous and give the mask directly.
    """
    if channels == 1:
        count = min(MASK_BITS, pixels - start)
        mask = _nonzero_mask(flat_x, start, count)
        if two:
            mask |= _nonzero_mask(flat_next, start, count)
        return mask
    return np.uint64(masks[start + channel - first])


def linear_masks(in_features: int, channels: int) -> np.ndarray:
    """Return the scratch buffer of :func:`_linear_events` for ``in_features`` inputs of ``channels`` channels (int64).

    The kernel keeps one mask per 64 pixels for each of 64 channels. With
    one channel it needs none, and gets one unused word.
    """
    if channels == 1:
        return np.zeros(1, np.int64)
    return np.zeros(MASK_BITS * -(-(in_features // channels) // MASK_BITS), np.int64)


@njit(**NJIT_OPTIONS)
def _linear_events(x, rows, scale, bias, out, vector_tag, binary_tag, channels, masks):
    """Compute a linear layer over the non-zero entries of ``x``; return how many there are.

    ``rows`` is (I, P), the weight rows of a one-group layer with O <= P
    outputs; ``scale`` and ``bias`` have P entries and ``out`` O. Each output sums its terms in input
    order, as the convolution kernels do for a 1 x 1 image, so the results
    are the same bit for bit.

    With ``channels`` C > 1, ``x`` is a flattened channels-last map (H, W, C)
    and input i is PyTorch's flattened (C, H, W) entry i, which is at
    (i % (H W)) * C + i // (H W): the layer reads the map of a Flatten node
    in the order the Flatten would have written it, so that node need not run.
    Two nested loops (channel, then pixel) replace the division.

    Vector compares find the non-zero inputs, 64 pixels of a channel to a
    mask (:func:`_channel_masks`, in ``masks`` from :func:`linear_masks`),
    and the loop visits the masks' set bits in input order. A test of each
    input would branch on data, and the CPU guesses wrong about once per
    non-zero input.
    """
    block_vectors = len(vector_tag)
    inputs, padded = rows.shape
    flat_rows = rows.reshape(-1)
    pixels = inputs // channels
    events = 0
    for block in range(0, padded, 4 * LANES):
        vectors = block_vectors if block_vectors > 0 else min(4, (padded - block) // LANES)
        acc0 = vzero()
        acc1 = vzero()
        acc2 = vzero()
        acc3 = vzero()
        events = 0
        for first in range(0, channels, MASK_BITS):
            count = min(MASK_BITS, channels - first)
            if channels > 1:
                _channel_masks(x, x, False, channels, pixels, first, count, masks)
            for channel in range(first, first + count):
                for start in range(0, pixels, MASK_BITS):
                    mask = _pixel_mask(x, x, False, channels, pixels, first, channel, start, masks)
                    while mask != 0:
                        pixel = start + np.int64(trailing_zeros(mask))
                        mask &= mask - np.uint64(1)
                        value = x[np.uint64(pixel * channels + channel)]
                        events += 1
                        at = np.uint64((channel * pixels + pixel) * padded + block)
                        acc0 = vrowadd(acc0, vload(flat_rows, at), value, binary_tag)
                        if vectors > 1:
                            acc1 = vrowadd(acc1, vload(flat_rows, at + LANES), value, binary_tag)
                        if vectors > 2:
                            acc2 = vrowadd(acc2, vload(flat_rows, at + 2 * LANES), value, binary_tag)
                        if vectors > 3:
                            acc3 = vrowadd(acc3, vload(flat_rows, at + 3 * LANES), value, binary_tag)
        _store_pixel(acc0, acc1, acc2, acc3, scale, bias, block, out, block, vectors, min(4 * LANES, out.shape[0] - block))
    return events


@njit(**NJIT_OPTIONS)
def _linear_events_pair(x, x_next, rows, scale, bias, out, out_next, vector_tag, binary_tag, channels, masks):
    """:func:`_linear_events` on two timesteps' inputs in one pass; return both counts of non-zero inputs.

    An input that is non-zero at either timestep adds its row to both sums,
    with the value 0 at the other. Adding 0 leaves a sum that starts at +0
    unchanged, so both results equal one-timestep calls bit for bit.
    """
    block_vectors = len(vector_tag)
    inputs, padded = rows.shape
    flat_rows = rows.reshape(-1)
    pixels = inputs // channels
    events = 0
    events_next = 0
    for block in range(0, padded, 4 * LANES):
        vectors = block_vectors if block_vectors > 0 else min(4, (padded - block) // LANES)
        acc0 = vzero()
        acc1 = vzero()
        acc2 = vzero()
        acc3 = vzero()
        next0 = vzero()
        next1 = vzero()
        next2 = vzero()
        next3 = vzero()
        events = 0
        events_next = 0
        for first in range(0, channels, MASK_BITS):
            count = min(MASK_BITS, channels - first)
            if channels > 1:
                _channel_masks(x, x_next, True, channels, pixels, first, count, masks)
            for channel in range(first, first + count):
                for start in range(0, pixels, MASK_BITS):
                    mask = _pixel_mask(x, x_next, True, channels, pixels, first, channel, start, masks)
                    while mask != 0:
                        pixel = start + np.int64(trailing_zeros(mask))
                        mask &= mask - np.uint64(1)
                        k = np.uint64(pixel * channels + channel)
                        value = x[k]
                        value_next = x_next[k]
                        events += 1 if value != 0.0 else 0
                        events_next += 1 if value_next != 0.0 else 0
                        at = np.uint64((channel * pixels + pixel) * padded + block)
                        row = vload(flat_rows, at)
                        acc0 = vrowadd(acc0, row, value, binary_tag)
                        next0 = vrowadd(next0, row, value_next, binary_tag)
                        if vectors > 1:
                            row = vload(flat_rows, at + LANES)
                            acc1 = vrowadd(acc1, row, value, binary_tag)
                            next1 = vrowadd(next1, row, value_next, binary_tag)
                        if vectors > 2:
                            row = vload(flat_rows, at + 2 * LANES)
                            acc2 = vrowadd(acc2, row, value, binary_tag)
                            next2 = vrowadd(next2, row, value_next, binary_tag)
                        if vectors > 3:
                            row = vload(flat_rows, at + 3 * LANES)
                            acc3 = vrowadd(acc3, row, value, binary_tag)
                            next3 = vrowadd(next3, row, value_next, binary_tag)
        valid = min(4 * LANES, out.shape[0] - block)
        _store_pixel(acc0, acc1, acc2, acc3, scale, bias, block, out, block, vectors, valid)
        _store_pixel(next0, next1, next2, next3, scale, bias, block, out_next, block, vectors, valid)
    return events, events_next


@njit(**PARALLEL_OPTIONS)
def _conv2d_pairs_parallel(
    x, x_next, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
    out, out_next, membrane, tau, threshold, vector_tag, binary_tag, dense_tag, time_tag, neuron_tag, fresh, keep,
    pooled, pooled_next, pool_h, pool_w, parts,
):
    """Split the output rows into ``parts`` bands and run :func:`_conv2d_pairs` on Numba's thread pool.

    ``out`` must hold every output row. With pooling, each band starts at a
    multiple of ``pool_h``, so that no pooling window spans two bands.
    """
    out_height = out.shape[0]
    band = -(-out_height // parts)
    if pool_h > 1:
        band = -(-band // pool_h) * pool_h
    fired = 0
    fired_next = 0
    for part in prange(parts):
        counts = _conv2d_pairs(
            x, x_next, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
            out, out_next, membrane, tau, threshold, vector_tag, binary_tag, dense_tag, time_tag, neuron_tag, fresh,
            keep, pooled, pooled_next, pool_h, pool_w, min(out_height, part * band), min(out_height, (part + 1) * band),
        )
        fired += counts[0]
        fired_next += counts[1]
    return fired, fired_next


@njit(**PARALLEL_OPTIONS)
def _conv2d_parallel(
    x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
    dilation_w, dense, binary_tag, out, parts,
):
    """Split the output rows into ``parts`` bands and compute them on Numba's thread pool."""
    out_height = out.shape[0]
    band = -(-out_height // parts)
    for part in prange(parts):
        _conv2d_rows(
            x, keys, values, starts, rows, scale, bias, stride_h, stride_w, top, left, dilation_h,
            dilation_w, dense, binary_tag, out, part * band, min(out_height, (part + 1) * band),
        )


@njit(**NJIT_OPTIONS)
def _depthwise_rows(x, weights, scale, bias, stride_h, stride_w, top, left, dilation_h, dilation_w, out,
                    row_start, row_stop):
    """Compute output rows [row_start, row_stop) of a depthwise convolution, 16 channels per vector.

    ``weights`` is (kh, kw, C). Each output channel sums over (ky, kx) in
    increasing order, as the general kernel does, so the results are the same.
    """
    height, width, channels = x.shape
    kernel_h, kernel_w, _ = weights.shape
    out_width = out.shape[1]
    flat_x = x.reshape(-1)
    flat_weights = weights.reshape(-1)
    flat_out = out.reshape(-1)
    vector_channels = channels - channels % LANES
    for oy in range(row_start, row_stop):
        for ox in range(out_width):
            target = (oy * out_width + ox) * channels
            for first in range(0, vector_channels, LANES):
                acc = vzero()
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky * dilation_h - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx * dilation_w - left
                        if ix < 0 or ix >= width:
                            continue
                        acc = vmuladd_lanes(acc, vload(flat_x, (iy * width + ix) * channels + first),
                                            vload(flat_weights, (ky * kernel_w + kx) * channels + first))
                vstore(flat_out, target + first, vaffine(acc, vload(scale, first), vload(bias, first)))
            for channel in range(vector_channels, channels):
                total = np.float32(0.0)
                for ky in range(kernel_h):
                    iy = oy * stride_h + ky * dilation_h - top
                    if iy < 0 or iy >= height:
                        continue
                    for kx in range(kernel_w):
                        ix = ox * stride_w + kx * dilation_w - left
                        if ix < 0 or ix >= width:
                            continue
                        total += flat_x[(iy * width + ix) * channels + channel] * \
                            flat_weights[(ky * kernel_w + kx) * channels + channel]
                flat_out[target + channel] = scale[channel] * total + bias[channel]


@njit(**PARALLEL_OPTIONS)
def _depthwise_parallel(x, weights, scale, bias, stride_h, stride_w, top, left, dilation_h, dilation_w, out, parts):
    """Split a depthwise convolution's output rows into ``parts`` bands on Numba's thread pool."""
    out_height = out.shape[0]
    band = -(-out_height // parts)
    for part in prange(parts):
        _depthwise_rows(x, weights, scale, bias, stride_h, stride_w, top, left, dilation_h, dilation_w, out,
                        part * band, min(out_height, (part + 1) * band))
