"""``reverb-edge camera``: classify camera frames live, with an optional browser view and recording."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time

import click
import numpy as np

from ..camera.loop import CameraLoop
from ..camera.overlay import encode_jpeg, status_text
from ..camera.record import RECORD_SUFFIXES, FrameRecorder
from ..camera.server import LiveView, PreviewServer, parse_address
from ..camera.sources import VideoFileSource, open_source
from ..engine import Engine
from ..errors import ReverbError
from . import main
from .options import backend_option, fail, json_option, threads_option, parse_size

logger = logging.getLogger(__name__)


def _parse_roi(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        roi = tuple(int(part) for part in value.split(","))
    except ValueError:
        roi = ()
    if len(roi) != 4 or min(roi[:2]) < 0 or min(roi[2:]) < 1:
        raise click.BadParameter(
            f"expected LEFT,TOP,WIDTH,HEIGHT in pixels with LEFT, TOP >= 0 and WIDTH, HEIGHT >= 1, got {value!r}",
            param_hint="--roi",
        )
    return roi


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Stop on SIGTERM (systemd, docker stop) the same clean way as on Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread, as under some test runners
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command("camera")
@click.argument("model")
@click.option("--source", default="auto", show_default=True,
              help="'auto', 'picamera2[:N]', a V4L2 camera (0, 1, … or /dev/videoN), a video file, "
                   "a folder of images, or 'synthetic' (drawn digits, no camera needed).")
@click.option("--size", "size_text", default=None, metavar="WIDTHxHEIGHT",
              help="Capture size of a camera or of the synthetic pattern [default: 640x480].")
@click.option("--fps", type=click.FloatRange(min=0.01, max=1000), default=None,
              help="Frame rate to request from a camera, or to play images and the synthetic pattern at "
                   "[default: the camera's own; 2 for images, 15 for the pattern].")
@click.option("--roi", "roi_text", default=None, metavar="LEFT,TOP,WIDTH,HEIGHT",
              help="Region of the frame to classify, in pixels [default: the largest centred box with "
                   "the model's aspect ratio].")
@click.option("--smooth", type=click.IntRange(min=1, max=1000), default=1, show_default=True,
              help="Average the class probabilities of this many recent frames (1 = no smoothing).")
@click.option("--serve", default=None, metavar="[HOST:]PORT",
              help="Serve a page with the annotated stream, /stream.mjpg, /prediction and /health "
                   "(host 127.0.0.1 unless given; 0.0.0.0 makes it reachable from the network).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None,
              help=f"Save the annotated frames to a video file ({', '.join(RECORD_SUFFIXES)}).")
@click.option("--every-frame", is_flag=True,
              help="For files: classify every frame in order as fast as possible, instead of in real "
                   "time with the frames skipped that arrive while the classifier is busy.")
@click.option("--loop", "loop_source", is_flag=True, help="Restart a video file or image folder at its end.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many classified frames.")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--retries", type=click.IntRange(min=0, max=100), default=5, show_default=True,
              help="Reopen a failing camera this many times (with doubling delays) before giving up.")
@click.option("--retry-delay", type=click.FloatRange(min=0.0, max=60.0), default=0.5, show_default=True,
              help="Seconds before the first reopen of a failing camera.")
@backend_option
@threads_option
@json_option
def camera_command(model, source, size_text, fps, roi_text, smooth, serve, record_path, every_frame, loop_source,
                   max_frames, duration, retries, retry_delay, backend, threads, as_json):
    """Classify the frames of a camera (or a video, images, a pattern) live with MODEL.

    Prints a status line (or, with --json, one JSON object per frame and a
    final summary object) until the source ends, --max-frames or --duration
    is reached, or Ctrl-C.
    """
    size = parse_size(size_text, "--size", "640x480", minimum=16, maximum=8192)
    roi = _parse_roi(roi_text)
    address = None
    if serve is not None:
        try:
            address = parse_address(serve)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--serve")

    try:
        engine = Engine.load(model, backend=backend, threads=threads)
        frame_source = open_source(source, size=size, frame_rate=fps, loop=loop_source)
        loop = CameraLoop(engine, frame_source, roi=roi, smoothing=smooth, every_frame=every_frame,
                          annotate=bool(serve or record_path), retries=retries, retry_delay=retry_delay)
        recorder = FrameRecorder(record_path) if record_path is not None else None
    except ReverbError as err:
        raise fail(err) from err
    except OSError as err:  # such as a file name too long for the file system
        raise fail(ReverbError(f"cannot open {err.filename or 'a file'}: {err.strerror or err}")) from err
    if isinstance(frame_source, VideoFileSource):
        for option, value in (("--fps", fps), ("--size", size_text)):
            if value is not None:
                logger.warning("%s does not apply to video files and is ignored; the video plays at its own rate "
                               "and size", option)

    view = server = None
    if address is not None:
        view = LiveView({"model": str(engine.model.path), "source": frame_source.description})
        try:
            server = PreviewServer(view, *address)
        except OSError as err:
            raise click.BadParameter(f"cannot listen on {serve}: {err.strerror or err}", param_hint="--serve")

    try:
        with contextlib.ExitStack() as cleanup:
            if server is not None:
                cleanup.enter_context(server)
                click.echo(f"serving {server.url}", err=True)
            if recorder is not None:
                cleanup.enter_context(recorder)
            summary = _run(loop, view, recorder, max_frames, duration, as_json)
    except ReverbError as err:
        raise fail(err) from err
    summary.update(model=str(engine.model.path), source=frame_source.description)

    if as_json:
        click.echo(json.dumps({"summary": summary}))
    else:
        click.echo(
            f"{summary['frames']} frames classified in {summary['seconds']} s ({summary['fps']} fps), "
            f"{summary['dropped']} dropped while the classifier was busy; latency mean "
            f"{summary['latency_ms']['mean']} ms, p90 {summary['latency_ms']['p90']} ms"
        )


def _run(loop, view, recorder, max_frames, duration, as_json) -> dict:
    """Iterate the loop, feeding the view, the recorder and the terminal; return the summary."""
    interactive = sys.stdout.isatty() and not as_json
    latencies = []
    first_at = last_at = None
    stopped_by = "end of source"

    # A timer ends the loop on time even when the source delivers no frame for a while.
    timer = None
    expired = threading.Event()

    def end_of_duration():
        expired.set()
        loop.stop()

    if duration is not None:
        timer = threading.Timer(duration, end_of_duration)
        timer.daemon = True
        timer.start()

    try:
        with _sigterm_as_interrupt():
            for result in loop:
                prediction = result.prediction
                latencies.append(prediction.latency_ms)
                last_at = time.monotonic()
                first_at = first_at or last_at
                record = prediction.to_dict()

                if recorder is not None and recorder.frames == 0:
                    # A video's frame rate is read when the source opens, so it is set here.
                    recorder.frame_rate = loop.source.frame_rate or 15.0

                if result.annotated is not None:
                    jpeg = encode_jpeg(result.annotated)
                    if view is not None:
                        view.publish(jpeg, record)
                    if recorder is not None:
                        recorder.write(result.annotated, jpeg)

                if as_json:
                    click.echo(json.dumps(record))
                elif interactive:
                    click.echo(f"\r{status_text(prediction)}  frame {prediction.frame}   ", nl=False)
                else:
                    click.echo(f"frame {prediction.frame:6d}  {status_text(prediction)}")

                if max_frames is not None and len(latencies) >= max_frames:
                    stopped_by = "--max-frames"
                    break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
        click.echo("\nstopped" if interactive else "stopped", err=True)
    except ReverbError as err:
        if interactive:
            click.echo("")
        raise fail(err) from err
    finally:
        if timer is not None:
            timer.cancel()
        loop.stop()

    if expired.is_set() and stopped_by == "end of source":
        stopped_by = "--duration"
    if interactive and stopped_by != "interrupt":
        click.echo("")
    # The rate counts from the first classified frame, so loading the kernels does not lower it.
    seconds = (last_at - first_at) if latencies else 0.0
    latency = np.array(latencies) if latencies else None
    return {
        "frames": len(latencies),
        "dropped": loop.slot.dropped,
        "seconds": round(seconds, 2),
        "fps": round((len(latencies) - 1) / seconds, 2) if seconds > 0 else None,
        "stopped_by": stopped_by,
        "latency_ms": {
            "mean": round(float(latency.mean()), 3) if latency is not None else None,
            "p90": round(float(np.percentile(latency, 90)), 3) if latency is not None else None,
        },
    }
