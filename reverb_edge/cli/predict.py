"""``reverb-edge predict``: classify image files with a model."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..engine import Engine
from ..errors import ReverbError
from ..preprocess import list_images, load_image
from . import main
from .options import backend_option, echo_json, fail, json_option, threads_option


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


@main.command("predict")
@click.argument("model")
@click.argument("images", type=click.Path(exists=True, path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, help="How many classes to list per image.")
@backend_option
@threads_option
@json_option
def predict_command(model, images, top, backend, threads, as_json):
    """Classify IMAGES (one image file, or a folder of them) with MODEL.

    Each image is converted as the model's input spec specifies: grayscale or RGB,
    inverted when it is dark ink on a light background and the model expects
    the opposite, contrast-stretched so the paper becomes black (for such
    models), fitted into the input size, normalised. A file that cannot be read
    is reported and skipped, and the exit status is then 1.
    """
    try:
        engine = Engine.load(model, backend=backend, threads=threads)
        paths = list_images(images)
    except ReverbError as err:
        raise fail(err) from err

    results = []
    failures = 0
    for path in paths:
        try:
            scores = engine.predict(engine.preprocess(load_image(path)))
        except ReverbError as err:
            # One unreadable file must not hide the results of the others.
            failures += 1
            results.append({"path": str(path), "error": str(err)})
            if not as_json:
                click.echo(f"{path}: skipped: {err}", err=True)
            continue

        probabilities = softmax(scores.astype(np.float64))
        order = np.argsort(-scores, kind="stable")[:top]
        result = {
            "path": str(path),
            "label": engine.labels[int(order[0])],
            "confidence": float(probabilities[order[0]]),
            "top": [
                {"label": engine.labels[int(i)], "probability": float(probabilities[i]), "score": float(scores[i])}
                for i in order
            ],
        }
        results.append(result)
        if not as_json:
            ranked = ", ".join(f"{item['label']} ({item['probability']:.3f})" for item in result["top"])
            click.echo(f"{path}: {ranked}")

    if as_json:
        echo_json({"model": str(engine.model.path), "predictions": results})
    if failures:
        raise click.ClickException(f"{failures} of {len(paths)} images could not be classified")
