"""Event-camera (DVS) streams: one event dtype, file readers, and conversion to network input."""

from .filters import CenterCrop, Crop, Denoise, Downsample, center_crop, crop, denoise, downsample
from .frames import ToFrames, to_frames
from .readers import FORMATS, EventStream, detect_format, iter_events, read_events
from .types import EVENT_DTYPE, Recording, empty_events, make_events

__all__ = [
    "EVENT_DTYPE",
    "Recording",
    "empty_events",
    "make_events",
    "read_events",
    "iter_events",
    "EventStream",
    "detect_format",
    "FORMATS",
    "to_frames",
    "ToFrames",
    "downsample",
    "crop",
    "center_crop",
    "denoise",
    "Downsample",
    "Crop",
    "CenterCrop",
    "Denoise",
]
