"""Sign-bit packing of binary (±1) weights.

Bit convention, used by every packed weight array in reverb-edge:

* Weights are packed along the last axis into ``uint64`` words, little-endian:
  element ``k`` of the axis is bit ``k % 64`` of word ``k // 64``, where bit 0
  is the least significant bit. On a little-endian machine the bytes of the
  words are therefore those of ``np.packbits(..., bitorder="little")``.
* Bit value 1 means weight +1 and bit value 0 means weight -1. A source weight
  maps to +1 when it is ``>= 0``, so 0.0 and -0.0 both become +1.
  ``np.sign`` would map 0.0 to 0, so it is never used here.
* A row of ``n`` weights takes ``words_for(n) == ceil(n / 64)`` words. The
  padding bits ``n % 64 .. 63`` of the last word are always 0. The kernels read
  only the bits below ``n``, so padding bits never count, and the model-file
  loader rejects files whose padding bits are set (see ``padding_bits_clear``).

The arrays returned are native-endian ``np.uint64``.
"""

import numpy as np

from reverb_edge.errors import InputError

BITS_PER_WORD = 64

_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def words_for(length: int) -> int:
    """Return the number of ``uint64`` words that hold ``length`` sign bits."""
    _check_length(length)
    return (int(length) + BITS_PER_WORD - 1) // BITS_PER_WORD


def pack_signs(weights: np.ndarray) -> np.ndarray:
    """Pack the signs of ``weights`` along the last axis into ``uint64`` words.

    The leading axes are kept and the last axis of length ``n`` becomes
    ``words_for(n)`` words. A weight ``>= 0`` becomes bit 1 (+1) and a negative
    weight becomes bit 0 (-1). Raises ``InputError`` for a non-numeric array, a
    0-d array or a NaN weight, because NaN has no sign.
    """
    array = np.asarray(weights)
    if array.dtype.kind not in "fiu":
        raise InputError(
            f"pack_signs: weights have dtype {array.dtype}, expected a real float or integer "
            "array; convert the weights with weights.astype(np.float32)"
        )
    if array.ndim < 1:
        raise InputError(
            f"pack_signs: weights are a 0-d array ({array!r}); pass an array with at least one "
            "axis, for example np.atleast_1d(weights)"
        )
    if array.dtype.kind == "f":
        nan_positions = np.argwhere(np.isnan(array))
        if len(nan_positions) > 0:
            first = tuple(int(i) for i in nan_positions[0])
            raise InputError(
                f"pack_signs: weights contain {len(nan_positions)} NaN value(s), the first at "
                f"index {first}; NaN has no sign, so fix the weights before packing"
            )

    length = array.shape[-1]
    padded_length = words_for(length) * BITS_PER_WORD
    bits = np.zeros(array.shape[:-1] + (padded_length,), dtype=bool)
    bits[..., :length] = array >= 0

    # packbits gives 8 bytes per word, element k in bit k % 8 of byte k // 8.
    # Read as little-endian uint64, that is bit k % 64 of word k // 64.
    packed_bytes = np.packbits(bits, axis=-1, bitorder="little")
    return packed_bytes.view("<u8").astype(np.uint64)


def unpack_signs(words: np.ndarray, length: int) -> np.ndarray:
    """Unpack ``length`` signs per row from ``uint64`` words into an ``int8`` array of ±1.

    The leading axes are kept and the last axis becomes ``length``. Padding
    bits are ignored. Raises ``InputError`` when ``words`` is not ``uint64`` or
    its last axis is not ``words_for(length)`` long.
    """
    words = _check_words("unpack_signs", words, length)
    as_bytes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, count=length, bitorder="little")
    return bits.astype(np.int8) * 2 - 1


def padding_bits_clear(words: np.ndarray, length: int) -> bool:
    """Return True when no padding bit is set in any row of ``words``.

    A row contains ``length`` sign bits, and the padding bits are bits
    ``length % 64 .. 63`` of its last word. Raises ``InputError`` on the same
    bad input as ``unpack_signs``.
    """
    words = _check_words("padding_bits_clear", words, length)
    used_bits = length % BITS_PER_WORD
    if used_bits == 0 or words.size == 0:
        return True
    used_mask = (np.uint64(1) << np.uint64(used_bits)) - np.uint64(1)
    padding_mask = used_mask ^ _ALL_ONES
    return not bool(np.any(words[..., -1] & padding_mask))


def _check_length(length) -> None:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise InputError(
            f"length is {length!r} of type {type(length).__name__}, expected a non-negative "
            "int; pass the number of weights per row"
        )
    if length < 0:
        raise InputError(f"length is {length}, expected a non-negative int")


def _check_words(caller: str, words, length) -> np.ndarray:
    _check_length(length)
    array = np.asarray(words)
    if array.dtype != np.uint64:
        raise InputError(
            f"{caller}: words have dtype {array.dtype}, expected uint64; pass the array "
            "that pack_signs returned"
        )
    if array.ndim < 1:
        raise InputError(f"{caller}: words are a 0-d array, expected at least one axis")
    expected_words = words_for(length)
    if array.shape[-1] != expected_words:
        raise InputError(
            f"{caller}: words have shape {array.shape}, but {length} signs per row take "
            f"{expected_words} word(s) in the last axis; check length or the packed array"
        )
    return array
