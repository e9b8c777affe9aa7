"""A frames-to-events simulator that turns still images into N-MNIST-like DVS recordings.

N-MNIST was recorded by an ATIS sensor on a pan-tilt mount looking at MNIST
digits on a monitor, moving in three saccades that trace a triangle, each
about 100 ms long (Orchard et al., "Converting Static Image Datasets to
Spiking Neuromorphic Datasets Using Saccades", Frontiers in Neuroscience
9:437, 2015). This module moves a digit the same way in front of a simulated
DVS pixel array:

- Each pixel compares its log intensity L = log(I / 255 + eps) with the
  level at its last event. When L has risen by the pixel's contrast threshold
  C (or more), it emits ON events, one per multiple of C, and moves its
  reference level by that many thresholds. A fall gives OFF events.
- C varies from pixel to pixel (Gaussian, ``threshold_sigma``), as sensor
  mismatch does, and a Poisson background of noise events is added.
- The motion follows a raised-cosine velocity profile within each saccade,
  so the event rate peaks mid-saccade as in the real recordings.

Event timestamps are spread uniformly within each simulation step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .types import EVENT_DTYPE, empty_events

# Triangle of saccade end points in pixels (dx, dy), returning to the start.
# Down first, then up and right, then back: the shape of the real recordings.
DEFAULT_PATH = ((0.0, 0.0), (1.0, 5.0), (5.0, -1.0), (0.0, 0.0))


@dataclass(frozen=True)
class SaccadeSimulator:
    """Parameters of the simulated sensor and motion (times in µs, sizes in pixels).

    Fields:
        sensor_size: (width, height, 2) of the simulated sensor; the image is centred in it.
        saccade_us: duration of each saccade.
        step_us: simulation time step; events get timestamps spread within it.
        threshold: mean contrast threshold C, in log-intensity units.
        threshold_sigma: standard deviation of C across pixels.
        eps: offset in L = log(I / 255 + eps), so black pixels have a finite log.
        noise_rate_hz: background noise events per pixel per second.
        path: saccade end points (dx, dy) relative to the centred position.
        jitter: random scale of the path per recording (0.2 gives ±20 %).
    """

    sensor_size: tuple[int, int, int] = (34, 34, 2)
    saccade_us: int = 100_000
    step_us: int = 1_000
    threshold: float = 0.4
    threshold_sigma: float = 0.03
    eps: float = 0.1
    noise_rate_hz: float = 0.5
    path: tuple[tuple[float, float], ...] = DEFAULT_PATH
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if len(self.sensor_size) != 3 or min(self.sensor_size) < 1:
            raise InputError(f"sensor_size must be (width, height, polarities) >= 1, got {self.sensor_size}")
        if self.step_us < 1 or self.saccade_us < self.step_us:
            raise InputError(
                f"need 1 <= step_us <= saccade_us, got step_us={self.step_us}, saccade_us={self.saccade_us}"
            )
        if not self.threshold > 0 or self.threshold_sigma < 0 or not self.eps > 0:
            raise InputError(
                f"threshold and eps must be > 0 and threshold_sigma >= 0, got {self.threshold}, "
                f"{self.eps}, {self.threshold_sigma}"
            )
        if len(self.path) < 2:
            raise InputError(f"path needs at least two points, got {self.path}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return simulate_saccades(image, rng, self)


def _positions(config: SaccadeSimulator, scale: float) -> np.ndarray:
    """Return the (dx, dy) offset at every simulation step, raised-cosine within each saccade."""
    steps = config.saccade_us // config.step_us
    phase = (1.0 - np.cos(np.pi * np.arange(1, steps + 1) / steps)) / 2.0
    points = np.asarray(config.path, dtype=np.float64) * scale
    segments = [points[i] + (points[i + 1] - points[i]) * phase[:, None] for i in range(len(points) - 1)]
    positions = np.concatenate(segments)
    # Centre the motion on the sensor: in real recordings the events' mean position is the centre.
    return positions - positions.mean(axis=0)


def _shifted(canvas: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Translate ``canvas`` by a sub-pixel offset with bilinear interpolation, filling with 0."""
    height, width = canvas.shape
    ix, fx = int(np.floor(dx)), dx - np.floor(dx)
    iy, fy = int(np.floor(dy)), dy - np.floor(dy)
    padded = np.pad(canvas, 2 + max(abs(ix), abs(iy)) + 1)
    offset = 2 + max(abs(ix), abs(iy)) + 1

    def window(sy: int, sx: int) -> np.ndarray:
        return padded[offset - sy : offset - sy + height, offset - sx : offset - sx + width]

    return (
        (1 - fx) * (1 - fy) * window(iy, ix)
        + fx * (1 - fy) * window(iy, ix + 1)
        + (1 - fx) * fy * window(iy + 1, ix)
        + fx * fy * window(iy + 1, ix + 1)
    )


def simulate_saccades(image: np.ndarray, rng: np.random.Generator, config: SaccadeSimulator | None = None) -> np.ndarray:
    """Return the events (sorted by t, :data:`EVENT_DTYPE`) of ``image`` moved along the saccade path.

    ``image`` is a uint8 (H, W) grayscale image with light strokes on a dark
    background (an MNIST digit); it must fit inside the sensor.
    """
    config = config or SaccadeSimulator()
    image = np.asarray(image)
    width, height, _ = config.sensor_size
    if image.ndim != 2 or image.shape[0] > height or image.shape[1] > width:
        raise InputError(
            f"image must be a 2-D grayscale array no larger than the sensor ({height}, {width}), got shape {image.shape}"
        )

    canvas = np.zeros((height, width), dtype=np.float64)
    top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image

    scale = 1.0 + config.jitter * rng.uniform(-1.0, 1.0)
    positions = _positions(config, scale)
    thresholds = np.clip(rng.normal(config.threshold, config.threshold_sigma, (height, width)), 0.05, None)
    reference = np.log(_shifted(canvas, *positions[0]) / 255.0 + config.eps)

    chunks = []
    for step, (dx, dy) in enumerate(positions[1:], start=1):
        level = np.log(_shifted(canvas, dx, dy) / 255.0 + config.eps)
        change = level - reference
        counts = np.floor(np.abs(change) / thresholds).astype(np.int64)
        ys, xs = np.nonzero(counts)
        if len(ys):
            n = counts[ys, xs]
            polarity = (change[ys, xs] > 0).astype(np.int8)
            reference[ys, xs] += np.sign(change[ys, xs]) * n * thresholds[ys, xs]
            repeated = np.repeat(np.arange(len(ys)), n)
            events = np.empty(len(repeated), dtype=EVENT_DTYPE)
            events["x"], events["y"], events["p"] = xs[repeated], ys[repeated], polarity[repeated]
            events["t"] = (step - 1) * config.step_us + rng.integers(0, config.step_us, len(repeated))
            chunks.append(events)

    duration = (len(positions) - 1) * config.step_us
    expected_noise = config.noise_rate_hz * width * height * duration / 1e6
    noise_count = rng.poisson(expected_noise)
    if noise_count:
        noise = np.empty(noise_count, dtype=EVENT_DTYPE)
        noise["x"] = rng.integers(0, width, noise_count)
        noise["y"] = rng.integers(0, height, noise_count)
        noise["t"] = rng.integers(0, duration, noise_count)
        noise["p"] = rng.integers(0, 2, noise_count)
        chunks.append(noise)

    if not chunks:
        return empty_events()
    events = np.concatenate(chunks)
    return events[np.argsort(events["t"], kind="stable")]
