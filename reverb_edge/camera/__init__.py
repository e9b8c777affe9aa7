"""Classify live camera frames: frame sources, a capture thread, the loop, an overlay and a web view.

The pieces, from the camera to the browser:

- :mod:`~reverb_edge.camera.sources`: cameras (picamera2, V4L2 through
  OpenCV), video files, image folders and a synthetic pattern, all returning
  RGB uint8 frames;
- :mod:`~reverb_edge.camera.capture`: a capture thread that retries a
  failing camera and hands over only the newest frame;
- :mod:`~reverb_edge.camera.classify` and :mod:`~reverb_edge.camera.loop`:
  region of interest, preprocessing from the model's input spec, inference
  and smoothing;
- :mod:`~reverb_edge.camera.overlay`, :mod:`~reverb_edge.camera.record` and
  :mod:`~reverb_edge.camera.server`: the annotated frame, recording and the
  HTTP view.
"""

from .capture import CapturedFrame, CaptureThread, LatestFrame
from .classify import FrameClassifier, FramePrediction
from .loop import CameraLoop, LoopResult
from .overlay import draw_overlay, encode_jpeg
from .record import FrameRecorder
from .server import LiveView, PreviewServer
from .sources import (
    EndOfStream,
    FrameSource,
    ImageFolderSource,
    OpenCVCameraSource,
    Picamera2Source,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    buffer_to_rgb,
    open_source,
)

__all__ = [
    "CameraLoop",
    "CapturedFrame",
    "CaptureThread",
    "EndOfStream",
    "FrameClassifier",
    "FramePrediction",
    "FrameRecorder",
    "FrameSource",
    "ImageFolderSource",
    "LatestFrame",
    "LiveView",
    "LoopResult",
    "OpenCVCameraSource",
    "Picamera2Source",
    "PreviewServer",
    "SourceError",
    "SyntheticSource",
    "VideoFileSource",
    "buffer_to_rgb",
    "draw_overlay",
    "encode_jpeg",
    "open_source",
]
