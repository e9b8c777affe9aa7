"""Run an exported .tflite model with LiteRT (``ai-edge-litert``), or ``tflite-runtime`` as a fallback.

:class:`LiteRTRunner` takes the engine's (C, H, W) input, so the same arrays
feed :meth:`reverb_edge.Engine.predict` and the TFLite interpreter. A model
exported with ``frames=True`` takes (T, C, H, W) frames instead, as
:meth:`reverb_edge.Engine.predict_frames` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from reverb_edge.errors import InputError, MissingExtraError

logger = logging.getLogger(__name__)

# tflite-runtime 2.14.0 is built against NumPy 1, so it needs NumPy < 2.
INSTALL_HINT = (
    'pip install "reverb-edge[bench]" (ai-edge-litert), or where ai-edge-litert has no wheel: '
    'pip install tflite-runtime tflite flatbuffers "numpy<2"'
)
# The pip distribution of each interpreter package that import_interpreter_module can return.
RUNTIME_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}


def import_interpreter_module() -> Any:
    """Import ``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter``, and return it.

    Raises MissingExtraError when neither is installed. The choice is logged at
    debug level, and :func:`runtime_name` names it for reports.
    """
    try:
        from ai_edge_litert import interpreter
    except ImportError as litert_error:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise MissingExtraError(
                f"running .tflite models needs ai-edge-litert or tflite-runtime ({litert_error}); "
                f"install one with {INSTALL_HINT}"
            ) from litert_error
    logger.debug("running .tflite models with %s", runtime_name(interpreter))
    return interpreter


def runtime_name(module: Any) -> str:
    """Return the pip distribution and version of an interpreter module, such as "tflite-runtime 2.14.0"."""
    package = module.__name__.partition(".")[0]
    distribution = RUNTIME_DISTRIBUTIONS.get(package, package)
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        # A runtime built from source or copied in by hand has no pip metadata.
        return f"{distribution} (version unknown)"


@dataclass(frozen=True)
class DelegateReport:
    """The split of a model's operators between the XNNPACK delegate and TFLite's builtin kernels.

    ``delegated_nodes`` of the model's ``total_nodes`` operators run inside
    ``partitions`` delegate kernels, and the rest run on TFLite's builtin kernels.
    """

    total_nodes: int
    delegated_nodes: int
    partitions: int

    @property
    def xnnpack_used(self) -> bool:
        return self.partitions > 0


class LiteRTRunner:
    """One TFLite interpreter over an exported model, with ``threads`` CPU threads.

    ``xnnpack=False`` builds the interpreter with the op resolver that applies
    no default delegate (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), so every
    operator runs on TFLite's builtin kernels. Like an Engine, a runner keeps
    mutable buffers, so use one per thread.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, xnnpack: bool = True) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"TFLite model not found: {path}; write one with export_tflite(model, path)")
        module = import_interpreter_module()
        resolver = (
            module.OpResolverType.AUTO if xnnpack else module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.path = path
        self.threads = threads
        # The pip distribution and version that runs the model, such as "ai-edge-litert 2.3.0".
        self.runtime = runtime_name(module)
        with _native_stderr_to_log():
            self.interpreter = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver
            )
            self.interpreter.allocate_tensors()

        (input_details,) = self.interpreter.get_input_details()
        (output_details,) = self.interpreter.get_output_details()
        batch, height, width, channels = (int(d) for d in input_details["shape"])
        # export_tflite names the input "frames" when it takes one frame per timestep.
        self.frames = input_details["name"] == "frames"
        if (batch != 1 and not self.frames) or input_details["dtype"] != np.float32:
            raise InputError(
                f"{path}: the model input is {input_details['dtype'].__name__} {tuple(input_details['shape'])}, "
                "expected float32 (1, H, W, C), or (T, H, W, C) named 'frames'; export the model with export_tflite"
            )
        self.input_shape = (batch, channels, height, width) if self.frames else (channels, height, width)
        self.classes = int(output_details["shape"][-1])
        self._input_index = int(input_details["index"])
        self._output_index = int(output_details["index"])
        # tensor() returns functions that give numpy views of the interpreter's own buffers.
        # The views must not outlive a call, because invoke() rejects live references.
        self._input_view = self.interpreter.tensor(self._input_index)
        self._output_view = self.interpreter.tensor(self._output_index)
        self.delegate_report = _delegate_report(self.interpreter)
        logger.info(
            "loaded %s with %s: %d threads, XNNPACK took %d of %d nodes in %d partitions",
            path, self.runtime, threads, self.delegate_report.delegated_nodes, self.delegate_report.total_nodes,
            self.delegate_report.partitions,
        )
        if xnnpack and self.delegate_report.total_nodes > 0 and self.delegate_report.delegated_nodes == 0:
            self._warn_no_delegation(module)

    @property
    def xnnpack_used(self) -> bool:
        return self.delegate_report.xnnpack_used

    def _warn_no_delegation(self, module: Any) -> None:
        """Log a warning that XNNPACK took no operator, so the latency is that of the builtin kernels."""
        # Measured on x86-64: tflite-runtime 2.14.0 delegates none of the int8 plain CNN's 9 operators,
        # and ai-edge-litert 2.3.0 delegates all of them.
        advice = ""
        if module.__name__.startswith("tflite_runtime"):
            advice = "; install ai-edge-litert for a latency with XNNPACK"
        logger.warning(
            "%s: XNNPACK took none of the %d operators under %s, so every operator runs on TFLite's builtin "
            "kernels, and the latency cannot be compared with a run in which XNNPACK takes the graph%s",
            self.path.name, self.delegate_report.total_nodes, self.runtime, advice,
        )

    def predict(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return the class scores (classes,) for one (C, H, W) float32 input, or (T, C, H, W) frames.

        The input is copied, transposed to channels-last, straight into the
        interpreter's input buffer. Pass ``out``, a float32 (classes,) array, to
        receive the scores without allocating a new array.
        """
        x = np.asarray(x)
        if x.shape != self.input_shape or x.dtype != np.float32:
            if self.frames:
                raise InputError(
                    f"input is {x.dtype} {x.shape}, but the model expects float32 frames {self.input_shape} "
                    "(T, C, H, W); pass the array that Engine.events_to_frames returns"
                )
            raise InputError(
                f"input is {x.dtype} {x.shape}, but the model expects float32 {self.input_shape} (C, H, W); "
                "pass the array that Engine.preprocess returns"
            )
        if self.frames:
            np.copyto(self._input_view(), x.transpose(0, 2, 3, 1))
        else:
            np.copyto(self._input_view()[0], x.transpose(1, 2, 0))
        self.interpreter.invoke()
        scores = self._output_view()[0]
        if out is None:
            return scores.copy()
        np.copyto(out, scores)
        return out


@contextlib.contextmanager
def _native_stderr_to_log():
    """Send what native code writes to file descriptor 2 meanwhile to this module's logger.

    TFLite's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU." straight to the process's stderr when an interpreter
    is built. Its C++ API can set that logger's level, but no such setting
    was found in the Python API. Lines that start with "INFO:" are logged at
    debug level, any other line as a warning.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        # No file descriptor 2 to redirect (a closed or replaced stderr): leave the output alone.
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                level = logging.DEBUG if line.startswith("INFO:") else logging.WARNING
                logger.log(level, "LiteRT: %s", line)


def _delegate_report(interpreter: Any) -> DelegateReport:
    """Count the operators that delegate kernels replaced, from the interpreter's node list.

    LiteRT keeps the model's M original nodes at indices 0..M-1 and appends one
    ``DELEGATE`` node per partition. A partition lists only its boundary
    tensors, so its nodes are found by walking back from its outputs to its
    inputs. LiteRT can also log "Replacing N out of M node(s) with delegate",
    but ai-edge-litert 2.3.0 does not print that line at its default log level.
    """
    # NOTE: _get_ops_details is private, undocumented API of ai-edge-litert 2.3.0 and tflite-runtime.
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {}
    for op in originals:
        for tensor in op["outputs"]:
            producer[int(tensor)] = op["index"]
    by_index = {op["index"]: op for op in originals}

    delegated: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        pending = [producer[int(t)] for t in delegate["outputs"] if int(t) in producer]
        while pending:
            index = pending.pop()
            if index in delegated:
                continue
            delegated.add(index)
            for tensor in by_index[index]["inputs"]:
                tensor = int(tensor)
                if tensor >= 0 and tensor not in boundary and tensor in producer:
                    pending.append(producer[tensor])
    return DelegateReport(total_nodes=len(originals), delegated_nodes=len(delegated), partitions=len(delegates))
