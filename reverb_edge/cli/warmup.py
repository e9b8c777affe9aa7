"""``reverb-edge warmup``: compile and cache the kernels, so a device never compiles on its first frame."""

from __future__ import annotations

import time

import click
import numba
import numpy as np

from ..benchmark.bench import cold_start
from ..engine import Engine
from ..errors import ReverbError
from ..events.types import make_events
from ..jit_cache import cache_dir
from ..registry import SHIPPED_MODELS
from . import main
from .options import echo_json, fail, json_option


def warm_up(engine: Engine) -> None:
    """Run every code path of ``engine`` once: direct encoding, frames, steps and, for DVS models, events.

    Each path runs on an all-zero input, which takes the kernels' sparse
    mode, and on dense random values, which take the dense mode that the
    first layer runs on a normalised image: each mode is compiled apart.
    Five frames take the two-timestep kernels from a reset and after it,
    and the one-timestep kernels of an odd last timestep, which ``step``
    uses too. With more than one Numba thread, the multi-threaded kernels
    are warmed the same way.
    """
    shape = engine.input_spec.shape
    inputs = (np.zeros(shape, np.float32), np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    engines = [engine]
    if numba.config.NUMBA_NUM_THREADS > 1:
        engines.append(Engine(engine.model, backend=engine.backend, threads=2))
    for warmed in engines:
        for x in inputs:
            warmed.predict(x)
            warmed.predict_frames(np.stack([x] * 5))
            warmed.reset()
            warmed.step(x)
    encoding = engine.input_spec.events
    if encoding is not None:
        width, height = encoding.sensor_size[:2]
        events = make_events([0, width - 1], [0, height - 1], [0, encoding.window_us - 1], [0, 1])
        engine.predict_events(events)
        if engine._event_driven_node() is not None:
            engine.predict_events(events, event_driven=True)


@main.command("warmup")
@click.argument("models", nargs=-1)
@click.option("--check", is_flag=True,
              help="Then time a cold start (new process: import, load, first inference) of each model.")
@json_option
def warmup_command(models, check, as_json):
    """Compile the engine's kernels for MODELS (default: every shipped model) into Numba's cache.

    Run it once after installing, for example in a Dockerfile or an install
    script, so that the first frame on the device does not wait for the
    compiler. The cache stays valid until reverb-edge, Numba or the CPU changes.
    """
    models = models or tuple(sorted(SHIPPED_MODELS))
    report = {"cache_dir": str(cache_dir()), "models": {}}
    for model in models:
        started = time.perf_counter()
        try:
            warm_up(Engine.load(model))
        except ReverbError as err:
            raise fail(err) from err
        entry = {"warmup_s": round(time.perf_counter() - started, 3)}
        if check:
            try:
                entry["cold_start_s"] = cold_start(model, empty_cache=False)["seconds"]
            except ReverbError as err:
                raise fail(err) from err
        report["models"][model] = entry

    if as_json:
        echo_json(report)
        return
    for model, entry in report["models"].items():
        cold = f", cold start {entry['cold_start_s']} s" if "cold_start_s" in entry else ""
        click.echo(f"{model}: warmed up in {entry['warmup_s']} s{cold}")
    click.echo(f"kernels cached in {report['cache_dir']}")
