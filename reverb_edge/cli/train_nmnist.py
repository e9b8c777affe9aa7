"""``reverb-edge train-nmnist``: train an N-MNIST ReverB-SNN on simulated and real recordings."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ReverbError
from ..graph import MAX_TIMESTEPS
from . import main
from .options import check_output_folders, default_data_dir, echo_json, fail, json_option, require_torch


@main.command("train-nmnist")
@click.option("--mnist", "mnist_dir", type=click.Path(path_type=Path), default=None,
              help="MNIST IDX folder whose training digits are simulated [default: $REVERB_DATA/mnist].")
@click.option("--data", "nmnist_dir", type=click.Path(path_type=Path), default=None,
              help="N-MNIST folder with index.csv and the .bin recordings [default: $REVERB_DATA/nmnist].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write.")
@click.option("--convert", "convert_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also convert the trained network to this .reverb file.")
@click.option("--simulated", type=click.IntRange(min=1), default=16_000, show_default=True,
              help="How many MNIST training digits to turn into simulated recordings.")
@click.option("--real-repeats", type=click.IntRange(min=0), default=8, show_default=True,
              help="How often each real training recording appears per epoch.")
@click.option("--timesteps", type=click.IntRange(min=1, max=MAX_TIMESTEPS), default=6, show_default=True,
              help="T: each recording is binned into T frames of equal duration.")
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes that simulate recordings.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="PyTorch CPU threads.")
@click.option("--rate-penalty", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="λ: add λ × the sum of the LIF layers' mean firing rates to the loss, for a sparser network "
                   "that the engine runs faster.")
@json_option
def train_nmnist_command(mnist_dir, nmnist_dir, output, convert_to, simulated, real_repeats, timesteps, epochs,
                         seed, workers, threads, rate_penalty, as_json):
    """Train an N-MNIST ReverB-SNN and report accuracy on the real recordings (needs the torch extra)."""
    require_torch()
    check_output_folders({"--output": output, "--convert": convert_to})
    from ..converters.export import export_model
    from ..converters.nmnist import train_nmnist

    try:
        result = train_nmnist(
            mnist_dir or default_data_dir("mnist"), nmnist_dir or default_data_dir("nmnist"), output,
            simulated=simulated, real_repeats=real_repeats, timesteps=timesteps, epochs=epochs,
            seed=seed, workers=workers, threads=threads, rate_penalty=rate_penalty,
        )
        if convert_to is not None:
            from ..converters.model import load_checkpoint

            model, _, _ = load_checkpoint(output)
            export_model(model, convert_to)
    except (ReverbError, FileNotFoundError, ValueError) as err:
        raise fail(err) from err

    summary = {
        "checkpoint": str(output),
        "model_file": str(convert_to) if convert_to else None,
        "real_test_accuracy": result.real_test_accuracy,
        "real_train_accuracy": result.real_train_accuracy,
        "seconds": round(result.seconds, 1),
        "history": result.history,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"real N-MNIST accuracy: test {result.real_test_accuracy * 100:.1f} %, train "
                   f"{result.real_train_accuracy * 100:.1f} %, {result.seconds:.0f} s; checkpoint {output}")
