"""Record the annotated frames to a video file.

``.mjpeg``/``.mjpg`` files are written without extra packages: the JPEG
frames one after another, which FFmpeg, VLC and OpenCV play. ``.avi`` (Motion
JPEG) and ``.mp4`` (MPEG-4 Part 2) go through OpenCV's ``VideoWriter``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .overlay import encode_jpeg
from .sources import import_opencv

logger = logging.getLogger(__name__)

__all__ = ["RECORD_SUFFIXES", "FrameRecorder"]

RECORD_SUFFIXES = (".mjpeg", ".mjpg", ".avi", ".mp4")
_FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}


class FrameRecorder:
    """Write RGB frames to ``path`` at a nominal ``frame_rate``.

    The file plays at ``frame_rate`` whatever rate the frames were classified
    at, so a recording of a loop that skipped frames plays faster than life.
    """

    def __init__(self, path: os.PathLike | str, frame_rate: float = 15.0) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in RECORD_SUFFIXES:
            raise InputError(f"cannot record to {self.path}: use a file ending in {', '.join(RECORD_SUFFIXES)}")
        folder = self.path.resolve().parent
        if not folder.is_dir():
            raise InputError(f"folder {folder} does not exist; create it first")
        if self.path.is_dir():
            raise InputError(f"cannot record to {self.path}: it is a folder; pass a file name")
        if not os.access(folder, os.W_OK):
            raise InputError(f"cannot record to {self.path}: folder {folder} is not writable; pick another folder")
        #: Playback rate written into the file; it may be changed until the first frame is written.
        self.frame_rate = frame_rate
        self.frames = 0
        self._suffix = suffix
        self._file = None
        self._writer = None
        self._size: tuple[int, int] | None = None
        if suffix in _FOURCC:
            self._cv2 = import_opencv()

    def write(self, image: Image.Image, jpeg: bytes | None = None) -> None:
        """Append one frame; ``jpeg`` reuses an encoding of the same image for MJPEG files."""
        if self._size is None:
            self._size = image.size
            self._open()
        elif image.size != self._size:
            # Video files hold one frame size; a camera that reconnects at another size is scaled back.
            image = image.resize(self._size)
            jpeg = None

        if self._file is not None:
            try:
                self._file.write(jpeg if jpeg is not None else encode_jpeg(image))
            except OSError as err:
                raise InputError(f"cannot write recording {self.path}: {err.strerror or err}") from err
        else:
            self._writer.write(np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]))
        self.frames += 1

    def _open(self) -> None:
        if self._suffix not in _FOURCC:
            try:
                self._file = open(self.path, "wb")
            except OSError as err:
                raise InputError(f"cannot write recording {self.path}: {err.strerror or err}") from err
            return
        cv2 = self._cv2
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*_FOURCC[self._suffix]),
                                 self.frame_rate, self._size)
        if not writer.isOpened():
            raise InputError(
                f"OpenCV cannot open {self.path} for writing; check that the folder is writable and has "
                "space, or record to .mjpeg"
            )
        self._writer = writer

    def close(self) -> None:
        """Finish the file.

        Raises:
            InputError: the file could not be written; OpenCV reports write errors
                only as warnings, so an empty file after frames were written counts as one.
        """
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as err:
                raise InputError(f"cannot write recording {self.path}: {err.strerror or err}") from err
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames and (not self.path.is_file() or self.path.stat().st_size == 0):
                raise InputError(f"recording {self.path} failed: the file is empty after {self.frames} frames")
        logger.info("recorded %d frames to %s", self.frames, self.path)

    def __enter__(self) -> "FrameRecorder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
