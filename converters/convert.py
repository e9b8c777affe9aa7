"""Load a PyTorch model from a checkpoint or an import path and convert it to a model file."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from reverb_edge.engine import Engine
from reverb_edge.errors import ConversionError

from .export import export_model
from .model import ReverbNet, load_checkpoint
from .parity import torch_scores

# A conversion whose engine output differs more than this from PyTorch on random inputs
# is treated as wrong: float32 summation order alone moves logits by about 1e-5.
MIN_AGREEMENT = 0.9
MAX_MEAN_DIFFERENCE = 1e-2


def _import_target(source: str):
    module_name, _, attribute = source.partition(":")
    # Like `python -m`, look in the current folder first, so a user's own module is found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attribute)
        return target() if callable(target) and not isinstance(target, torch.nn.Module) else target
    except Exception as err:  # anything the user's module raises while importing or building
        raise ConversionError(
            f"could not build the model from {source!r}: {type(err).__name__}: {err}. The module is imported "
            "from the current folder or PYTHONPATH, and the attribute must be a ReverbNet or a function "
            "without arguments that returns one"
        ) from err


def load_source(source: str) -> ReverbNet:
    """Return the network named by ``source``: a checkpoint path, a shipped name, or ``module:attribute``."""
    from reverb_edge.registry import SHIPPED_CHECKPOINTS, resolve_checkpoint

    path = Path(source)
    if path.exists() or source in SHIPPED_CHECKPOINTS:
        model, _, _ = load_checkpoint(resolve_checkpoint(source))
        return model

    module_name, separator, attribute = source.partition(":")
    if not separator or not module_name or not attribute:
        raise FileNotFoundError(
            f"{source!r} is not an existing checkpoint file; to convert a module, pass 'package.module:attribute'"
        )
    model = _import_target(source)
    if not isinstance(model, ReverbNet):
        raise ConversionError(
            f"{source!r} gave a {type(model).__name__}, not a ReverbNet; wrap the layers in "
            "reverb_edge.converters.model.ReverbNet"
        )
    return model


def verify_conversion(model: ReverbNet, path: str | Path, samples: int = 16, seed: int = 0) -> dict:
    """Compare engine and PyTorch outputs on random inputs drawn around the input normalisation."""
    engine = Engine.load(path)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(samples, *engine.input_spec.shape)).astype(np.float32) / 255.0
    mean = np.asarray(engine.input_spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(engine.input_spec.std, dtype=np.float32).reshape(-1, 1, 1)
    inputs = (pixels - mean) / std
    reference = torch_scores(model, inputs)
    scores = engine.predict_batch(inputs)
    difference = np.abs(reference - scores)
    return {
        "samples": samples,
        "agreement": float((reference.argmax(axis=1) == scores.argmax(axis=1)).mean()),
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
    }


def convert_source(source: str, output: str | Path, verify: int = 16) -> tuple[ReverbNet, dict | None]:
    """Convert ``source`` to ``output``; return the PyTorch model (eval mode) and the check report.

    The file is written next to ``output`` under a temporary name, checked
    against PyTorch on ``verify`` random inputs (0 skips the check), and only
    then renamed to ``output``, so a failed conversion leaves an existing file
    untouched. The source is only read.
    """
    output = Path(output)
    source_path = Path(source)
    if source_path.is_file() and output.exists() and os.path.samefile(source_path, output):
        raise ConversionError(f"the output {output} is the source checkpoint; choose another output path")

    real_output = Path(os.path.realpath(output))
    if real_output.exists() and not real_output.is_file():
        raise ConversionError(f"{output} exists and is not a regular file; choose another output path")

    model = load_source(source)
    model.eval()
    folder = real_output.parent
    if not folder.is_dir():
        raise ConversionError(f"cannot write {output}: folder {folder} does not exist; create it first")

    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".check", dir=folder)
    os.close(handle)
    temporary = Path(temporary)
    try:
        export_model(model, temporary)
        report = verify_conversion(model, temporary, samples=verify) if verify else None
        if report and (report["agreement"] < MIN_AGREEMENT or report["mean_abs_difference"] > MAX_MEAN_DIFFERENCE):
            raise ConversionError(
                f"the converted model does not reproduce PyTorch on {verify} random inputs (argmax agreement "
                f"{report['agreement'] * 100:.1f} %, mean |logit difference| {report['mean_abs_difference']:.2e}); "
                f"{output} was not written. A layer may compute something the engine does not"
            )
        export_model(model, output)
    finally:
        temporary.unlink(missing_ok=True)
    return model, report
