"""Event-camera (DVS) streams: one event dtype, file readers, and conversion to network input."""

from .types import EVENT_DTYPE, Recording, empty_events, make_events

__all__ = ["EVENT_DTYPE", "Recording", "empty_events", "make_events"]
