"""A 3 x 3 convolution that adds each non-zero input to the output pixels it reaches.

``_conv2d_pairs`` gathers: each output pixel walks the list of non-zero
inputs in its receptive field. At a low firing rate most of its time goes
to walking short lists, three per kernel row, whose ends the CPU cannot
predict. This kernel scatters instead. It reads the input in raster order,
finds the non-zero channels of each pixel with vector compares, and adds
each one's weights to the nine output pixels it reaches. Those nine
pixels' sums (32 channels each, 18 vectors) stay in registers while the
channels of one input pixel are added, so there is one short loop per
non-zero input pixel and no list. Along a run of non-zero pixels the
window of nine sums stays in registers and slides one column per pixel.
Each pixel then loads and stores one column of sums, not three.

The order of the additions is that of the gather kernel. Output pixel
(oy, ox) receives input (oy + ky - top, ox + kx - left) with weight
(ky, kx). Raster order over the inputs therefore reaches it in the order
of ky, then kx, then the channel, which is the order in the module
docstring of ``conv.py``. Zero inputs add nothing in either kernel, so
the two give the same sums bit for bit.

The sums live in a ring of three accumulator rows, each two columns
wider than the input, so that the additions at the left and right borders
need no test. A fourth row takes the additions to output rows outside the
image. Output row oy is complete once input row oy - top + 2 is added;
the kernel then applies scale and bias, runs the neurons and the pooling
over it (``rows.py``), and clears it for reuse. With neurons and two
timesteps the scaled sums go straight into the neurons
(:func:`_drain_fire_pair`), never stored as currents. It serves layers with a
3 x 3 kernel, stride 1, no dilation, one group and padding of at most 2
on each side, with at most 32 outputs (18 vectors of sums fit in the
registers, 36 do not), on one thread.
"""

import numpy as np
from numba import njit

from reverb_edge.kernels.config import NJIT_OPTIONS
from reverb_edge.kernels.popcount import popcount, trailing_zeros
from reverb_edge.kernels.rows import _finish_row, _pool_row, _store_pixel
from reverb_edge.kernels.simd import (
    LANES,
    vaffine,
    vcount_fired,
    vfire,
    vload,
    vmuladd,
    vnonzero_bits,
    vreset,
    vrowadd,
    vstore,
    vzero,
)

# Most outputs the kernel serves: nine pixels of two 16-lane vectors are 18 vector registers.
SCATTER_BLOCK = 2 * LANES

# Input channels whose non-zero bits one 64-bit mask holds.
MASK_CHANNELS = 64


def scatter_eligible(kernel: tuple, stride: tuple, dilation: tuple, groups: int, padding: tuple) -> bool:
    """Return whether :func:`_conv2d_scatter` serves a layer of this geometry (padding: top, bottom, left, right)."""
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and max(padding) <= 2)


def scatter_weights(rows: np.ndarray) -> np.ndarray:
    """Reorder weight rows ``rows[0, ky, kx, c, :]`` to ``[c, ky, kx, :]``: one input channel's nine rows together.

    Always a copy: with one input channel the reordered rows are contiguous
    already, and a view would share memory with ``rows``, which a program's
    arena cannot hold twice.
    """
    return rows[0].transpose(2, 0, 1, 3).copy()


def scatter_buffers(in_width: int, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the kernel's scratch buffers: the zeroed accumulator rings of two timesteps and the row masks.

    The rings are (2, 4 rows, in_width + 2 columns, SCATTER_BLOCK) float32.
    The masks of one input row (see :func:`_row_masks`) are int64, one per
    pixel and 64 channels. With fewer than 16 channels one word per 64 of
    the row's values follows them. With both prepared, the kernel allocates nothing
    per call.
    """
    rings = np.zeros((2, 4, in_width + 2, SCATTER_BLOCK), np.float32)
    words = -(-in_width * in_channels // 64) if in_channels < LANES else 0
    masks = np.zeros(in_width * -(-in_channels // MASK_CHANNELS) + words, np.int64)
    return rings, masks


@njit(inline="always")
def _nonzero_mask(flat_x, pixel, count):
    """Return a mask whose bit j is set where flat_x[pixel + j] is not 0.0 (NaN included), for j < count <= 64."""
    mask = np.uint64(0)
    whole = count - count % LANES
    for j in range(0, whole, LANES):
        mask |= vnonzero_bits(flat_x, pixel + j) << np.uint64(j)
    for j in range(whole, count):
        if flat_x[pixel + j] != 0.0:
            mask |= np.uint64(1) << np.uint64(j)
    return mask


@njit(inline="always")
def _load_pair(flat, at, vectors):
    """Load one pixel's sums: one or two vectors."""
    return vload(flat, at), (vload(flat, at + LANES) if vectors > 1 else vzero())


@njit(inline="always")
def _add_pair(acc0, acc1, flat_weights, at, value, vectors, binary_tag):
    """Add ``value`` times one weight row (one or two vectors) to one pixel's sums."""
    acc0 = vrowadd(acc0, vload(flat_weights, at), value, binary_tag)
    acc1 = vrowadd(acc1, vload(flat_weights, at + LANES), value, binary_tag) if vectors > 1 else acc1
    return acc0, acc1


@njit(inline="always")
def _store_pair(flat, at, acc0, acc1, vectors):
    """Store one pixel's sums."""
    vstore(flat, at, acc0)
    if vectors > 1:
        vstore(flat, at + LANES, acc1)


@njit(inline="always")
def _load_column(flat_acc, above, middle, below, column, vectors):
    """Load the sums of one ring column in the rows at ``above``, ``middle`` and ``below``: six vectors."""
    a0, a1 = _load_pair(flat_acc, above + column, vectors)
    m0, m1 = _load_pair(flat_acc, middle + column, vectors)
    b0, b1 = _load_pair(flat_acc, below + column, vectors)
    return a0, a1, m0, m1, b0, b1


@njit(inline="always")
def _store_column(flat_acc, above, middle, below, column, a0, a1, m0, m1, b0, b1, vectors):
    """Store the sums of one ring column, the inverse of :func:`_load_column`."""
    _store_pair(flat_acc, above + column, a0, a1, vectors)
    _store_pair(flat_acc, middle + column, m0, m1, vectors)
    _store_pair(flat_acc, below + column, b0, b1, vectors)


@njit(inline="always")
def _row_masks(flat_x, iy, width, channels, masks):
    """Set masks[ix * chunks + k] to the non-zero mask of channels [64k, 64k + 64) of input pixel (iy, ix).

    The int64 array keeps the uint64 mask's bits. Returns whether the row
    has a non-zero input.

    With fewer than 16 channels a pixel's channels do not fill a vector.
    The row's values are contiguous, so they are tested 64 at a time into
    the words after the pixels' masks, and each pixel's bits are cut out of
    those words (a pixel's bits may span two). Testing each pixel on its own
    had cost 250 ns per row of the 2-channel N-MNIST input, half of the
    first layer's cost without events.
    """
    chunks = (channels + MASK_CHANNELS - 1) // MASK_CHANNELS
    found = np.uint64(0)
    if channels < LANES:
        values = width * channels
        words = np.uint64(width)
        for w in range(0, values, 64):
            word = _nonzero_mask(flat_x, iy * values + w, min(64, values - w))
            masks[words + np.uint64(w // 64)] = np.int64(word)
            found |= word
        if found == 0:
            return False
        keep = (np.uint64(1) << np.uint64(channels)) - np.uint64(1)
        for ix in range(width):
            bit = ix * channels
            shift = np.uint64(bit % 64)
            mask = np.uint64(masks[words + np.uint64(bit // 64)]) >> shift
            if bit % 64 + channels > 64:
                mask |= np.uint64(masks[words + np.uint64(bit // 64 + 1)]) << (np.uint64(64) - shift)
            masks[np.uint64(ix)] = np.int64(mask & keep)
        return True
    for ix in range(width):
        pixel = (iy * width + ix) * channels
        for k in range(chunks):
            mask = _nonzero_mask(flat_x, pixel + k * MASK_CHANNELS, min(MASK_CHANNELS, channels - k * MASK_CHANNELS))
            masks[np.uint64(ix * chunks + k)] = np.int64(mask)
            found |= mask
    return found != 0


@njit(inline="always")
def _scatter_row(flat_x, iy, width, channels, flat_weights, padded, flat_acc, above, middle, below, vectors, binary_tag,
                 masks):
    """Add the non-zero inputs of input row ``iy`` to the ring rows at ``above``, ``middle`` and ``below``.

    ``above`` is where the ring row of output row iy + top starts (kernel row
    0), ``middle`` of iy + top - 1, ``below`` of iy + top - 2. Output
    column ix + left - kx sits in ring column ix + 2 - kx. Input pixel ix
    therefore reaches ring columns ix + 2, ix + 1 and ix, a window of three
    columns that slides one column per pixel.

    The row's non-zero masks go to ``masks`` first (see :func:`_row_masks`).
    The window's sums then stay in registers along a run of non-zero
    pixels. The next pixel stores the column that left the window and loads
    the one that entered it, 6 vectors each way instead of 18. A run ends
    at a zero pixel, which stores the whole window. Nothing in the run
    calls a function, because the registers would be saved around the call.
    Returns how many non-zero inputs the row has.
    """
    chunks = (channels + MASK_CHANNELS - 1) // MASK_CHANNELS
    if not _row_masks(flat_x, iy, width, channels, masks):
        return 0
    events = 0
    row_stride = 3 * 3 * padded  # from one input channel's nine weight rows to the next channel's
    step = np.uint64(padded)
    ix = 0
    while ix < width:
        nonzero = False
        for k in range(chunks):
            nonzero = nonzero or masks[ix * chunks + k] != 0
        if not nonzero:
            ix += 1
            continue
        # A run of non-zero pixels starts at ix. Unsigned offsets: Numba adds no test for negative
        # indices to the loads below.
        a00, a01, m00, m01, b00, b01 = _load_column(flat_acc, above, middle, below, np.uint64((ix + 2) * SCATTER_BLOCK),
                                                    vectors)  # ring column ix + 2 (kx = 0)
        a10, a11, m10, m11, b10, b11 = _load_column(flat_acc, above, middle, below, np.uint64((ix + 1) * SCATTER_BLOCK),
                                                    vectors)  # ring column ix + 1 (kx = 1)
        a20, a21, m20, m21, b20, b21 = _load_column(flat_acc, above, middle, below, np.uint64(ix * SCATTER_BLOCK),
                                                    vectors)  # ring column ix (kx = 2)
        while True:
            pixel = (iy * width + ix) * channels
            for k in range(chunks):
                mask = np.uint64(masks[ix * chunks + k])
                while mask != 0:
                    channel = k * MASK_CHANNELS + np.int64(trailing_zeros(mask))
                    value = flat_x[np.uint64(pixel + channel)]
                    at = np.uint64(channel * row_stride)
                    a00, a01 = _add_pair(a00, a01, flat_weights, at, value, vectors, binary_tag)
                    a10, a11 = _add_pair(a10, a11, flat_weights, at + step, value, vectors, binary_tag)
                    a20, a21 = _add_pair(a20, a21, flat_weights, at + 2 * step, value, vectors, binary_tag)
                    m00, m01 = _add_pair(m00, m01, flat_weights, at + 3 * step, value, vectors, binary_tag)
                    m10, m11 = _add_pair(m10, m11, flat_weights, at + 4 * step, value, vectors, binary_tag)
                    m20, m21 = _add_pair(m20, m21, flat_weights, at + 5 * step, value, vectors, binary_tag)
                    b00, b01 = _add_pair(b00, b01, flat_weights, at + 6 * step, value, vectors, binary_tag)
                    b10, b11 = _add_pair(b10, b11, flat_weights, at + 7 * step, value, vectors, binary_tag)
                    b20, b21 = _add_pair(b20, b21, flat_weights, at + 8 * step, value, vectors, binary_tag)
                    events += 1
                    mask &= mask - np.uint64(1)
            ix += 1
            if ix == width:
                break
            nonzero = False
            for k in range(chunks):
                nonzero = nonzero or masks[ix * chunks + k] != 0
            if not nonzero:
                break
            # Slide the window one column: column ix - 1 leaves it, column ix + 2 enters.
            _store_column(flat_acc, above, middle, below, np.uint64((ix - 1) * SCATTER_BLOCK), a20, a21, m20, m21, b20,
                          b21, vectors)
            a20, a21, m20, m21, b20, b21 = a10, a11, m10, m11, b10, b11
            a10, a11, m10, m11, b10, b11 = a00, a01, m00, m01, b00, b01
            a00, a01, m00, m01, b00, b01 = _load_column(flat_acc, above, middle, below,
                                                        np.uint64((ix + 2) * SCATTER_BLOCK), vectors)
        # The run ended before pixel ix: store the window of pixel ix - 1, columns ix + 1, ix and ix - 1.
        _store_column(flat_acc, above, middle, below, np.uint64((ix + 1) * SCATTER_BLOCK), a00, a01, m00, m01, b00, b01,
                      vectors)
        _store_column(flat_acc, above, middle, below, np.uint64(ix * SCATTER_BLOCK), a10, a11, m10, m11, b10, b11,
                      vectors)
        _store_column(flat_acc, above, middle, below, np.uint64((ix - 1) * SCATTER_BLOCK), a20, a21, m20, m21, b20, b21,
                      vectors)
        ix += 1
    return events


@njit(inline="always")
def _drain_row(flat_acc, ring_at, left, flat_scale, flat_bias, flat_out, out_at, out_width, out_channels, vectors):
    """Store one finished output row's sums, scaled and biased, at ``out_at`` and clear them in the ring."""
    for ox in range(out_width):
        at = np.uint64(ring_at + (ox + 2 - left) * SCATTER_BLOCK)
        acc0, acc1 = _load_pair(flat_acc, at, vectors)
        _store_pair(flat_acc, at, vzero(), vzero(), vectors)
        _store_pixel(acc0, acc1, acc0, acc0, flat_scale, flat_bias, 0, flat_out, out_at + ox * out_channels,
                     vectors, out_channels)


@njit(inline="always")
def _drain_fire_pair(flat_acc, flat_acc_next, ring_at, left, flat_scale, flat_bias, flat_out, flat_out_next, out_at,
                     flat_membrane, membrane_at, out_width, out_channels, vectors, tau, threshold, fresh, keep):
    """Drain one finished output row of both timesteps into their LIF neurons, and return the neurons fired at each.

    The same arithmetic as :func:`_drain_row` for each timestep followed by
    ``_fire_row_pair``, with the currents kept in registers instead of
    stored and loaded again. Needs ``out_channels == 16 * vectors``.

    NOTE: where a NaN current meets a NaN membrane potential of the other
    sign, the stored potential may differ from the gather kernel's in the
    NaN's sign bit. LLVM may order the addition's operands either way, and
    x86 returns the first operand's NaN. Every other value is the same.
    """
    fired = 0
    fired_next = 0
    for ox in range(out_width):
        ring = np.uint64(ring_at + (ox + 2 - left) * SCATTER_BLOCK)
        out = np.uint64(out_at + ox * out_channels)
        potentials = np.uint64(membrane_at + ox * out_channels)
        for lane in range(0, vectors * LANES, LANES):
            scale = vload(flat_scale, lane)
            bias = vload(flat_bias, lane)
            current = vaffine(vload(flat_acc, ring + lane), scale, bias)
            current_next = vaffine(vload(flat_acc_next, ring + lane), scale, bias)
            vstore(flat_acc, ring + lane, vzero())
            vstore(flat_acc_next, ring + lane, vzero())
            potential = current if fresh else vmuladd(current, vload(flat_membrane, potentials + lane), tau)
            vstore(flat_out, out + lane, vfire(potential, threshold))
            fired += vcount_fired(potential, threshold)
            potential = vmuladd(current_next, vreset(potential, threshold), tau)
            vstore(flat_out_next, out + lane, vfire(potential, threshold))
            fired_next += vcount_fired(potential, threshold)
            if keep:
                vstore(flat_membrane, potentials + lane, vreset(potential, threshold))
    return fired, fired_next


@njit(**NJIT_OPTIONS)
def _conv2d_scatter(
    x, x_next, weights, scale, bias, top, left, accumulators, masks, out, out_next, membrane, tau, threshold, vector_tag,
    binary_tag, time_tag, neuron_tag, fresh, keep, pooled, pooled_next, pool_h, pool_w,
):
    """Run a 3 x 3, stride-1 convolution by scattering its non-zero inputs, for one timestep or two.

    ``weights`` comes from :func:`scatter_weights`, ``accumulators`` and
    ``masks`` from :func:`scatter_buffers`. The kernel clears each ring row after reading
    it, so the rings' output columns are zero again when it returns. The
    spare row and the border columns keep sums that nothing reads. The
    layer has at most SCATTER_BLOCK outputs, padded with ``scale``,
    ``bias`` and the weights to ``16 * len(vector_tag)``, so that the
    vector count is a compile-time constant. Every other argument means
    what it means for ``_conv2d_pairs``: ``binary_tag``, ``time_tag``,
    ``neuron_tag``, ``fresh``, ``keep``, the output ring ``out`` and the
    merged pooling. Both timesteps are scattered row by row into their own
    ring, so an input that is zero at one of them costs nothing there.

    Returns (non-zero inputs of x, of x_next, neurons fired, at the next
    timestep); the counts for x_next are 0 with one timestep.
    """
    steps = len(time_tag)
    vectors = len(vector_tag)
    neuron = len(neuron_tag) > 0
    height, width, channels = x.shape
    out_height = membrane.shape[0]
    ring, out_width, out_channels = out.shape
    padded = weights.shape[-1]
    pooled_height, pooled_width = pooled.shape[0], pooled.shape[1]
    flat_x = x.reshape(-1)
    flat_x_next = x_next.reshape(-1)
    flat_weights = weights.reshape(-1)
    flat_scale = scale.reshape(-1)
    flat_bias = bias.reshape(-1)
    flat_out = out.reshape(-1)
    flat_out_next = out_next.reshape(-1)
    flat_membrane = membrane.reshape(-1)
    flat_pooled = pooled.reshape(-1)
    flat_pooled_next = pooled_next.reshape(-1)
    flat_acc = accumulators[0].reshape(-1)
    flat_acc_next = accumulators[1].reshape(-1)
    ring_row = accumulators.shape[2] * SCATTER_BLOCK  # elements per ring row
    spare = 3 * ring_row  # the ring's fourth row, for output rows outside the image
    events = 0
    events_next = 0
    fired = 0
    fired_next = 0

    # Input rows from -top to out_height - top + 1: each ends with the output row it completes.
    for iy in range(-top, out_height - top + 2):
        if 0 <= iy < height:
            oy = iy + top
            above = np.uint64((oy % 3) * ring_row if oy < out_height else spare)
            middle = np.uint64(((oy - 1) % 3) * ring_row if 1 <= oy <= out_height else spare)
            below = np.uint64(((oy - 2) % 3) * ring_row if 2 <= oy <= out_height + 1 else spare)
            events += _scatter_row(flat_x, iy, width, channels, flat_weights, padded, flat_acc, above, middle, below,
                                   vectors, binary_tag, masks)
            if steps > 1:
                events_next += _scatter_row(flat_x_next, iy, width, channels, flat_weights, padded, flat_acc_next,
                                            above, middle, below, vectors, binary_tag, masks)
        done = iy + top - 2
        if done < 0 or done >= out_height:
            continue
        ring_at = (done % 3) * ring_row
        out_at = (done % ring) * out_width * out_channels
        if neuron and steps > 1 and out_channels == vectors * LANES:
            counts = _drain_fire_pair(flat_acc, flat_acc_next, ring_at, left, flat_scale, flat_bias, flat_out,
                                      flat_out_next, out_at, flat_membrane, done * out_width * out_channels, out_width,
                                      out_channels, vectors, tau, threshold, fresh, keep)
            _pool_row(flat_out, flat_out_next, done, ring, out_width, out_channels, 0, out_channels, steps, flat_pooled,
                      flat_pooled_next, pooled_height, pooled_width, pool_h, pool_w)
            fired += counts[0]
            fired_next += counts[1]
            continue
        _drain_row(flat_acc, ring_at, left, flat_scale, flat_bias, flat_out, out_at, out_width, out_channels, vectors)
        if steps > 1:
            _drain_row(flat_acc_next, ring_at, left, flat_scale, flat_bias, flat_out_next, out_at, out_width,
                       out_channels, vectors)
        counts = _finish_row(flat_out, flat_out_next, flat_membrane, done, ring, out_width, out_channels, 0,
                             out_channels, tau, threshold, neuron, steps, fresh, keep, flat_pooled, flat_pooled_next,
                             pooled_height, pooled_width, pool_h, pool_w)
        fired += counts[0]
        fired_next += counts[1]
    return events, events_next, fired, fired_next


# The float32 just above 1.0: a lane equals 1.0 when it is >= 1.0 but not >= this.
_ABOVE_ONE = np.nextafter(np.float32(1.0), np.float32(2.0))


@njit(**NJIT_OPTIONS)
def _count_events(x):
    """Return (non-zero inputs, inputs equal to 1.0) of ``x``: what the popcount test needs, without a list."""
    flat_x = x.reshape(-1)
    size = len(flat_x)
    whole = size - size % LANES
    one = np.float32(1.0)
    events = 0
    ones = 0
    for i in range(0, whole, LANES):
        events += popcount(vnonzero_bits(flat_x, i))
        vector = vload(flat_x, i)
        ones += vcount_fired(vector, one) - vcount_fired(vector, _ABOVE_ONE)
    for i in range(whole, size):
        events += 1 if flat_x[i] != 0.0 else 0
        ones += 1 if flat_x[i] == 1.0 else 0
    return events, ones
