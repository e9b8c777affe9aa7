"""Event-camera (DVS) streams: one event dtype, file readers, and conversion to network input."""

from .filters import CenterCrop, Crop, Denoise, Downsample, center_crop, crop, denoise, downsample
from .frames import ToFrames, to_frames
from .types import EVENT_DTYPE, Recording, empty_events, make_events

__all__ = [
    "EVENT_DTYPE",
    "Recording",
    "empty_events",
    "make_events",
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
