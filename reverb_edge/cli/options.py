"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numba

from ..errors import MissingExtraError, ReverbError

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
backend_option = click.option(
    "--backend",
    type=click.Choice(["numba", "reference"]),
    default="numba",
    show_default=True,
    help="Kernels to run: the Numba engine, or the plain NumPy reference (slow, for debugging).",
)


threads_option = click.option(
    "--threads", type=click.IntRange(min=1, max=numba.config.NUMBA_NUM_THREADS), default=1, show_default=True,
    help="Threads the engine's convolutions may use, at most the CPU's cores. More than 1 helps only "
         "when those cores are otherwise idle: a core busy with another process slows every timestep.",
)


def default_data_dir(dataset: str) -> Path:
    """Return ``$REVERB_DATA/<dataset>`` (``../shared/data`` when REVERB_DATA is unset)."""
    root = Path(os.environ.get("REVERB_DATA", Path("..") / "shared" / "data"))
    return root / dataset


def echo_json(data: dict) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def fail(err: Exception) -> "click.ClickException":
    """Turn an SDK error into a click error, so the CLI prints one line and exits with status 1."""
    return click.ClickException(str(err))


def parse_size(text: str | None, option: str, example: str, minimum: int = 1, maximum: int = 65536):
    """Parse ``WIDTHxHEIGHT`` into (width, height), or raise a click error naming ``option``; None stays None."""
    if text is None:
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as {example}, got {text!r}", param_hint=option)
    if not (minimum <= width <= maximum and minimum <= height <= maximum):
        raise click.BadParameter(
            f"width and height must be {minimum} to {maximum} pixels, got {text!r}", param_hint=option
        )
    return width, height


def check_output_folders(paths: dict) -> None:
    """Fail before long work starts when the folder of an output file (option -> path or None) is missing."""
    for option, path in paths.items():
        if path is not None and not path.resolve().parent.is_dir():
            raise click.BadParameter(f"folder {path.resolve().parent} does not exist; create it first", param_hint=option)


def require_torch() -> None:
    """Raise a click error naming the extra to install when PyTorch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise fail(
            MissingExtraError(
                'this command needs PyTorch: pip install torch==2.13.0 "reverb-edge[torch]"'
            )
        ) from err


__all__ = ["check_output_folders", "parse_size", "json_option", "backend_option", "threads_option", "default_data_dir", "echo_json", "fail", "require_torch", "ReverbError"]
