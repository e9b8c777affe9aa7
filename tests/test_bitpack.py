"""Tests of the sign-bit packing convention in reverb_edge.bitpack."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge.bitpack import padding_bits_clear, pack_signs, unpack_signs, words_for
from reverb_edge.errors import InputError

WIDTHS = [1, 3, 31, 32, 33, 63, 64, 65, 128]


def python_int_words(row: np.ndarray) -> list[int]:
    """Pack one row with Python integers, straight from the convention: bit k % 64 of word k // 64."""
    words = [0] * ((len(row) + 63) // 64)
    for k, weight in enumerate(row):
        if weight >= 0:
            words[k // 64] |= 1 << (k % 64)
    return words


@pytest.mark.parametrize("width", WIDTHS)
def test_pack_signs_round_trip(rng, width):
    weights = rng.standard_normal((3, 2, width)).astype(np.float32)
    weights[0, 0, 0] = 0.0

    words = pack_signs(weights)
    signs = unpack_signs(words, width)

    assert words.dtype == np.uint64
    assert words.shape == (3, 2, words_for(width))
    assert signs.dtype == np.int8
    assert signs.shape == weights.shape
    np.testing.assert_array_equal(signs, np.where(weights >= 0, 1, -1))


@pytest.mark.parametrize("width", WIDTHS)
def test_pack_signs_matches_python_ints(rng, width):
    weights = rng.standard_normal((4, width))

    words = pack_signs(weights)

    for row, packed in zip(weights, words):
        assert [int(w) for w in packed] == python_int_words(row)


@pytest.mark.parametrize("width", WIDTHS)
def test_pack_signs_padding_bits_zero(width):
    words = pack_signs(np.ones(width))

    used_bits = width % 64
    expected_last = (1 << used_bits) - 1 if used_bits else (1 << 64) - 1

    assert int(words[-1]) == expected_last
    assert padding_bits_clear(words, width)


def test_pack_signs_bit_positions():
    weights = -np.ones(130)
    weights[[0, 5, 63, 64, 129]] = 1.0

    words = pack_signs(weights)

    assert int(words[0]) == (1 << 0) | (1 << 5) | (1 << 63)
    assert int(words[1]) == 1 << 0
    assert int(words[2]) == 1 << 1


def test_pack_signs_zero_is_plus_one():
    weights = np.array([0.0, -0.0, -1e-30, 1e-30], dtype=np.float32)

    signs = unpack_signs(pack_signs(weights), 4)

    np.testing.assert_array_equal(signs, [1, 1, -1, 1])


def test_pack_signs_infinities():
    signs = unpack_signs(pack_signs(np.array([np.inf, -np.inf])), 2)

    np.testing.assert_array_equal(signs, [1, -1])


def test_pack_signs_integer_weights():
    signs = unpack_signs(pack_signs(np.array([-1, 1, 0, -7], dtype=np.int8)), 4)

    np.testing.assert_array_equal(signs, [-1, 1, 1, -1])


def test_pack_signs_empty_row():
    words = pack_signs(np.zeros((3, 0)))

    assert words.shape == (3, 0)
    assert words.dtype == np.uint64
    assert unpack_signs(words, 0).shape == (3, 0)


@pytest.mark.parametrize(("length", "expected"), [(0, 0), (1, 1), (63, 1), (64, 1), (65, 2), (128, 2), (129, 3)])
def test_words_for(length, expected):
    assert words_for(length) == expected


@pytest.mark.parametrize("width", [1, 33, 63, 65, 127])
def test_padding_bits_clear_detects_set_bit(width):
    words = pack_signs(np.ones((2, width)))
    words[1, -1] |= np.uint64(1) << np.uint64(63)

    assert not padding_bits_clear(words, width)
    assert padding_bits_clear(words[:1], width)


def test_padding_bits_clear_lowest_padding_bit():
    words = pack_signs(np.ones(33))
    words[-1] |= np.uint64(1) << np.uint64(33)

    assert not padding_bits_clear(words, 33)


@pytest.mark.parametrize("width", [64, 128])
def test_padding_bits_clear_full_words(width):
    words = np.full(width // 64, 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)

    assert padding_bits_clear(words, width)


def test_unpack_signs_ignores_padding_bits():
    weights = np.array([1.0, -1.0, 1.0])
    words = pack_signs(weights)
    words[0] |= np.uint64(0xFFFF_FFFF_FFFF_FFF0)

    np.testing.assert_array_equal(unpack_signs(words, 3), [1, -1, 1])


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=200),
    rows=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_pack_signs_round_trip_any_width(width, rows, seed):
    weights = np.random.default_rng(seed).integers(-1, 2, size=(rows, width)).astype(np.float64)

    words = pack_signs(weights)

    np.testing.assert_array_equal(unpack_signs(words, width), np.where(weights >= 0, 1, -1))
    assert padding_bits_clear(words, width)
    for row, packed in zip(weights, words):
        assert [int(w) for w in packed] == python_int_words(row)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.array([True, False]), "dtype bool"),
        (np.array([1 + 1j]), "dtype complex128"),
        (np.array(["a"]), "dtype <U1"),
        (np.float32(1.0), "0-d"),
        (np.array([1.0, np.nan, np.nan]), "2 NaN value"),
    ],
)
def test_pack_signs_rejects_bad_weights(weights, message):
    with pytest.raises(InputError, match=message):
        pack_signs(weights)


def test_pack_signs_nan_error_names_index():
    weights = np.zeros((2, 3))
    weights[1, 2] = np.nan

    with pytest.raises(InputError, match=r"index \(1, 2\)"):
        pack_signs(weights)


@pytest.mark.parametrize("function", [unpack_signs, padding_bits_clear])
def test_words_functions_reject_wrong_dtype(function):
    with pytest.raises(InputError, match="dtype int64, expected uint64"):
        function(np.zeros(1, dtype=np.int64), 3)


@pytest.mark.parametrize("function", [unpack_signs, padding_bits_clear])
def test_words_functions_reject_wrong_word_count(function):
    with pytest.raises(InputError, match=r"65 signs per row take 2 word"):
        function(np.zeros((4, 1), dtype=np.uint64), 65)


@pytest.mark.parametrize("function", [unpack_signs, padding_bits_clear])
def test_words_functions_reject_0d_words(function):
    with pytest.raises(InputError, match="0-d"):
        function(np.uint64(1), 1)


@pytest.mark.parametrize("length", [-1, 2.0, True, "3", None])
def test_words_for_rejects_bad_length(length):
    with pytest.raises(InputError, match="length is"):
        words_for(length)


def test_input_error_is_value_error():
    with pytest.raises(ValueError):
        unpack_signs(np.zeros(1, dtype=np.int64), 1)
