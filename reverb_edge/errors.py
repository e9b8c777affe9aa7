"""Exceptions raised by reverb-edge.

Every error the SDK raises on purpose derives from :class:`ReverbError`, so a
device app can catch them all with one clause. Errors about bad input are also
``ValueError`` subclasses, so generic handlers keep working.
"""


class ReverbError(Exception):
    """Base class of every error that reverb-edge raises on purpose."""


class ModelFileError(ReverbError, ValueError):
    """A model file is missing, corrupt, of an unknown version or inconsistent."""


class GraphError(ReverbError, ValueError):
    """A layer graph or layer specification is invalid."""


class ConversionError(ReverbError, ValueError):
    """A PyTorch model contains something the engine cannot run exactly."""


class InputError(ReverbError, ValueError):
    """An input (image, array, data set file) has the wrong type, shape or content."""


class MissingExtraError(ReverbError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""
