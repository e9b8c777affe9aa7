"""The N-MNIST folder layout: ``index.csv`` listing ``<split>/<digit>/<index>.bin`` recordings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import InputError
from .readers import read_events

SENSOR_SIZE = (34, 34, 2)
SPLITS = ("train", "test")


def load_nmnist(folder: str | Path, split: str = "test", limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Read the recordings of one split listed in ``folder/index.csv``; return events and labels.

    ``index.csv`` has at least the columns ``path`` (relative to ``folder``),
    ``label`` and ``split`` (``Train`` or ``Test``, any case).
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(folder)
    index = folder / "index.csv"
    if not index.is_file():
        raise InputError(
            f"N-MNIST index not found: {index}; pass --data DIR (the folder with index.csv and the "
            "Train/ and Test/ recordings), or set REVERB_DATA to the data root that contains nmnist/"
        )
    recordings, labels = [], []
    with index.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{index} lacks the columns {sorted(missing)}")
        for row in reader:
            if row["split"].lower() != split:
                continue
            recording = read_events(folder / row["path"], format="nmnist", sensor_size=SENSOR_SIZE)
            recordings.append(recording.events)
            labels.append(int(row["label"]))
            if limit is not None and len(recordings) >= limit:
                break
    if not recordings:
        raise InputError(f"{index} lists no {split!r} recordings")
    return recordings, np.asarray(labels, dtype=np.int64)
