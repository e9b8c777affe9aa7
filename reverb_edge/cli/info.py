"""``reverb-edge info``: layers, shapes, parameters and size of a model file."""

from __future__ import annotations

import click

from ..errors import ReverbError
from ..summary import describe_model
from ..modelfile import load_model
from ..registry import resolve_model
from . import main
from .options import echo_json, fail, json_option


@main.command("info")
@click.argument("model")
@json_option
def info_command(model, as_json):
    """Show the layers, shapes, parameter counts and file size of MODEL."""
    try:
        description = describe_model(load_model(resolve_model(model)))
    except ReverbError as err:
        raise fail(err) from err

    if as_json:
        echo_json(description)
        return

    spec = description["input"]
    click.echo(f"model:      {description['path']}")
    click.echo(f"input:      shape {tuple(spec['shape'])}, mean {spec['mean']}, std {spec['std']}, invert {spec['invert']}")
    click.echo(f"labels:     {', '.join(spec['labels'])}")
    click.echo(f"timesteps:  {description['timesteps']} (readout: {description['readout']} over time)")
    click.echo("")
    header = f"{'name':<22}{'type':<11}{'output shape':<16}{'weights':>10}{'format':>9}{'weight bits':>13}  details"
    click.echo(header)
    click.echo("-" * len(header))
    for layer in description["layers"]:
        click.echo(
            f"{layer['name']:<22}{layer['type']:<11}{str(tuple(layer['output_shape'])):<16}"
            f"{layer['weights']:>10}{layer['weight_format'] or '':>9}{layer['weight_bits']:>13}  {layer['details']}"
        )
    click.echo("")
    click.echo(f"parameters: {description['weights']:,} weights ({description['binary_weights']:,} binary), "
               f"{description['constants']:,} per-channel constants")
    click.echo(f"file size:  {description['file_bytes']:,} bytes; as float32 it would be "
               f"{description['fp32_bytes']:,} bytes ({description['compression']:.1f}x smaller)")
