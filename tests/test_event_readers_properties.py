"""Property tests of the event readers on random crafted files.

Each test writes a random but well-formed file, reads it whole and in chunks
with random ``chunk_events`` and ``read_size`` (so reads split multi-word
records and vectors), and compares both with a plain-Python reference decoder.
Hypothesis runs derandomized, so every run tries the same examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reverb_edge.events import EVENT_DTYPE
from reverb_edge.events.readers import iter_events, read_events
from event_builders import (
    aedat2_bytes,
    as_events,
    dvs128_address,
    evt2_bytes,
    evt2_cd,
    evt3_addr_x,
    evt3_addr_y,
    evt3_bytes,
    evt3_time_high,
    evt3_time_low,
    evt3_vect_12,
    evt3_vect_8,
    evt3_vect_base_x,
    nmnist_bytes,
    reference_evt2,
    reference_evt3,
    reference_nmnist,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROPERTY_SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)

chunk_sizes = st.integers(min_value=1, max_value=40)
read_sizes = st.integers(min_value=1, max_value=70)


def read_both(data: bytes, name: str, chunk_events: int, read_size: int, **kwargs):
    """Write ``data`` to a temporary file; return the whole-file recording and the chunks joined."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        path = Path(folder) / name
        path.write_bytes(data)
        recording = read_events(path, **kwargs)
        chunks = list(iter_events(path, chunk_events=chunk_events, read_size=read_size, **kwargs))
    assert all(len(chunk) == chunk_events for chunk in chunks[:-1])
    joined = np.concatenate(chunks) if chunks else np.zeros(0, EVENT_DTYPE)
    return recording, joined


def evt3_word():
    """A strategy for one EVT 3.0 word of any type that carries data or is skipped."""
    return st.one_of(
        st.integers(0, 63).map(evt3_addr_y),
        st.tuples(st.integers(0, 2047), st.integers(0, 1)).map(lambda a: evt3_addr_x(*a)),
        st.tuples(st.integers(0, 2047), st.integers(0, 1)).map(lambda a: evt3_vect_base_x(*a)),
        st.integers(0, 0xFFF).map(evt3_vect_12),
        st.integers(0, 0xFF).map(evt3_vect_8),
        st.integers(0, 0xFFF).map(evt3_time_low),
        st.integers(0, 0xFFF).map(lambda high: evt3_time_high(high << 12)),
        st.sampled_from([0x7000, 0x7ABC, 0xA001, 0xE000, 0xF123]),
    )


@PROPERTY_SETTINGS
@given(words=st.lists(evt3_word(), max_size=120), chunk_events=chunk_sizes, read_size=read_sizes)
def test_evt3_matches_reference_in_any_chunking(words, chunk_events, read_size):
    expected, dropped = reference_evt3(words)
    data = evt3_bytes(words, ("% format EVT3;height=64;width=4096",))
    recording, joined = read_both(data, "random.raw", chunk_events, read_size)
    assert np.array_equal(recording.events, expected)
    assert recording.dropped_backward == dropped
    assert np.array_equal(joined, expected)


def evt2_word():
    cd = st.tuples(st.integers(0, 2047), st.integers(0, 2047), st.integers(0, 1), st.integers(0, 63))
    return st.one_of(
        cd.map(lambda a: evt2_cd(*a)),
        st.integers(0, 2**28 - 1).map(lambda high: (0x8 << 28) | high),
        st.sampled_from([0xA0000001, 0xE0000000, 0xF0000ABC]),
    )


@PROPERTY_SETTINGS
@given(words=st.lists(evt2_word(), max_size=80), chunk_events=chunk_sizes, read_size=read_sizes)
def test_evt2_matches_reference_in_any_chunking(words, chunk_events, read_size):
    expected, dropped = reference_evt2(words)
    recording, joined = read_both(evt2_bytes(words, ("% geometry 2048x2048",)), "random.raw", chunk_events, read_size)
    assert np.array_equal(recording.events, expected)
    assert recording.dropped_backward == dropped
    assert np.array_equal(joined, expected)


nmnist_records = st.lists(
    st.tuples(st.integers(0, 33), st.sampled_from([0, 5, 33, 240]), st.integers(0, 1), st.integers(0, 2**23 - 1)),
    max_size=60,
)


@PROPERTY_SETTINGS
@given(records=nmnist_records, chunk_events=chunk_sizes, read_size=read_sizes)
def test_nmnist_matches_reference_in_any_chunking(records, chunk_events, read_size):
    data = nmnist_bytes(records)
    expected, dropped = reference_nmnist(data)
    recording, joined = read_both(data, "random.bin", chunk_events, read_size)
    assert np.array_equal(recording.events, expected)
    assert recording.dropped_backward == dropped
    assert recording.unwrapped == sum(1 for record in records if record[1] == 240)
    assert np.array_equal(joined, expected)


aedat2_events = st.lists(
    st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1), st.integers(0, 2**32 - 1)),
    max_size=60,
)


@PROPERTY_SETTINGS
@given(events=aedat2_events, chunk_events=chunk_sizes, read_size=read_sizes)
def test_aedat2_monotonic_and_chunking(events, chunk_events, read_size):
    data = aedat2_bytes([dvs128_address(x, y, p) for x, y, p, _ in events], [t for *_, t in events])
    recording, joined = read_both(data, "random.aedat", chunk_events, read_size)
    times = recording.events["t"]
    assert (np.diff(times) >= 0).all()
    assert len(recording.events) + recording.dropped_backward == len(events)
    assert np.array_equal(joined, recording.events)
    # Every kept event is one of the input events, at its time modulo 2**32.
    written = {(x, y, t, p) for x, y, p, t in events}
    assert all((int(e["x"]), int(e["y"]), int(e["t"]) % 2**32, int(e["p"])) in written for e in recording.events)


def test_as_events_empty_has_event_dtype():
    assert as_events([]).dtype == EVENT_DTYPE


NOJIT_SCRIPT = r"""
import numpy as np
from reverb_edge.events.readers import prophesee_raw
from event_builders import (
    evt3_addr_x, evt3_addr_y, evt3_time_high, evt3_time_low, evt3_vect_12, evt3_vect_8, evt3_vect_base_x,
    keep_monotonic, reference_evt3,
)

assert not hasattr(prophesee_raw._decode_evt3_kernel, "py_func"), "the JIT is still enabled"
rng = np.random.default_rng(11)
words = [evt3_time_high(5 << 12), evt3_time_low(7), evt3_addr_y(3)]
for _ in range(400):
    kind = rng.integers(0, 7)
    words.append([
        evt3_addr_y(int(rng.integers(0, 64))),
        evt3_addr_x(int(rng.integers(0, 2048)), int(rng.integers(0, 2))),
        evt3_vect_base_x(int(rng.integers(0, 2000)), int(rng.integers(0, 2))),
        evt3_vect_12(int(rng.integers(0, 4096))),
        evt3_vect_8(int(rng.integers(0, 256))),
        evt3_time_low(int(rng.integers(0, 4096))),
        evt3_time_high(int(rng.integers(0, 4096)) << 12),
    ][kind])
state = prophesee_raw.new_evt3_state()
events, _ = prophesee_raw.decode_evt3_words(np.array(words, dtype=np.uint16), state)
expected, _ = reference_evt3(words)
kept, _ = keep_monotonic([(int(e["x"]), int(e["y"]), int(e["t"]), int(e["p"])) for e in events])
assert len(kept) > 100, len(kept)
assert np.array_equal(kept, expected), "the kernel run as Python differs from the reference"
print("ok", len(kept))
"""


def test_evt3_kernel_without_jit():
    environment = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]))
    result = subprocess.run(
        [sys.executable, "-c", NOJIT_SCRIPT], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
