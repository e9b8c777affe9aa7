"""A 16-lane float32 vector type for Numba kernels, kept in registers.

Numba has no SIMD types. Written as plain loops over an accumulator array,
the convolution's inner loops stayed scalar: LLVM cannot tell that the
accumulators and the weights do not overlap. These intrinsics emit LLVM
``<16 x float>`` values directly, so a kernel keeps up to four of them as
accumulators in registers. Each operation is a float32 multiply followed by
an add (no fused multiply-add), which rounds like the scalar code. LLVM
splits each vector into the registers the CPU has (four 128-bit registers
on ARM NEON).

With ``NUMBA_DISABLE_JIT=1`` the same names run as NumPy code, so kernels
that use them stay plain Python.
"""

import numpy as np
from llvmlite import ir
from numba.core import config, types
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

    def codegen(context, builder, signature, args):
        return builder.load(_vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)

    return float32x16(array, index), codegen


@intrinsic
def _vstore(typingctx, array, index, vector):
    """Store a vector into array[index:index + 16]."""

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return types.void(array, index, vector), codegen


@intrinsic
def _vmuladd(typingctx, accumulator, vector, value):
    """Return accumulator + vector * value, value being a float32 scalar broadcast to every lane."""

    def codegen(context, builder, signature, args):
        accumulator, vector, value = args
        undefined = ir.Constant(_VECTOR, ir.Undefined)
        lane0 = builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
        broadcast = builder.shuffle_vector(lane0, undefined, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        return builder.fadd(accumulator, builder.fmul(vector, broadcast))

    return float32x16(accumulator, vector, value), codegen


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


@intrinsic
def _vaffine(typingctx, vector, scale, bias):
    """Return vector * scale + bias, lane by lane."""

    def codegen(context, builder, signature, args):
        vector, scale, bias = args
        return builder.fadd(builder.fmul(scale, vector), bias)

    return float32x16(vector, scale, bias), codegen


@intrinsic
def _vnonzero_bits(typingctx, array, index):
    """Return a uint64 whose bit j is set where array[index + j] is not 0.0 (NaN included), j < 16."""

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


def _py_vlane(vector, lane):
    return vector[lane]


def _py_vnonzero_bits(array, index):
    nonzero = array[index:index + LANES] != 0.0
    return np.uint64(sum(1 << j for j in range(LANES) if nonzero[j]))


def _py_vmuladd_lanes(accumulator, a, b):
    return accumulator + a * b


def _py_vaffine(vector, scale, bias):
    return scale * vector + bias


if config.DISABLE_JIT:
    vzero, vload, vstore, vmuladd, vaffine, vlane = _py_vzero, _py_vload, _py_vstore, _py_vmuladd, _py_vaffine, _py_vlane
    vnonzero_bits, vmuladd_lanes = _py_vnonzero_bits, _py_vmuladd_lanes
else:
    vzero, vload, vstore, vmuladd, vaffine, vlane = _vzero, _vload, _vstore, _vmuladd, _vaffine, _vlane
    vnonzero_bits, vmuladd_lanes = _vnonzero_bits, _vmuladd_lanes
