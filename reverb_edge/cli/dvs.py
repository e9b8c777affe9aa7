"""``reverb-edge dvs``: classify an event stream (a recording or a live camera) window by window."""

from __future__ import annotations

import math
import time

import click
import numpy as np

from ..engine import Engine
from ..errors import ReverbError
from ..events.filters import center_crop, downsample
from ..events.online import StreamClassifier
from ..events.readers import FORMATS
from ..events.sources import open_source
from . import main
from .options import echo_json, fail, json_option, threads_option, parse_size


def _fitter(source_size, model_size):
    """Return a function that maps events from the source sensor onto the model's, or None if equal."""
    (width, height), (model_width, model_height) = source_size[:2], model_size[:2]
    if (width, height) == (model_width, model_height):
        return None
    factor = max(math.ceil(width / model_width), math.ceil(height / model_height), 1)

    def fit(events):
        reduced, reduced_size = downsample(events, source_size, factor) if factor > 1 else (events, source_size)
        cropped, _ = center_crop(reduced, reduced_size, (model_width, model_height))
        return cropped

    return fit


@main.command("dvs")
@click.argument("model")
@click.option("--source", required=True,
              help="An event file (N-MNIST .bin, AEDAT, Prophesee .raw/.dat, .npy/.npz), or a live camera: "
                   "'inivation[:SERIAL]' (needs dv-processing) or 'prophesee[:SERIAL]' (needs Metavision).")
@click.option("--window", "window_ms", type=click.FloatRange(min=0.001, max=3_600_000), default=None,
              help="Window length in milliseconds, up to one hour [default: the model's event window].")
@click.option("--hop", "hop_ms", type=click.FloatRange(min=0.001, max=3_600_000), default=None,
              help="Time between window starts in milliseconds [default: the window length].")
@click.option("--format", "file_format", type=click.Choice(FORMATS), default=None,
              help="File format, when the header does not identify it [default: detected].")
@click.option("--sensor-size", default=None, metavar="WIDTHxHEIGHT",
              help="Sensor size of the file, when its header lacks or misstates it (for example 34x34).")
@click.option("--realtime", is_flag=True, help="Replay a file at its recorded speed instead of as fast as possible.")
@click.option("--fit", is_flag=True,
              help="Downsample and centre-crop events from a larger sensor onto the model's sensor size.")
@threads_option
@json_option
def dvs_command(model, source, window_ms, hop_ms, file_format, sensor_size, realtime, fit, threads, as_json):
    """Classify the events from --source with MODEL, printing one prediction per window."""
    for name, value in (("--window", window_ms), ("--hop", hop_ms)):
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"expected a finite number of milliseconds, got {value}", param_hint=name)
    size = parse_size(sensor_size, "--sensor-size", "34x34")
    try:
        engine = Engine.load(model, threads=threads)
        classifier = StreamClassifier(
            engine,
            window_us=window_ms * 1000 if window_ms is not None else None,
            hop_us=hop_ms * 1000 if hop_ms is not None else None,
        )
        stream = open_source(source, format=file_format, sensor_size=size)
    except ReverbError as err:
        raise fail(err) from err

    model_size = engine.input_spec.events.sensor_size
    fitter = _fitter(stream.sensor_size, model_size)
    if fitter is not None and not fit:
        raise fail(ReverbError(
            f"the source's sensor is {stream.sensor_size[0]}×{stream.sensor_size[1]} but the model expects "
            f"{model_size[0]}×{model_size[1]}; pass --fit to downsample and crop the events"
        ))

    predictions, total_events = [], 0
    first_t, started = None, time.perf_counter()

    def report(batch):
        for prediction in batch:
            predictions.append(prediction)
            if not as_json:
                click.echo(
                    f"{prediction.start_us / 1000:9.1f}–{prediction.end_us / 1000:9.1f} ms  {prediction.label:>6} "
                    f"({prediction.confidence:.3f})  {prediction.events:6d} events  {prediction.latency_ms:6.2f} ms"
                )

    try:
        for chunk in stream:
            if fitter is not None:
                chunk = fitter(chunk)
            if len(chunk) == 0:
                continue
            total_events += len(chunk)
            if realtime and not stream.live:
                first_t = int(chunk["t"][0]) if first_t is None else first_t
                delay = (int(chunk["t"][-1]) - first_t) / 1e6 - (time.perf_counter() - started)
                if delay > 0:
                    time.sleep(delay)
            report(classifier.feed(chunk))
        report(classifier.flush())
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except ReverbError as err:
        raise fail(err) from err

    seconds = time.perf_counter() - started
    latencies = np.array([p.latency_ms for p in predictions]) if predictions else np.zeros(0)
    summary = {
        "model": str(engine.model.path),
        "source": stream.description,
        "windows": len(predictions),
        "events": total_events,
        "seconds": round(seconds, 3),
        "events_per_second": round(total_events / seconds, 1) if seconds > 0 else None,
        "latency_ms": {
            "mean": round(float(latencies.mean()), 3) if len(latencies) else None,
            "p90": round(float(np.percentile(latencies, 90)), 3) if len(latencies) else None,
            "max": round(float(latencies.max()), 3) if len(latencies) else None,
        },
    }
    if as_json:
        summary["predictions"] = [p.to_dict() for p in predictions]
        echo_json(summary)
    else:
        latency = (
            f"latency per window mean {summary['latency_ms']['mean']} ms, p90 {summary['latency_ms']['p90']} ms"
            if predictions else "no window held events"
        )
        click.echo(
            f"{summary['windows']} windows, {total_events} events in {seconds:.2f} s "
            f"({summary['events_per_second']} events/s); {latency}"
        )
