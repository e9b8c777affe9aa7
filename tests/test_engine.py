"""The engine: backends agree, timestep semantics, statistics, threads and input errors."""

import subprocess
import sys
import threading
import warnings

import numba
import numpy as np
import pytest

from reverb_edge import Engine, InputError
from reverb_edge.modelfile import save_model

from helpers import every_node_graph, mnist_like_graph, random_tensors

# Numba and the NumPy reference add the same float32 values in different orders, so
# membrane potentials differ by a few ulp. A spike exactly at the threshold could flip,
# but these random models make that very unlikely. Scores are compared with this tolerance.
SCORE_TOLERANCE = 1e-4


@pytest.fixture
def every_node_path(tmp_path, rng):
    graph = every_node_graph()
    return save_model(tmp_path / "every.reverb", graph, random_tensors(graph, rng))


@pytest.fixture
def mnist_like_path(tmp_path, rng):
    graph = mnist_like_graph()
    return save_model(tmp_path / "mnist_like.reverb", graph, random_tensors(graph, rng))


def _inputs(engine, rng, count):
    return rng.normal(size=(count, *engine.input_spec.shape)).astype(np.float32)


def test_engine_backends_agree_every_node(every_node_path, rng):
    numba_engine = Engine.load(every_node_path)
    reference_engine = Engine.load(every_node_path, backend="reference")
    inputs = _inputs(numba_engine, rng, 12)
    np.testing.assert_allclose(
        numba_engine.predict_batch(inputs), reference_engine.predict_batch(inputs), rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE
    )


def test_engine_backends_agree_spikes(every_node_path, rng):
    numba_engine = Engine.load(every_node_path)
    reference_engine = Engine.load(every_node_path, backend="reference")
    x = _inputs(numba_engine, rng, 1)[0]
    numba_trace = numba_engine.trace(x)
    reference_trace = reference_engine.trace(x)
    assert set(numba_trace) == set(reference_trace)
    for name in numba_trace:
        np.testing.assert_allclose(numba_trace[name], reference_trace[name], rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE, err_msg=name)


def test_engine_neurons_fire(every_node_path, rng):
    engine = Engine.load(every_node_path)
    engine.predict_batch(_inputs(engine, rng, 4))
    rates = {s["name"]: s["firing_rate"] for s in engine.layer_stats() if s["firing_rate"] is not None}
    assert set(rates) == {"stem_lif", "depthwise_lif", "grouped_lif", "hidden_lif"}
    for name, rate in rates.items():
        assert 0.0 < rate < 1.0, name


def test_engine_predict_equals_reset_and_steps(every_node_path, rng):
    engine = Engine.load(every_node_path)
    x = _inputs(engine, rng, 1)[0]
    expected = engine.predict(x)
    engine.reset()
    outputs = [engine.step(x) for _ in range(engine.timesteps)]
    np.testing.assert_allclose(np.mean(outputs, axis=0), expected, rtol=1e-6, atol=1e-6)


def test_engine_step_keeps_state(every_node_path, rng):
    engine = Engine.load(every_node_path)
    x = _inputs(engine, rng, 1)[0]
    engine.reset()
    first = engine.step(x)
    second = engine.step(x)
    engine.reset()
    again = engine.step(x)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("timesteps", [1, 2, 3, 4])
def test_predict_leaves_engine_reset(tmp_path, rng, backend, timesteps):
    """After predict and predict_frames, step starts from zero potentials, though the last timesteps skipped storing them."""
    graph = mnist_like_graph(timesteps)
    engine = Engine.load(save_model(tmp_path / "m.reverb", graph, random_tensors(graph, rng)), backend=backend)
    x, other = _inputs(engine, rng, 2)
    engine.reset()
    expected = engine.step(x)

    engine.predict(other)
    np.testing.assert_array_equal(engine.step(x), expected)
    engine.predict_frames(np.stack([other] * timesteps))
    np.testing.assert_array_equal(engine.step(x), expected)


def test_float16_input_checked_quietly(mnist_like_path):
    """float16 input passes without a warning, and its infinity gets the NaN-or-infinity message."""
    engine = Engine.load(mnist_like_path)
    x = np.zeros(engine.input_spec.shape, np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.predict(x)

    x[0, 3, 4] = np.inf
    with pytest.raises(InputError, match="NaN or infinity"):
        engine.predict(x)


def test_engine_predict_is_repeatable(every_node_path, rng):
    engine = Engine.load(every_node_path)
    x = _inputs(engine, rng, 1)[0]
    np.testing.assert_array_equal(engine.predict(x), engine.predict(x))


def test_engine_batch_equals_single(mnist_like_path, rng):
    engine = Engine.load(mnist_like_path)
    inputs = _inputs(engine, rng, 5)
    batch = engine.predict_batch(inputs)
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(batch[i], engine.predict(x))


def test_engine_trace_shapes(every_node_path, rng):
    engine = Engine.load(every_node_path)
    trace = engine.trace(_inputs(engine, rng, 1)[0])
    for node in engine.graph.nodes:
        assert trace[node.name].shape == (engine.timesteps, *engine.graph.shapes[node.name])


def test_engine_clones_in_threads_match_serial(mnist_like_path, rng):
    engine = Engine.load(mnist_like_path)
    inputs = _inputs(engine, rng, 8)
    serial = engine.predict_batch(inputs)
    results = [None, None]

    def work(index):
        clone = engine.clone()
        results[index] = clone.predict_batch(inputs[index::2])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(results[0], serial[0::2])
    np.testing.assert_array_equal(results[1], serial[1::2])


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 27), (3, 28, 28), (2, 1, 28, 28)])
def test_engine_rejects_wrong_input_shape(mnist_like_path, shape):
    engine = Engine.load(mnist_like_path)
    with pytest.raises(InputError, match="expects \\(1, 28, 28\\)"):
        engine.predict(np.zeros(shape, np.float32))


def test_engine_rejects_nan_input(mnist_like_path):
    engine = Engine.load(mnist_like_path)
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        engine.predict(x)


def test_engine_rejects_unknown_backend(mnist_like_path):
    with pytest.raises(InputError, match="backend must be one of"):
        Engine.load(mnist_like_path, backend="gpu")


def test_engine_rejects_unknown_model_name():
    from reverb_edge import ModelFileError

    with pytest.raises(ModelFileError, match="neither an existing file nor a shipped model name"):
        Engine.load("no-such-model")


def test_runtime_never_imports_torch(mnist_like_path):
    code = (
        "import sys, numpy as np\n"
        "import reverb_edge\n"
        "from reverb_edge import Engine\n"
        "import reverb_edge.cli\n"
        f"engine = Engine.load({str(mnist_like_path)!r})\n"
        "engine.predict(np.zeros(engine.input_spec.shape, np.float32))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr


def test_engine_predict_frames_equals_steps(every_node_path, rng):
    engine = Engine.load(every_node_path)
    frames = _inputs(engine, rng, 4)
    expected_outputs = []
    engine.reset()
    for frame in frames:
        expected_outputs.append(engine.step(frame))
    np.testing.assert_allclose(engine.predict_frames(frames), np.mean(expected_outputs, axis=0), rtol=1e-6, atol=1e-6)


def test_engine_predict_frames_rejects_single_frame(every_node_path):
    engine = Engine.load(every_node_path)
    with pytest.raises(InputError, match="expected \\(T, 3, 12, 11\\)"):
        engine.predict_frames(np.zeros((3, 12, 11), np.float32))


def test_engine_rejects_integer_pixels(mnist_like_path):
    engine = Engine.load(mnist_like_path)
    with pytest.raises(InputError, match="dtype uint8.*engine.preprocess"):
        engine.predict(np.full((1, 28, 28), 255, np.uint8))


@pytest.mark.parametrize("value", [1e31, 1e38, 3.4e38, -3.4e38])
def test_engine_rejects_overflowing_input(mnist_like_path, value):
    """Values that overflow the sums are rejected: one case left NaN potentials and valid-looking scores."""
    engine = Engine.load(mnist_like_path)
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 3, 4] = value
    for run in (engine.predict, engine.step, lambda x: engine.predict_frames(np.stack([x, x]))):
        with pytest.raises(InputError, match=r"far outside a normalised input \(at most 1e\+30"):
            run(x)
    engine.predict(np.full((1, 28, 28), 1e30, np.float32))


def test_engine_rejects_concurrent_use(mnist_like_path, rng):
    from reverb_edge import ReverbError

    engine = Engine.load(mnist_like_path)
    x = _inputs(engine, rng, 1)[0]
    # Holding the engine as another thread would, mid-prediction, makes the outcome deterministic.
    with engine._exclusive():
        with pytest.raises(ReverbError, match="engine.clone\\(\\)"):
            engine.predict(x)
    assert engine.predict(x).shape == (10,)


def test_binary_conv_engine_path_bitwise_equal(rng):
    """The engine's ±1.0 float path gives exactly the packed-bit kernel's output."""
    from reverb_edge import kernels
    from reverb_edge.engine import _make_executor
    from reverb_edge.nodes import Conv2d

    node = Conv2d(name="conv", in_channels=6, out_channels=9, kernel_size=(3, 2), stride=(2, 1),
                  padding=(1, 0, 2, 1), dilation=(1, 2), groups=3)
    from reverb_edge.bitpack import pack_signs

    words = pack_signs(rng.standard_normal((9, 3, 2, 2)))
    tensors = {
        "conv.weight": words,
        "conv.scale": rng.uniform(0.5, 1.5, 9).astype(np.float32),
        "conv.bias": rng.uniform(-0.2, 0.2, 9).astype(np.float32),
    }
    x = rng.standard_normal((6, 11, 13)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    expected = kernels.binary_conv2d(x, words, tensors["conv.scale"], tensors["conv.bias"], in_channels=6,
                                     stride=node.stride, padding=node.padding, dilation=node.dilation, groups=3)
    np.testing.assert_array_equal(_make_executor(node, tensors, kernels)(x), expected)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba may start only one thread here")
def test_engine_threads_change_no_score(every_node_path, rng):
    single = Engine.load(every_node_path)
    two = Engine.load(every_node_path, threads=2)
    inputs = _inputs(single, rng, 4)
    np.testing.assert_array_equal(two.predict_batch(inputs), single.predict_batch(inputs))
    assert two.clone().threads == 2


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2", 10_000])
def test_engine_rejects_bad_threads(every_node_path, threads):
    with pytest.raises(InputError, match="threads is .*expected an int from 1 to"):
        Engine.load(every_node_path, threads=threads)


def test_engine_trace_is_channels_first(mnist_like_path, rng):
    engine = Engine.load(mnist_like_path)
    trace = engine.trace(_inputs(engine, rng, 1)[0])
    for node in engine.graph.nodes:
        assert trace[node.name].shape == (engine.timesteps, *engine.graph.shapes[node.name]), node.name


def test_engine_clones_share_weight_rows(every_node_path, rng):
    engine = Engine.load(every_node_path)
    clone = engine.clone()
    layers = [(engine._executors[n.name], clone._executors[n.name]) for n in engine.graph.nodes if n.type_name == "Conv2d"]
    assert layers
    for original, copy in layers:
        assert copy.layer.rows is original.layer.rows
        assert copy.layer.out is not original.layer.out
    x = _inputs(engine, rng, 1)[0]
    np.testing.assert_array_equal(clone.predict(x), engine.predict(x))


@pytest.mark.parametrize("shape", [(1, 4, 4), (8, 1, 1)], ids=["one-channel", "one-pixel"])
def test_engine_trace_copies_every_timestep(tmp_path, shape):
    from reverb_edge.graph import Graph, InputSpec
    from reverb_edge.nodes import LIF, Conv2d, Flatten, Linear

    channels, height, width = shape
    graph = Graph(InputSpec(shape, (0.0,) * channels, (1.0,) * channels), (
        Conv2d("conv", in_channels=channels, out_channels=channels, kernel_size=1, weight_format="float32"),
        LIF("lif", tau=1.0, threshold=0.5), Flatten("flat"),
        Linear("fc", in_features=channels * height * width, out_features=2)), timesteps=3)
    tensors = random_tensors(graph, np.random.default_rng(0))
    tensors["conv.weight"][:] = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    tensors["conv.scale"][:] = 1.0
    tensors["conv.bias"][:] = 0.0
    path = save_model(tmp_path / "tiny.reverb", graph, tensors)
    x = np.full(shape, 0.3, np.float32)  # membrane 0.3, then 0.6 (fires), then 0.3

    numba_trace = Engine.load(path).trace(x)
    reference_trace = Engine.load(path, backend="reference").trace(x)

    np.testing.assert_array_equal(numba_trace["lif"][:, 0, 0, 0], [0.0, np.float32(0.6), 0.0])
    for name in reference_trace:
        np.testing.assert_allclose(numba_trace[name], reference_trace[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_engine_read_only_input_reuses_compiled_kernels(mnist_like_path, rng):
    engine = Engine.load(mnist_like_path)
    x = _inputs(engine, rng, 1)[0]
    expected = engine.predict(x)
    x.setflags(write=False)
    signatures = {name: len(getattr(kernel, "signatures", [])) for name, kernel in _kernel_dispatchers().items()}
    np.testing.assert_array_equal(engine.predict(x), expected)
    assert {name: len(getattr(kernel, "signatures", [])) for name, kernel in _kernel_dispatchers().items()} == signatures


def _kernel_dispatchers():
    from reverb_edge.kernels import conv, neuron, pool

    return {f"{module.__name__}.{name}": getattr(module, name) for module in (conv, neuron, pool)
            for name in dir(module) if name.startswith("_") and hasattr(getattr(module, name), "signatures")}


def test_engine_rejects_weights_too_large_for_rows():
    from reverb_edge.bitpack import words_for
    from reverb_edge.engine import MAX_WEIGHT_ROW_ELEMENTS
    from reverb_edge.graph import Graph, InputSpec
    from reverb_edge.modelfile import Model
    from reverb_edge.nodes import Flatten, Linear

    in_features = 2 * (MAX_WEIGHT_ROW_ELEMENTS // 2016 + 1)  # 1,000 outputs pad to 1,008
    graph = Graph(InputSpec((1, 2, in_features // 2), (0.0,), (1.0,)),
                  (Flatten("flat"), Linear("fc", in_features=in_features, out_features=1000)), timesteps=1)
    tensors = {
        "fc.weight": np.zeros((1000, words_for(in_features)), np.uint64),
        "fc.scale": np.ones(1000, np.float32),
        "fc.bias": np.zeros(1000, np.float32),
    }
    with pytest.raises(InputError, match=r"take 256 MiB as the engine's float32 rows, more than the 256 MiB"):
        Engine(Model(graph, tensors))


def test_engine_rejects_input_beyond_float32(mnist_like_path):
    engine = Engine.load(mnist_like_path)
    x = np.zeros(engine.input_spec.shape, np.float64)
    x[0, 0, 0] = 1e39
    with pytest.raises(InputError, match=r"input values up to 1e\+39 exceed the float32 range"):
        engine.predict(x)


def stepped(engine: Engine, frames) -> tuple[np.ndarray, list[dict]]:
    """The mean readout and the layer statistics of ``frames`` run one ``step`` at a time."""
    engine.reset()
    engine.reset_stats()
    total = None
    for frame in frames:
        out = engine.step(frame)
        total = out.copy() if total is None else total + out
    return total / np.float32(len(frames)), engine.layer_stats()


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_engine_frames_equal_steps(every_node_path, rng, count):
    engine = Engine.load(every_node_path)
    frames = rng.normal(size=(count, *engine.input_spec.shape)).astype(np.float32)
    frames[0, :, :2] = 0.0  # some rows without input at one timestep only
    expected, expected_stats = stepped(engine, frames)

    engine.reset_stats()
    scores = engine.predict_frames(frames)

    np.testing.assert_array_equal(scores, expected)
    assert engine.layer_stats() == expected_stats


def test_engine_predict_equals_steps_bitwise(mnist_like_path, rng):
    engine = Engine.load(mnist_like_path)
    for x in rng.normal(size=(4, *engine.input_spec.shape)).astype(np.float32):
        expected, _ = stepped(engine, [x] * engine.timesteps)
        np.testing.assert_array_equal(engine.predict(x), expected)


@pytest.mark.parametrize("model", ["every_node_path", "mnist_like_path"])
def test_engine_fused_neurons_equal_separate_nodes(model, request, rng):
    """Convolutions merged with the LIF node they feed (and the pooling after) give the bits and statistics of the plain node list."""
    path = request.getfixturevalue(model)
    fused = Engine.load(path)
    separate = Engine.load(path)
    separate._fused_plan = separate._stream_plan = separate._supplied_plan = separate._plan
    assert any(entry[1] == Engine._FIRING for entry in fused._fused_plan)
    if model == "mnist_like_path":
        # Both convolutions take their pooling along. With T = 2, predict merges the time-invariant
        # first one too, and runs it once for both timesteps.
        assert [entry[6] for entry in fused._stream_plan if entry[1] == Engine._FIRING] == [
            ("conv1", "lif1", False), ("conv2", "lif2", False),
        ]
        assert [entry[6] for entry in fused._fused_plan if entry[1] == Engine._FIRING] == [
            ("conv1", "lif1", True), ("conv2", "lif2", False),
        ]

    for count in (1, 2, 3):
        frames = rng.normal(size=(count, *fused.input_spec.shape)).astype(np.float32)
        fused.reset_stats()
        separate.reset_stats()
        np.testing.assert_array_equal(fused.predict_frames(frames), separate.predict_frames(frames))
        np.testing.assert_array_equal(fused.predict(frames[0]), separate.predict(frames[0]))
        assert fused.layer_stats() == separate.layer_stats()
