"""``python -m reverb_edge``: the same command line as ``reverb-edge``."""

from reverb_edge.cli import main

main(prog_name="reverb-edge")
