"""The ``reverb-edge`` command line: a click group with one module per subcommand."""

from __future__ import annotations

import logging

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="reverb-edge")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output on stderr.")
def main(verbose: int, quiet: int) -> None:
    """Run spiking neural networks with binary weights (ReverB-SNN) on the CPU."""
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(logging.DEBUG, min(level, logging.CRITICAL)), format="%(levelname)s %(name)s: %(message)s")
    # Library warnings (for example dropped backward timestamps) print as one log line each.
    logging.captureWarnings(True)


from . import bench, camera, convert, dvs, evaluate, info, predict, train, train_nmnist, warmup  # noqa: E402  (subcommands register on main)

__all__ = ["main"]
