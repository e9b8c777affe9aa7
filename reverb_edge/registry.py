"""Models shipped inside the package, resolvable by name (for example ``mnist``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ModelFileError

SHIPPED_MODELS = {
    "mnist": "mnist.reverb",
    "nmnist": "nmnist.reverb",
}
SHIPPED_CHECKPOINTS = {
    "mnist": "mnist.pt",
    "nmnist": "nmnist.pt",
}


def _package_file(filename: str) -> Path:
    return Path(str(resources.files("reverb_edge") / "models" / filename))


def resolve_model(name_or_path: str | Path) -> Path:
    """Return the file for a model path or a shipped model name; a path wins over a name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if name in SHIPPED_MODELS:
        shipped = _package_file(SHIPPED_MODELS[name])
        if not shipped.is_file():
            raise ModelFileError(
                f"the shipped model {name!r} is missing from this installation ({shipped}); reinstall reverb-edge"
            )
        return shipped
    raise ModelFileError(
        f"model not found: {name!r} is neither an existing file nor a shipped model name "
        f"({', '.join(sorted(SHIPPED_MODELS))}); pass the path of a .reverb file"
    )


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Return the PyTorch checkpoint for a path or a shipped model name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if name in SHIPPED_CHECKPOINTS:
        return _package_file(SHIPPED_CHECKPOINTS[name])
    raise FileNotFoundError(
        f"checkpoint not found: {name!r} is neither an existing file nor a shipped model name "
        f"({', '.join(sorted(SHIPPED_CHECKPOINTS))})"
    )
