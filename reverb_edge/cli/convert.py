"""``reverb-edge convert``: PyTorch checkpoint or module -> validated ``.reverb`` model file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ReverbError
from . import main
from .options import fail, require_torch


@main.command("convert")
@click.argument("source")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Model file to write (conventionally *.reverb); replaced atomically.")
@click.option("--verify", type=click.IntRange(min=0), default=16, show_default=True,
              help="Check the engine against PyTorch on this many random inputs before writing (0 skips).")
def convert_command(source, output, verify):
    """Convert SOURCE to a model file for the engine.

    SOURCE is a checkpoint written by `reverb-edge train` (or a shipped model name), or
    'package.module:attribute' naming a ReverbNet instance or a function returning one.
    The amplitude α and BatchNorm are folded into per-channel neuron constants and the weights
    are packed into sign bits. The source is never modified.
    """
    require_torch()
    from ..converters.convert import convert_source

    try:
        _, report = convert_source(source, output, verify=verify)
    except (ReverbError, FileNotFoundError) as err:
        raise fail(err) from err

    click.echo(f"wrote {output} ({output.stat().st_size:,} bytes)")
    if report is not None:
        click.echo(
            f"verified on {report['samples']} random inputs: argmax agreement {report['agreement'] * 100:.1f} %, "
            f"max |logit difference| {report['max_abs_difference']:.2e}"
        )
