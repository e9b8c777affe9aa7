"""``reverb-edge warmup`` and the Numba cache folder of read-only installs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reverb_edge.cli import main
from reverb_edge.jit_cache import configure_cache

# The warm-up compiles the engines' programs too, and a test checks that a new process loads them.
pytestmark = pytest.mark.programs


def test_warmup_json_reports_models():
    result = CliRunner().invoke(main, ["warmup", "mnist", "nmnist", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["models"]) == {"mnist", "nmnist"}
    assert report["models"]["mnist"]["warmup_s"] > 0
    assert Path(report["cache_dir"]).is_absolute()


def test_warmup_unknown_model():
    result = CliRunner().invoke(main, ["warmup", "no-such-model"])
    assert result.exit_code == 1
    assert "no-such-model" in result.output


def test_cache_falls_back_when_read_only(monkeypatch):
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", "")
    # /proc refuses new folders even to root, like a read-only install and a missing home.
    fallback = configure_cache(Path("/proc/reverb-edge/kernels"), Path("/proc/reverb-edge-cache"))
    assert fallback is not None
    assert fallback.is_dir()
    assert config.CACHE_DIR == str(fallback)


def test_cache_keeps_writable_install(monkeypatch, tmp_path):
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", "")
    assert configure_cache(tmp_path / "kernels", Path("/proc/reverb-edge-cache")) is None
    assert config.CACHE_DIR == ""


def test_read_only_home_still_imports(tmp_path):
    script = "import numpy as np; from reverb_edge import Engine; e = Engine.load('mnist'); " \
             "print(int(e.predict(np.zeros(e.input_spec.shape, np.float32)).argmax()))"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/proc/no-home", "XDG_CACHE_HOME": "/proc/no-cache",
           "TMPDIR": str(tmp_path)}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr


CHECK_NO_COMPILATION = r"""
import sys
import numba
import numpy as np
from reverb_edge import Engine
from reverb_edge.kernels import conv, events, layout, linear, neuron, pool, popcount

engine = Engine.load("mnist")
# A real digit would do too: like random values, it has no zero pixel after normalisation, so the
# first layer takes its dense mode.
for x in (np.zeros(engine.input_spec.shape, np.float32),
          np.random.default_rng(1).normal(0.5, 2.0, engine.input_spec.shape).astype(np.float32)):
    engine.predict(x)
    for count in (1, 2, 3, 4, 5):
        engine.predict_frames(np.stack([x] * count))
    engine.reset()
    engine.step(x)
    engine.step(x)
compiled = [
    f"{module.__name__}.{name}"
    for module in (conv, events, layout, linear, neuron, pool, popcount)
    for name, value in vars(module).items()
    if isinstance(value, numba.core.registry.CPUDispatcher) and value.stats.cache_misses
]
# The compiled predict and predict_frames of this network (reverb_edge.program) came from the cache too.
for program in (engine._programs.get("predict"), engine._programs.get("predict_frames")):
    if program is None or program._function.stats.cache_misses:
        compiled.append(f"program {program}")
print(compiled)
sys.exit(1 if compiled else 0)
"""


def test_warmup_leaves_nothing_to_compile(tmp_path):
    """After `reverb-edge warmup`, a new process runs predict (its program too), frames and steps, sparse and dense, without compiling."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    warmed = subprocess.run([sys.executable, "-m", "reverb_edge", "warmup", "mnist"], capture_output=True, text=True,
                            env=env, timeout=900)
    assert warmed.returncode == 0, warmed.stderr
    checked = subprocess.run([sys.executable, "-c", CHECK_NO_COMPILATION], capture_output=True, text=True, env=env,
                             timeout=600)
    assert checked.returncode == 0, f"compiled after the warm-up: {checked.stdout} {checked.stderr}"
