"""Shared fixtures: where the real data sets live, and seeded random generators."""

import os
from pathlib import Path

import numpy as np
import pytest

from reverb_edge.program import DISABLE_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Return the folder of real data sets: ``$REVERB_DATA``, else ``../shared/data``."""
    return Path(os.environ.get("REVERB_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST IDX folder; tests that use it skip when it is absent."""
    folder = data_root() / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST IDX files not found in {folder}; set REVERB_DATA to the data folder")
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every failure reproduces."""
    return np.random.default_rng(20260704)


@pytest.fixture(autouse=True)
def plan_unless_programs(request, monkeypatch):
    """Run engines on their plan, except in tests marked ``programs``.

    Every network architecture that an engine runs compiles its two programs
    (about 7 s each on the test machine), which doubled the suite's time.
    ``tests/test_program.py`` compares programs with the plan bit for bit, so
    the other tests check the plan, and with it the kernels that programs
    call. Subprocesses that a test starts inherit the setting.
    """
    if request.node.get_closest_marker("programs") is None:
        monkeypatch.setenv(DISABLE_VARIABLE, "0")
