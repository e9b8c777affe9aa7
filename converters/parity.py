"""Run the PyTorch model on the same inputs as the engine, for parity checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .model import ReverbNet, load_checkpoint


@torch.no_grad()
def torch_scores(model: ReverbNet | str | Path, inputs: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Return the PyTorch logits (N, classes) for normalised inputs (N, C, H, W) in eval mode."""
    if not isinstance(model, ReverbNet):
        model, _, _ = load_checkpoint(model)
    model.eval()
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size], dtype=np.float32))
        outputs.append(model(batch).numpy())
    if not outputs:
        return np.zeros((0, len(model.input_spec.get("labels", ()))), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)
