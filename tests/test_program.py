"""The compiled predict (reverb_edge.program) against the engine's plan: same scores bit for bit, same statistics."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from conftest import data_root
from helpers import CountingCalls, mnist_like_graph, random_tensors
from reverb_edge import Engine, InputError
from reverb_edge.bitpack import pack_signs
from reverb_edge.datasets import load_mnist
from reverb_edge.graph import Graph, InputSpec
from reverb_edge.modelfile import Model
from reverb_edge.nodes import LIF, Add, Conv2d, Flatten, Linear, MaxPool2d
from reverb_edge import program as programs
from reverb_edge.program import DISABLE_VARIABLE, FALLBACK, FINISHED, Program, program_folder

pytestmark = pytest.mark.programs


def engines(model: Model, monkeypatch) -> tuple[Engine, Engine]:
    """Return an engine that runs programs and one that runs its plan, over the same model."""
    zeros = np.zeros(model.graph.input.shape, np.float32)
    with monkeypatch.context() as patch:
        patch.setenv(DISABLE_VARIABLE, "0")
        plain = Engine(model)
        plain.predict(zeros)
        plain.predict_frames(zeros[None])
    compiled = Engine(model)
    compiled.predict(zeros)
    compiled.predict_frames(zeros[None])
    plain.reset_stats()
    compiled.reset_stats()
    assert plain._programs.get("predict") is None
    assert plain._programs.get("predict_frames") is None
    return compiled, plain


def assert_same(compiled: Engine, plain: Engine, inputs, method: str = "predict") -> None:
    for x in inputs:
        np.testing.assert_array_equal(getattr(compiled, method)(x), getattr(plain, method)(x))
    assert compiled.layer_stats() == plain.layer_stats()


def test_shipped_mnist_model_on_real_digits(mnist_dir, monkeypatch):
    """The shipped model takes the program, and 300 real test digits give the plan's scores and statistics."""
    model = Engine.load("mnist").model
    compiled, plain = engines(model, monkeypatch)
    assert isinstance(compiled._programs.get("predict"), Program)
    assert compiled._programs.get("predict").path.parent == program_folder()
    images, _ = load_mnist(mnist_dir, "test")
    inputs = [compiled.preprocess(image) for image in images[:300]]
    assert_same(compiled, plain, inputs)

    # The engine is left reset, as after the plan: a step starts from zero membrane potentials.
    np.testing.assert_array_equal(compiled.step(inputs[0]), plain.step(inputs[0]))


def chain_graph(channels: tuple[int, ...], timesteps: int, stride: int = 1, padding: int = 1, dilation: int = 1,
                groups: int = 1, pool: bool = True, hidden: int = 0) -> Graph:
    """Return a chain of 3 x 3 convolutions with neurons, a Flatten and a readout.

    The first convolution has ``stride``. With ``pool``, a 2 x 2 max pooling
    follows its neurons. The later convolutions have ``groups`` where the
    channels allow it, and a dilation of ``dilation`` along y. ``hidden`` > 0
    adds a linear layer with neurons before the readout.
    """
    spec = InputSpec((channels[0], 13, 12), (0.0,) * channels[0], (1.0,) * channels[0], False, tuple("abcde"))
    nodes = []
    for index, (inputs, outputs) in enumerate(zip(channels, channels[1:])):
        later = index > 0
        nodes += [
            Conv2d(f"conv{index}", in_channels=inputs, out_channels=outputs, kernel_size=3, stride=1 if later else stride,
                   padding=(padding + dilation - 1, padding) if later else padding,
                   dilation=(dilation, 1) if later else 1,
                   groups=groups if later and inputs % groups == 0 and outputs % groups == 0 else 1),
            LIF(f"lif{index}", tau=0.5, threshold=0.3),
        ]
        if pool and not later:
            nodes.append(MaxPool2d(f"pool{index}", kernel_size=2, stride=2))
    nodes.append(Flatten("flatten"))
    unlabelled = InputSpec(spec.shape, spec.mean, spec.std, False, ())
    features = Graph(unlabelled, tuple(nodes), timesteps=timesteps).shapes["flatten"][0]
    if hidden:
        nodes += [Linear("hidden", in_features=features, out_features=hidden), LIF("hidden_lif", tau=0.25, threshold=0.2)]
        features = hidden
    nodes.append(Linear("readout", in_features=features, out_features=5, weight_format="float32"))
    return Graph(spec, tuple(nodes), timesteps=timesteps)


@pytest.mark.parametrize("graph", [
    pytest.param(chain_graph((1, 5, 17), timesteps=2), id="odd-channels"),
    pytest.param(chain_graph((3, 33, 16), timesteps=1, stride=2, padding=0, pool=False, hidden=7), id="T1-stride-hidden-lif"),
    pytest.param(chain_graph((2, 8, 6, 12), timesteps=2, dilation=2, groups=2, pool=False), id="dilated-grouped"),
    pytest.param(mnist_like_graph(timesteps=2), id="mnist-like"),
])
def test_program_matches_the_plan(graph, monkeypatch, rng):
    """Sparse, dense, all-zero and negative inputs give the plan's scores and statistics on networks the program covers."""
    model = Model(graph, random_tensors(graph, rng))
    compiled, plain = engines(model, monkeypatch)
    assert isinstance(compiled._programs.get("predict"), Program)
    shape = graph.input.shape
    sparse = np.where(rng.random(shape) < 0.3, rng.normal(0.0, 2.0, shape), 0.0).astype(np.float32)
    inputs = [rng.normal(0.3, 1.5, shape).astype(np.float32) for _ in range(4)]
    inputs += [sparse, np.zeros(shape, np.float32), -np.abs(inputs[0]), np.asfortranarray(inputs[1]).astype(np.float64)]
    assert_same(compiled, plain, inputs)

    # Frames: one to five, each different, from one C-contiguous float32 array.
    assert isinstance(compiled._programs.get("predict_frames"), Program)
    clips = [np.stack([inputs[(start + k) % len(inputs)] for k in range(count)]).astype(np.float32)
             for start, count in enumerate((1, 2, 3, 4, 5, 2, 1))]
    assert_same(compiled, plain, clips, "predict_frames")

    # A frame after predict_frames starts from zero membrane potentials, as after the plan.
    np.testing.assert_array_equal(compiled.step(inputs[0]), plain.step(inputs[0]))


def test_shipped_nmnist_model_on_real_recordings(monkeypatch):
    """The shipped N-MNIST model's frames program gives the plan's scores and statistics on 40 real recordings."""
    from reverb_edge.events.nmnist import load_nmnist

    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    recordings, _ = load_nmnist(folder, "test", limit=40)
    compiled, plain = engines(Engine.load("nmnist").model, monkeypatch)
    assert isinstance(compiled._programs.get("predict_frames"), Program)
    assert compiled._programs.get("predict") is None  # T = 6: predict still runs the plan
    assert_same(compiled, plain, recordings, "predict_events")


def test_program_bins_events_like_to_frames(monkeypatch, rng):
    """predict_events bins inside the program; other event arrays and rejected ones behave as in the plan."""
    from reverb_edge.events.types import empty_events, make_events

    compiled, plain = engines(Engine.load("nmnist").model, monkeypatch)
    count = 3000
    events = make_events(rng.integers(0, 34, count), rng.integers(0, 34, count),
                         np.sort(rng.integers(0, 300_000, count)), rng.integers(0, 2, count))
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "events_to_frames", lambda self, events: pytest.fail("binned outside the program"))
        scores = compiled.predict_events(events)
    np.testing.assert_array_equal(scores, plain.predict_events(events))

    read_only = events.copy()
    read_only.flags.writeable = False
    one_time = events.copy()
    one_time["t"] = 7  # a duration of 0: every event in the first bin
    assert_same(compiled, plain, [events[::2], read_only, empty_events(), events[:1], one_time], "predict_events")

    # All at the largest int64 time: every event in the first bin.
    latest = events.copy()
    latest["t"] = np.iinfo(np.int64).max
    assert_same(compiled, plain, [latest], "predict_events")

    outside, backward, polarity = events.copy(), events.copy(), events.copy()
    outside["y"][5] = 34
    backward["t"][10] = backward["t"][9] - 1
    polarity["p"][-1] = 2
    # A span of times wider than int64 overflows the difference the bins are computed from.
    span = events[:2].copy()
    span["t"] = [-(2**62) - 5, 2**62 + 2**61]
    for bad, match in [(outside, "y ranges over"), (backward, "backward at index 10"), (polarity, "p ranges"),
                       (span, "overflows int64")]:
        for engine in (compiled, plain):
            with pytest.raises(InputError, match=match):
                engine.predict_events(bad)
    assert compiled.layer_stats() == plain.layer_stats()


@pytest.mark.parametrize("polarity_channels", [False, True])
def test_program_bins_one_channel_sensor(polarity_channels, monkeypatch, rng):
    """A one-polarity sensor bins into one channel; with polarity channels to_frames rejects it, and so does the engine."""
    from reverb_edge.graph import EventEncoding
    from reverb_edge.events.types import make_events

    chain = chain_graph((1, 5, 17), timesteps=2)
    spec = chain.input
    encoding = EventEncoding((12, 13, 1), 2, 10_000, polarity_channels)
    graph = Graph(InputSpec(spec.shape, spec.mean, spec.std, False, spec.labels, encoding), chain.nodes, timesteps=2)
    compiled, plain = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    events = make_events(rng.integers(0, 12, 500), rng.integers(0, 13, 500), np.sort(rng.integers(0, 9000, 500)),
                         rng.integers(0, 2, 500))

    if polarity_channels:
        for engine in (compiled, plain):
            with pytest.raises(InputError, match="polarit"):
                engine.predict_events(events)
    else:
        assert_same(compiled, plain, [events], "predict_events")


def test_frames_fall_back_for_other_arrays(monkeypatch, rng):
    """Frames in float64, in a non-contiguous array or with a NaN in a later frame behave as in the plan."""
    graph = mnist_like_graph()
    compiled, plain = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    frames = rng.normal(0.0, 1.0, (3, 1, 28, 28)).astype(np.float32)
    assert_same(compiled, plain, [frames.astype(np.float64), frames[::-1], frames.transpose(0, 1, 3, 2)], "predict_frames")

    frames[2, 0, 5, 5] = np.nan
    for engine in (compiled, plain):
        with pytest.raises(InputError, match="NaN"):
            engine.predict_frames(frames)
    assert compiled.layer_stats() == plain.layer_stats()


def binary_spike_model(rng, outputs: int = 40) -> Model:
    """Return a model whose second convolution gets spikes of exactly 1.0, for which the engine takes the popcount kernel.

    With 40 outputs that convolution gathers; with at most 32 it scatters.
    """
    spec = InputSpec((1, 9, 10), (0.0,), (1.0,), False, tuple("ab"))
    nodes = (
        Conv2d("copy", in_channels=1, out_channels=16, kernel_size=1, padding=0),
        LIF("copy_lif", tau=0.0, threshold=0.5),
        Conv2d("wide", in_channels=16, out_channels=outputs, kernel_size=3, padding=1),
        LIF("wide_lif", tau=0.5, threshold=0.3),
        Flatten("flatten"),
        Linear("readout", in_features=outputs * 9 * 10, out_features=2, weight_format="float32"),
    )
    graph = Graph(spec, nodes, timesteps=2)
    tensors = random_tensors(graph, rng)
    # Weights of +1 with scale 1 and no bias copy a 0/1 input into 16 channels of 0/1 currents, hence spikes.
    tensors["copy.weight"] = pack_signs(np.ones((16, 1, 1, 1)))
    tensors["copy.scale"] = np.ones(16, np.float32)
    tensors["copy.bias"] = np.zeros(16, np.float32)
    return Model(graph, tensors)


def test_popcount_inputs_fall_back_to_the_plan(monkeypatch, rng):
    """Where the popcount kernel pays, the program hands the input back without counting it, and the plan runs it."""
    model = binary_spike_model(rng)
    compiled, plain = engines(model, monkeypatch)
    assert isinstance(compiled._programs.get("predict"), Program)
    binary = (rng.random((1, 9, 10)) < 0.5).astype(np.float32)
    assert compiled._programs["predict"](binary, compiled._stat_counts)[2] == FALLBACK
    assert all(stats["timesteps"] == 0 for stats in compiled.layer_stats())
    assert_same(compiled, plain, [binary, binary * 0.5, np.zeros_like(binary)])


def test_scatter_layer_keeps_popcount_inputs(monkeypatch, rng):
    """A layer that scatters runs 0/1 spikes in the program, with the scores and counts of the plan's popcount kernel."""
    model = binary_spike_model(rng, outputs=16)
    compiled, plain = engines(model, monkeypatch)
    assert compiled._executors["wide"].layer.scatter is not None
    plain._executors["wide"].layer.popcount = CountingCalls(plain._executors["wide"].layer.popcount)
    binary = (rng.random((1, 9, 10)) < 0.5).astype(np.float32)

    assert compiled._programs["predict"](binary, compiled._stat_counts)[2] == FINISHED
    compiled.reset_stats()
    assert_same(compiled, plain, [binary, binary * 0.5, np.zeros_like(binary)])
    assert plain._executors["wide"].layer.popcount.calls > 0


@pytest.mark.parametrize("timesteps", [2, 3])
def test_uncovered_networks_run_the_plan(timesteps, monkeypatch, rng):
    """A residual Add, or T > 2, leaves predict to the plan."""
    spec = InputSpec((2, 6, 6), (0.0, 0.0), (1.0, 1.0), False, tuple("ab"))
    nodes = (
        Conv2d("conv", in_channels=2, out_channels=4, kernel_size=3, padding=1),
        LIF("lif", tau=0.5, threshold=0.2),
        Conv2d("conv2", in_channels=4, out_channels=4, kernel_size=3, padding=1),
        LIF("lif2", tau=0.5, threshold=0.2),
        Add("residual", inputs=("lif2", "lif")),
        Flatten("flatten"),
        Linear("readout", in_features=144, out_features=2),
    )
    graph = Graph(spec, nodes, timesteps=timesteps)
    engine = Engine(Model(graph, random_tensors(graph, rng)))
    engine.predict(np.ones((2, 6, 6), np.float32))
    assert engine._programs.get("predict") is None
    chain = chain_graph((1, 4), timesteps=timesteps)
    engine = Engine(Model(chain, random_tensors(chain, rng)))
    engine.predict(np.ones((1, 13, 12), np.float32))
    assert (engine._programs.get("predict") is None) == (timesteps > 2)


def test_bad_inputs_raise_as_in_the_plan(monkeypatch, rng):
    """Too large, NaN and read-only inputs: the plan's errors and scores, and nothing counted for a rejected input."""
    graph = mnist_like_graph()
    compiled, plain = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    for value, message in ((np.nan, "NaN"), (np.float32(1e35), "far outside")):
        x = np.zeros((1, 28, 28), np.float32)
        x[0, 3, 4] = value
        for engine in (compiled, plain):
            with pytest.raises(InputError, match=message):
                engine.predict(x)
    assert compiled.layer_stats() == plain.layer_stats()
    assert all(stats["timesteps"] == 0 for stats in compiled.layer_stats())

    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    x.flags.writeable = False
    assert_same(compiled, plain, [x])

    # A readout scaled beyond float32's range: the scores are not finite, and the input counts, as in the plan.
    tensors = random_tensors(graph, rng)
    tensors["fc.scale"] = np.full(10, 3e38, np.float32)
    compiled, plain = engines(Model(graph, tensors), monkeypatch)
    for engine in (compiled, plain):
        with pytest.raises(InputError, match="not finite"):
            engine.predict(np.ones((1, 28, 28), np.float32))
    assert compiled.layer_stats() == plain.layer_stats()


def test_engines_of_one_architecture_share_the_program(monkeypatch, rng):
    """Two models of the same shapes (other weights and neuron constants) run one program file."""
    first = mnist_like_graph()
    second = Graph(first.input, tuple(LIF(node.name, tau=0.75, threshold=0.125) if isinstance(node, LIF) else node
                                           for node in first.nodes), timesteps=first.timesteps)
    a, b = Engine(Model(first, random_tensors(first, rng))), Engine(Model(second, random_tensors(second, rng)))
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    a.predict(x)
    b.predict(x)
    assert a._programs.get("predict").path == b._programs.get("predict").path
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    np.testing.assert_array_equal(Engine(b.model).predict(x), b.predict(x))


def test_damaged_program_file_rewritten(monkeypatch, rng, caplog):
    """A program file cut short is replaced with a warning, and predict gives the plan's scores."""
    graph = mnist_like_graph()
    model = Model(graph, random_tensors(graph, rng))
    path = Engine(model)._program_of("predict").path
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    compiled, plain = engines(model, monkeypatch)
    assert path.read_text() == text
    assert "is not the program it should contain" in caplog.text
    assert_same(compiled, plain, [rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)])


def test_no_private_folder_runs_the_plan(monkeypatch, rng, tmp_path, caplog):
    """Without a writable cache folder, a temporary folder that others may write to is refused: predict runs the plan."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setattr("reverb_edge.program.cache_dir", lambda: blocked / "cache")
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    shared = tmp_path / f"reverb-edge-programs-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    graph = mnist_like_graph()
    engine = Engine(Model(graph, random_tensors(graph, rng)))
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    scores = engine.predict(x)
    assert engine._programs.get("predict") is None
    assert "others may write to it" in caplog.text
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    np.testing.assert_array_equal(scores, Engine(engine.model).predict(x))
    assert list(shared.iterdir()) == []


def test_held_layer_stats_update(monkeypatch, rng):
    """A LayerStats taken from engine.stats before predict counts the program's calls, as the plan's."""
    graph = mnist_like_graph()
    compiled, plain = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    before = (compiled.stats["lif2"], plain.stats["lif2"])
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    compiled.predict(x)
    plain.predict(x)
    assert before[0].timesteps == before[1].timesteps == 2
    assert before[0].spikes == before[1].spikes


def test_two_threads_build_one_program(monkeypatch, rng):
    """Engines building the same program in two threads at once both get it (the module is registered once it has run)."""
    graph = mnist_like_graph()
    model = Model(graph, random_tensors(graph, rng))
    name = Engine(model)._program_of("predict").path.stem
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    expected = Engine(model).predict(x)
    for _ in range(10):
        monkeypatch.delitem(sys.modules, name)
        pair = [Engine(model), Engine(model)]
        results = [None, None]

        def run(index):
            results[index] = pair[index].predict(x)

        threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(isinstance(engine._programs.get("predict"), Program) for engine in pair)
        for scores in results:
            np.testing.assert_array_equal(scores, expected)


def test_warmed_read_only_folder_is_used(monkeypatch, rng, tmp_path):
    """A program that a warm-up left in the shared folder is used even where this user cannot write there."""
    graph = mnist_like_graph()
    model = Model(graph, random_tensors(graph, rng))
    monkeypatch.setattr(programs, "_shared_folder", lambda: tmp_path)
    warmed = Engine(model)._program_of("predict").path
    assert warmed.parent == tmp_path

    def no_writable_folder():
        raise OSError("no writable folder")

    monkeypatch.setattr(programs, "program_folder", no_writable_folder)
    engine = Engine(model)
    assert engine._program_of("predict").path == warmed


@pytest.mark.parametrize("value", ["0", "off", "False", " no "])
def test_environment_turns_programs_off(monkeypatch, value):
    """REVERB_EDGE_PROGRAM set to 0, off, false or no when the engine is built: predict runs the plan."""
    monkeypatch.setenv(DISABLE_VARIABLE, value)
    engine = Engine.load("mnist")
    monkeypatch.delenv(DISABLE_VARIABLE)
    engine.predict(np.zeros((1, 28, 28), np.float32))
    assert engine._programs.get("predict") is None


def test_layer_stats_counts_both_parts(monkeypatch, rng):
    """A counter set by hand keeps its value with program counts under it, and equal counters compare equal."""
    graph = mnist_like_graph()
    compiled, plain = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    compiled.predict(x)
    plain.predict(x)
    assert compiled.stats["conv2"] == plain.stats["conv2"]
    assert repr(compiled.stats["conv2"]) == repr(plain.stats["conv2"])
    compiled.stats["conv2"].input_events = 5
    assert compiled.stats["conv2"].input_events == 5
    compiled.predict(x)
    plain.stats["conv2"].input_events = 5
    plain.predict(x)
    assert compiled.stats["conv2"].input_events == plain.stats["conv2"].input_events


def test_layer_stats_copy_is_snapshot(monkeypatch, rng):
    """copy.copy of a LayerStats keeps its counts while the engine's object goes on counting."""
    import copy

    graph = mnist_like_graph()
    compiled, _ = engines(Model(graph, random_tensors(graph, rng)), monkeypatch)
    x = rng.normal(0.0, 1.0, (1, 28, 28)).astype(np.float32)
    compiled.predict(x)
    snapshot = copy.copy(compiled.stats["lif1"])
    deep = copy.deepcopy(compiled.stats["lif1"])
    compiled.predict(x)
    assert snapshot.timesteps == deep.timesteps == 2
    assert compiled.stats["lif1"].timesteps == 4


def test_clone_keeps_program_setting(monkeypatch):
    """A clone of an engine built with programs off runs the plan too, whatever the environment is later."""
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    engine = Engine.load("mnist")
    monkeypatch.delenv(DISABLE_VARIABLE)
    clone = engine.clone()
    clone.predict(np.zeros((1, 28, 28), np.float32))
    assert clone._programs.get("predict") is None
