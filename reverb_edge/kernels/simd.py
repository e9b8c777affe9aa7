"""A 16-lane float32 vector type for Numba kernels, kept in registers.

Numba has no SIMD types. Written as plain loops over an accumulator array,
the convolution's inner loops stayed scalar: LLVM cannot tell that the
accumulators and the weights do not overlap. These intrinsics emit LLVM
``<16 x float>`` values directly, so a kernel keeps up to four of them as
accumulators in registers. ``vmuladd`` is a float32 multiply followed by an
add (no fused multiply-add), which rounds like the scalar code. ``vrowadd``
fuses them for binary weight rows: with weights of -1, 0 and +1 the product
is exact, so the fused result rounds the same. LLVM
splits each vector into the registers the CPU has (four 128-bit registers
on ARM NEON).

With ``NUMBA_DISABLE_JIT=1`` the same names run as NumPy code, so kernels
that use them stay plain Python.
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic, models, register_model

LANES = 16

_VECTOR = ir.VectorType(ir.FloatType(), LANES)


class Float32x16(types.Type):
    """The Numba type of a 16-lane float32 vector value."""

    def __init__(self):
        super().__init__(name="Float32x16")


float32x16 = Float32x16()


@register_model(Float32x16)
class _Float32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _contiguous(array) -> bool:
    """Return whether a Numba array type is C-contiguous: vector loads and stores ignore strides."""
    return isinstance(array, types.Array) and array.layout == "C"


def _vector_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _VECTOR.as_pointer())


@intrinsic
def _vzero(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(_VECTOR, [0.0] * LANES)

    return float32x16(), codegen


@intrinsic
def _vload(typingctx, array, index):
    """Load array[index:index + 16]; the caller guarantees the range is inside the array."""
    if not _contiguous(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)

    return float32x16(array, index), codegen


@intrinsic
def _vstore(typingctx, array, index, vector):
    """Store a vector into array[index:index + 16]."""
    if not _contiguous(array):
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return types.void(array, index, vector), codegen


@intrinsic
def _vmuladd(typingctx, accumulator, vector, value):
    """Return accumulator + vector * value, value being a float32 scalar broadcast to every lane."""

    def codegen(context, builder, signature, args):
        accumulator, vector, value = args
        return builder.fadd(accumulator, builder.fmul(vector, _broadcast(builder, value)))

    return float32x16(accumulator, vector, value), codegen


@intrinsic
def _vrowadd(typingctx, accumulator, vector, value, binary_tag):
    """Return accumulator + vector * value, fused into one multiply-add if ``binary_tag`` is a non-empty tuple.

    Fuse only binary rows (every lane -1, 0 or +1): the product is then exact,
    so the fused result equals ``vmuladd``'s separate multiply and add. The
    choice is made when the kernel is compiled, from the tag's type.
    """
    fused = isinstance(binary_tag, types.BaseTuple) and len(binary_tag) > 0

    def codegen(context, builder, signature, args):
        accumulator, vector, value, _ = args
        broadcast = _broadcast(builder, value)
        if fused:
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v16f32")
            return builder.call(fma, [vector, broadcast, accumulator])
        return builder.fadd(accumulator, builder.fmul(vector, broadcast))

    return float32x16(accumulator, vector, value, binary_tag), codegen


@intrinsic
def _vlane(typingctx, vector, lane):
    """Return lane ``lane`` (0 to 15) of a vector as a float32 scalar."""

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return types.float32(vector, lane), codegen


@intrinsic
def _vmuladd_lanes(typingctx, accumulator, a, b):
    """Return accumulator + a * b, lane by lane."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], builder.fmul(args[1], args[2]))

    return float32x16(accumulator, a, b), codegen


def _broadcast(builder, value):
    undefined = ir.Constant(_VECTOR, ir.Undefined)
    lane0 = builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, undefined, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


@intrinsic
def _vfill(typingctx, value):
    """Return a vector with ``value`` (a float32 scalar) in every lane."""

    def codegen(context, builder, signature, args):
        return _broadcast(builder, context.cast(builder, args[0], signature.args[0], types.float32))

    return float32x16(value), codegen


@intrinsic
def _vdivide(typingctx, vector, value):
    """Return vector / value, value being a float32 scalar."""

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[1], signature.args[1], types.float32)
        return builder.fdiv(args[0], _broadcast(builder, value))

    return float32x16(vector, value), codegen


@intrinsic
def _vadd(typingctx, a, b):
    """Return a + b, lane by lane."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return float32x16(a, b), codegen


@intrinsic
def _vmax(typingctx, best, value):
    """Return, lane by lane, value where value > best or value is NaN, else best (PyTorch's max pooling)."""

    def codegen(context, builder, signature, args):
        best, value = args
        greater = builder.fcmp_ordered(">", value, best)
        not_a_number = builder.fcmp_unordered("uno", value, value)
        return builder.select(builder.or_(greater, not_a_number), value, best)

    return float32x16(best, value), codegen


@intrinsic
def _vaffine(typingctx, vector, scale, bias):
    """Return vector * scale + bias, lane by lane."""

    def codegen(context, builder, signature, args):
        vector, scale, bias = args
        return builder.fadd(builder.fmul(scale, vector), bias)

    return float32x16(vector, scale, bias), codegen


@intrinsic
def _vfire(typingctx, potential, threshold):
    """Return, lane by lane, the spike of a LIF neuron: potential where potential >= threshold, else 0."""

    def codegen(context, builder, signature, args):
        fired = builder.fcmp_ordered(">=", args[0], _broadcast(builder, args[1]))
        return builder.select(fired, args[0], ir.Constant(_VECTOR, [0.0] * LANES))

    return float32x16(potential, threshold), codegen


@intrinsic
def _vreset(typingctx, potential, threshold):
    """Return, lane by lane, the membrane potential after the hard reset: 0 where it fired, else potential."""

    def codegen(context, builder, signature, args):
        fired = builder.fcmp_ordered(">=", args[0], _broadcast(builder, args[1]))
        return builder.select(fired, ir.Constant(_VECTOR, [0.0] * LANES), args[0])

    return float32x16(potential, threshold), codegen


@intrinsic
def _vcount_fired(typingctx, potential, threshold):
    """Return how many lanes have potential >= threshold, as an int64."""

    def codegen(context, builder, signature, args):
        fired = builder.fcmp_ordered(">=", args[0], _broadcast(builder, args[1]))
        bits = builder.bitcast(fired, ir.IntType(LANES))
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(LANES), [ir.IntType(LANES)]), f"llvm.ctpop.i{LANES}",
        )
        return builder.zext(builder.call(ctpop, [bits]), ir.IntType(64))

    return types.int64(potential, threshold), codegen


@intrinsic
def _vnonzero_bits(typingctx, array, index):
    """Return a uint64 whose bit j is set where array[index + j] is not 0.0 (NaN included), j < 16."""
    if not _contiguous(array):
        return None

    def codegen(context, builder, signature, args):
        vector = builder.load(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        nonzero = builder.fcmp_unordered("!=", vector, ir.Constant(_VECTOR, [0.0] * LANES))
        return builder.zext(builder.bitcast(nonzero, ir.IntType(LANES)), ir.IntType(64))

    return types.uint64(array, index), codegen


def _py_vzero():
    return np.zeros(LANES, np.float32)


def _py_vload(array, index):
    return array[index:index + LANES].copy()


def _py_vstore(array, index, vector):
    array[index:index + LANES] = vector


def _py_vmuladd(accumulator, vector, value):
    return accumulator + vector * np.float32(value)


def _py_vrowadd(accumulator, vector, value, binary_tag):
    return accumulator + vector * np.float32(value)


def _py_vlane(vector, lane):
    return vector[lane]


def _py_vnonzero_bits(array, index):
    nonzero = array[index:index + LANES] != 0.0
    return np.uint64(sum(1 << j for j in range(LANES) if nonzero[j]))


def _py_vmuladd_lanes(accumulator, a, b):
    return accumulator + a * b


def _py_vfill(value):
    return np.full(LANES, value, np.float32)


def _py_vdivide(vector, value):
    return vector / np.float32(value)


def _py_vadd(a, b):
    return a + b


def _py_vmax(best, value):
    return np.where((value > best) | np.isnan(value), value, best)


def _py_vaffine(vector, scale, bias):
    return scale * vector + bias


def _py_vfire(potential, threshold):
    return np.where(potential >= threshold, potential, np.float32(0.0)).astype(np.float32)


def _py_vreset(potential, threshold):
    return np.where(potential >= threshold, np.float32(0.0), potential).astype(np.float32)


def _py_vcount_fired(potential, threshold):
    return int(np.count_nonzero(potential >= threshold))


if config.DISABLE_JIT:
    vzero, vload, vstore, vmuladd, vaffine, vlane = _py_vzero, _py_vload, _py_vstore, _py_vmuladd, _py_vaffine, _py_vlane
    vnonzero_bits, vmuladd_lanes, vadd, vmax = _py_vnonzero_bits, _py_vmuladd_lanes, _py_vadd, _py_vmax
    vfill, vdivide, vrowadd = _py_vfill, _py_vdivide, _py_vrowadd
    vfire, vreset, vcount_fired = _py_vfire, _py_vreset, _py_vcount_fired
else:
    vzero, vload, vstore, vmuladd, vaffine, vlane = _vzero, _vload, _vstore, _vmuladd, _vaffine, _vlane
    vnonzero_bits, vmuladd_lanes, vadd, vmax = _vnonzero_bits, _vmuladd_lanes, _vadd, _vmax
    vfill, vdivide, vrowadd = _vfill, _vdivide, _vrowadd
    vfire, vreset, vcount_fired = _vfire, _vreset, _vcount_fired
