"""The int8 TFLite export of the plain CNN: quantization parameters, XNNPACK delegation and accuracy in LiteRT."""

import logging

import numpy as np
import pytest

from helpers import tflite_interpreter, xnnpack_takes_int8

pytest.importorskip("tflite")
pytest.importorskip("flatbuffers")
tflite_interpreter()

from reverb_edge import Engine  # noqa: E402
from reverb_edge.benchmark.litert import LiteRTRunner  # noqa: E402
from reverb_edge.benchmark.tflite_export import TFLiteExportError, export_tflite  # noqa: E402
from reverb_edge.benchmark.tflite_int8 import (  # noqa: E402
    activation_quantization,
    activation_ranges,
    export_int8_tflite,
)
from reverb_edge.datasets import load_mnist  # noqa: E402
from reverb_edge.evaluation import normalise_images  # noqa: E402
from reverb_edge.graph import Graph, InputSpec  # noqa: E402
from reverb_edge.modelfile import Model  # noqa: E402
from reverb_edge.nodes import Conv2d, Flatten, Linear, MaxPool2d  # noqa: E402

from helpers import every_node_graph, random_tensors  # noqa: E402

CALIBRATION_IMAGES = 500
TEST_DIGITS = 1000
# Measured on the shipped mnist_cnn.pt, x86-64, ai-edge-litert 2.3.0, calibrated on the first 500
# MNIST training images, over all 10,000 test digits. Where the float32 logit lies inside the
# calibrated output range, the int8 logit differs from it by at most 0.43, about 2 steps of the
# output scale (0.209). Logits outside that range (0.04 % of them) are clipped to it, up to 3.5 away.
LOGIT_TOLERANCE_STEPS = 3
ACCURACY_MARGIN = 0.01


def _scores(runner, inputs):
    return np.stack([runner.predict(x) for x in inputs])


def _op_names(runner):
    return [op["op_name"] for op in runner.interpreter._get_ops_details()]


def _tensor(runner, name):
    (details,) = [t for t in runner.interpreter.get_tensor_details() if t["name"] == name]
    return details


@pytest.fixture(scope="module")
def plain_cnn_model():
    pytest.importorskip("torch", reason="the plain CNN's checkpoint loads with PyTorch")
    from reverb_edge.benchmark.bench import shipped_cnn_checkpoint
    from reverb_edge.converters.export import to_plain_graph
    from reverb_edge.converters.plain_cnn import load_plain_cnn

    network, _, _ = load_plain_cnn(shipped_cnn_checkpoint("mnist"))
    graph, tensors, relu_nodes = to_plain_graph(network)
    return network, Model(graph=graph, tensors=tensors), relu_nodes


@pytest.fixture(scope="module")
def mnist_engine():
    return Engine.load("mnist")


@pytest.fixture(scope="module")
def calibration(mnist_dir, mnist_engine):
    images, _ = load_mnist(mnist_dir, split="train")
    return normalise_images(images[:CALIBRATION_IMAGES], mnist_engine)


@pytest.fixture(scope="module")
def test_digits(mnist_dir, mnist_engine):
    images, labels = load_mnist(mnist_dir, split="test")
    return normalise_images(images[:TEST_DIGITS], mnist_engine), labels[:TEST_DIGITS]


@pytest.fixture(scope="module")
def runners(plain_cnn_model, calibration, tmp_path_factory):
    from reverb_edge.converters.plain_cnn import export_plain_cnn_tflite

    network, _, _ = plain_cnn_model
    folder = tmp_path_factory.mktemp("cnn_int8")
    int8 = LiteRTRunner(export_plain_cnn_tflite(network, folder / "int8.tflite", int8=True, calibration=calibration))
    float32 = LiteRTRunner(export_plain_cnn_tflite(network, folder / "float32.tflite"))
    return int8, float32


@pytest.fixture(scope="module")
def test_scores(runners, test_digits):
    int8, float32 = runners
    inputs, _ = test_digits
    return _scores(int8, inputs), _scores(float32, inputs)


def test_int8_cnn_delegation(runners):
    int8, _ = runners
    report = int8.delegate_report
    assert report.total_nodes == 9
    if xnnpack_takes_int8():
        assert report.delegated_nodes == 9
        assert report.partitions == 1
    else:
        # tflite-runtime 2.14.0 delegates none of the 9 operators on x86-64, and other builds may take some.
        assert 0 <= report.delegated_nodes < 9
        assert report.xnnpack_used == (report.partitions > 0)


def test_int8_runner_warns_without_delegation(runners, caplog):
    int8, _ = runners
    with caplog.at_level(logging.WARNING, logger="reverb_edge.benchmark.litert"):
        runner = LiteRTRunner(int8.path)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]

    assert runner.runtime == int8.runtime
    if runner.delegate_report.delegated_nodes > 0:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert "XNNPACK took none of the 9 operators" in warnings[0]
        assert f"under {runner.runtime}" in warnings[0]
        assert "cannot be compared" in warnings[0]


def test_runner_warning_names_runtime(runners, monkeypatch, caplog):
    """Check the warning's text under either runtime, with a delegate report in which XNNPACK took nothing."""
    from reverb_edge.benchmark import litert

    int8, _ = runners
    monkeypatch.setattr(litert, "_delegate_report", lambda interpreter: litert.DelegateReport(9, 0, 0))
    with caplog.at_level(logging.WARNING, logger="reverb_edge.benchmark.litert"):
        LiteRTRunner(int8.path)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]

    assert len(warnings) == 1
    message = warnings[0]
    assert message.startswith("int8.tflite: XNNPACK took none of the 9 operators under ")
    assert int8.runtime in message
    assert "builtin kernels" in message
    assert ("install ai-edge-litert" in message) == (not xnnpack_takes_int8())


def test_builtin_kernels_requested_without_warning(runners, caplog):
    """xnnpack=False requests the builtin kernels, so no delegation is expected and no warning is logged."""
    int8, _ = runners
    with caplog.at_level(logging.WARNING, logger="reverb_edge.benchmark.litert"):
        runner = LiteRTRunner(int8.path, xnnpack=False)
    assert runner.delegate_report.delegated_nodes == 0
    assert [record for record in caplog.records if record.levelno == logging.WARNING] == []


def test_int8_cnn_operators(runners, tmp_path, plain_cnn_model, calibration):
    int8, _ = runners
    assert int8.interpreter.get_input_details()[0]["dtype"] == np.float32
    assert int8.interpreter.get_output_details()[0]["name"] == "scores"
    assert int8.interpreter.get_output_details()[0]["dtype"] == np.float32

    _, model, relu_nodes = plain_cnn_model
    builtin = LiteRTRunner(export_int8_tflite(model, tmp_path / "int8.tflite", calibration, relu_nodes), xnnpack=False)
    assert _op_names(builtin) == [
        "QUANTIZE", "CONV_2D", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
        "DEQUANTIZE",
    ]


def test_int8_cnn_accuracy_on_test_set(test_scores, test_digits):
    int8_scores, float_scores = test_scores
    _, labels = test_digits
    int8_accuracy = (int8_scores.argmax(axis=1) == labels).mean()
    float_accuracy = (float_scores.argmax(axis=1) == labels).mean()
    assert float_accuracy >= 0.98
    assert abs(int8_accuracy - float_accuracy) <= ACCURACY_MARGIN


def test_int8_cnn_logits_close_to_float(test_scores, runners, plain_cnn_model, calibration):
    int8_scores, float_scores = test_scores
    int8, _ = runners
    _, model, relu_nodes = plain_cnn_model
    low, high = activation_ranges(model, calibration, relu_nodes)[model.graph.output_name]
    (output_scale,) = _tensor(int8, model.graph.output_name)["quantization_parameters"]["scales"]

    inside = (float_scores >= low) & (float_scores <= high)
    assert inside.mean() >= 0.99
    difference = np.abs(int8_scores - float_scores)
    assert difference[inside].max() <= LOGIT_TOLERANCE_STEPS * output_scale
    assert (int8_scores.argmax(axis=1) == float_scores.argmax(axis=1)).mean() >= 0.99


def _file_tensors(path):
    """Return each tensor of a .tflite file by name: its type, scales, zero points, quantized dimension and data."""
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    subgraph = model.Subgraphs(0)
    tensors = {}
    for index in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(index)
        quantization = tensor.Quantization()
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        tensors[tensor.Name().decode()] = {
            "type": tensor.Type(),
            "scales": quantization.ScaleAsNumpy() if quantization and quantization.ScaleLength() else None,
            "zero_points": quantization.ZeroPointAsNumpy() if quantization and quantization.ZeroPointLength() else None,
            "quantized_dimension": quantization.QuantizedDimension() if quantization else None,
            "data": data if isinstance(data, np.ndarray) else None,
        }
    return tensors


def _file_operator_versions(path):
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
    return {names[model.OperatorCodes(i).BuiltinCode()]: model.OperatorCodes(i).Version()
            for i in range(model.OperatorCodesLength())}


def test_int8_cnn_quantization_parameters(runners):
    import tflite

    int8, _ = runners
    tensors = _file_tensors(int8.path)
    quantized_input = tensors["input/int8"]
    conv_filter = tensors["layers.0/filter"]
    conv_bias = tensors["layers.0/bias"]

    assert tensors["input"]["type"] == tflite.TensorType.FLOAT32
    assert tensors["scores"]["type"] == tflite.TensorType.FLOAT32
    assert tensors["layers.0"]["type"] == tflite.TensorType.INT8
    assert conv_filter["type"] == tflite.TensorType.INT8
    assert conv_bias["type"] == tflite.TensorType.INT32
    assert len(conv_filter["scales"]) == 32
    assert conv_filter["quantized_dimension"] == 0
    assert not conv_filter["zero_points"].any()
    weights = conv_filter["data"].view(np.int8)
    assert np.abs(weights).max() == 127
    assert weights.min() >= -127
    np.testing.assert_allclose(conv_bias["scales"], quantized_input["scales"][0] * conv_filter["scales"], rtol=1e-6)
    # A fused ReLU maps real 0 onto -128, the bottom of the int8 range.
    assert tensors["layers.0"]["zero_points"].tolist() == [-128]

    # MAX_POOL_2D and RESHAPE keep their input's quantization.
    for before, after in (("layers.3", "layers.6"), ("layers.7", "layers.10"), ("layers.10", "layers.11")):
        assert tensors[after]["scales"].tolist() == tensors[before]["scales"].tolist(), after
        assert tensors[after]["zero_points"].tolist() == tensors[before]["zero_points"].tolist(), after

    readout = tensors["layers.12/weight"]
    assert len(readout["scales"]) == 1
    assert readout["zero_points"].tolist() == [0]
    expected_bias_scale = tensors["layers.11"]["scales"][0] * readout["scales"][0]
    assert tensors["layers.12/bias"]["scales"][0] == pytest.approx(expected_bias_scale, rel=1e-6)


def test_int8_cnn_operator_versions(runners):
    int8, _ = runners
    assert _file_operator_versions(int8.path) == {
        "QUANTIZE": 1, "CONV_2D": 3, "MAX_POOL_2D": 2, "RESHAPE": 1, "FULLY_CONNECTED": 4, "DEQUANTIZE": 2,
    }


@pytest.mark.parametrize("low, high", [(0.0, 2.55), (1.0, 2.0), (-1.0, 1.0), (-3.0, -0.5), (-0.4242, 2.8215)])
def test_activation_quantization_covers_range(low, high):
    quantization = activation_quantization(low, high)
    (scale,), (zero_point,) = quantization.scales, quantization.zero_points
    # Real 0 is exactly representable, and the int8 range spans [min(low, 0), max(high, 0)] to within one step.
    assert -128 <= zero_point <= 127
    assert scale * (-128 - zero_point) == pytest.approx(min(low, 0.0), abs=scale)
    assert scale * (127 - zero_point) == pytest.approx(max(high, 0.0), abs=scale)


def test_activation_quantization_of_zero_range():
    assert activation_quantization(0.0, 0.0).scales == (1.0,)


def test_export_plain_cnn_int8_needs_calibration(plain_cnn_model, tmp_path):
    from reverb_edge.converters.plain_cnn import export_plain_cnn_tflite

    network, _, _ = plain_cnn_model
    with pytest.raises(ValueError, match="calibration images"):
        export_plain_cnn_tflite(network, tmp_path / "int8.tflite", int8=True)
    with pytest.raises(ValueError, match="int8=True"):
        export_plain_cnn_tflite(network, tmp_path / "float.tflite", calibration=np.zeros((1, 1, 28, 28), np.float32))


# Small random plain CNNs: the PAD path and SAME max pooling, which the shipped CNN does not use.


def padded_plain_graph():
    """Convolutions with SAME padding and with padding that TFLite's SAME mode cannot express, then SAME max pooling.

    On 9 × 8 images, the stride-2 convolution pads (1, 1) along the width, where
    SAME pads (0, 1), so its input passes through an int8 PAD.
    """
    spec = InputSpec((2, 9, 8), (0.0, 0.0), (1.0, 1.0), False, tuple("abcd"))
    nodes = (
        Conv2d("same", in_channels=2, out_channels=6, kernel_size=3, padding=1, weight_format="float32"),
        Conv2d("padded", in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1, weight_format="float32"),
        MaxPool2d("max", kernel_size=2, stride=1, padding=(0, 1, 0, 1)),
        Flatten("flatten"),
        Linear("readout", in_features=8 * 5 * 4, out_features=4, weight_format="float32"),
    )
    return Graph(spec, nodes, timesteps=1)


@pytest.fixture
def padded_model(rng):
    return Model(graph=padded_plain_graph(), tensors=random_tensors(padded_plain_graph(), rng))


def test_padded_graph_int8_matches_float(padded_model, rng, tmp_path):
    relu_nodes = {"same", "padded"}
    calibration = rng.normal(size=(200, 2, 9, 8)).astype(np.float32)
    inputs = rng.normal(size=(50, 2, 9, 8)).astype(np.float32)
    int8 = LiteRTRunner(export_int8_tflite(padded_model, tmp_path / "int8.tflite", calibration, relu_nodes))
    float32 = LiteRTRunner(export_tflite(padded_model, tmp_path / "float32.tflite", relu_after=relu_nodes))

    assert "PAD" in _op_names(LiteRTRunner(int8.path, xnnpack=False))
    assert int8.delegate_report.total_nodes == 8
    if xnnpack_takes_int8():
        assert int8.delegate_report.delegated_nodes == 8
    else:
        # tflite-runtime 2.14.0 delegates none of the 8 operators on x86-64.
        assert int8.delegate_report.delegated_nodes < 8
    expected = _scores(float32, inputs)
    # Within 5 % of the readout's calibrated range: every layer adds its rounding error.
    low, high = activation_ranges(padded_model, calibration, relu_nodes)["readout"]
    np.testing.assert_allclose(_scores(int8, inputs), expected, rtol=0, atol=0.05 * (high - low))


def test_activation_ranges_match_float_export(padded_model, rng, tmp_path):
    relu_nodes = {"same", "padded"}
    image = rng.normal(size=(1, 2, 9, 8)).astype(np.float32)
    float32 = LiteRTRunner(export_tflite(padded_model, tmp_path / "float32.tflite", relu_after=relu_nodes))
    scores = float32.predict(image[0])
    low, high = activation_ranges(padded_model, image, relu_nodes)["readout"]
    assert low == pytest.approx(scores.min(), abs=1e-5)
    assert high == pytest.approx(scores.max(), abs=1e-5)


def test_int8_export_rejects_neurons(rng, tmp_path):
    graph = every_node_graph(timesteps=1)
    model = Model(graph=graph, tensors=random_tensors(graph, rng))
    calibration = rng.normal(size=(4, *graph.input.shape)).astype(np.float32)
    with pytest.raises(TFLiteExportError, match="not LIF"):
        export_int8_tflite(model, tmp_path / "model.tflite", calibration)


def test_int8_export_rejects_bad_calibration(padded_model, tmp_path):
    with pytest.raises(TFLiteExportError, match="calibration images"):
        export_int8_tflite(padded_model, tmp_path / "model.tflite", np.zeros((4, 1, 9, 8), np.float32))
    with pytest.raises(TFLiteExportError, match="NaN"):
        export_int8_tflite(padded_model, tmp_path / "model.tflite", np.full((4, 2, 9, 8), np.nan, np.float32))
