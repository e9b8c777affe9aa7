"""Load a PyTorch model from a checkpoint or an import path and convert it to a model file."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

from reverb_edge.engine import Engine
from reverb_edge.errors import ConversionError

from .export import export_model
from .model import ReverbNet, load_checkpoint
from .parity import torch_scores


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
    module = importlib.import_module(module_name)
    target = getattr(module, attribute)
    model = target() if callable(target) and not isinstance(target, torch.nn.Module) else target
    if not isinstance(model, ReverbNet):
        raise ConversionError(
            f"{source!r} gave a {type(model).__name__}, not a ReverbNet; wrap the layers in "
            "reverb_edge.converters.model.ReverbNet"
        )
    return model


def convert_source(source: str, output: str | Path) -> ReverbNet:
    """Convert ``source`` to ``output``; return the PyTorch model (in eval mode) for checks."""
    model = load_source(source)
    model.eval()
    export_model(model, output)
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
    return {
        "agreement": float((reference.argmax(axis=1) == scores.argmax(axis=1)).mean()),
        "max_abs_difference": float(np.abs(reference - scores).max()),
    }
