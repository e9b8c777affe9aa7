"""Benchmarks of the engine against the runtimes a user would otherwise pick (PyTorch, LiteRT).

The peers are optional: PyTorch comes with the torch extra, LiteRT and the
.tflite writer with the bench extra. Each is imported only when used.
"""

# These modules import ai-edge-litert, tflite and flatbuffers inside the functions that use them.
from .litert import DelegateReport, LiteRTRunner
from .tflite_export import LIF_FORMS, TFLiteExportError, export_tflite
