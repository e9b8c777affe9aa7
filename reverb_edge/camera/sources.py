"""Frame sources: cameras, video files, image folders and a synthetic pattern behind one interface.

Every source returns RGB frames as uint8 arrays of shape (H, W, 3) from
:meth:`FrameSource.read`. ``open`` connects to the device or file and may be
called again after ``close``, which is how a failed camera is retried.

:func:`open_source` picks the source from a string:

- ``auto``: a Raspberry Pi camera through picamera2 when the package and a
  camera are present, else the first V4L2 camera through OpenCV;
- ``picamera2`` or ``picamera2:N``: Raspberry Pi camera N (default 0);
- ``0``, ``1``, … or ``/dev/videoN``: a V4L2 (USB) camera through OpenCV;
- a video file (any format OpenCV's FFmpeg backend reads, such as MP4 or AVI);
- a folder of images, or one image file (read with Pillow);
- ``synthetic``: digits drawn in dark ink on light paper, a new digit every
  second, for trying the loop without a camera.

OpenCV and picamera2 are imported only when a source that needs them opens.
"""

from __future__ import annotations

import logging
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError, MissingExtraError, ReverbError
from ..preprocess import IMAGE_SUFFIXES, convert_mode, list_images, load_image

logger = logging.getLogger(__name__)

__all__ = [
    "EndOfStream",
    "FrameSource",
    "ImageFolderSource",
    "OpenCVCameraSource",
    "Picamera2Source",
    "SourceError",
    "SyntheticSource",
    "VideoFileSource",
    "buffer_to_rgb",
    "check_frame",
    "open_source",
]


OPENCV_INSTALL = 'pip install "reverb-edge[camera]" (or: pip install opencv-python-headless)'

#: Default capture size (width, height) for cameras.
DEFAULT_SIZE = (640, 480)


class SourceError(ReverbError):
    """A frame source failed to open or to deliver a valid frame."""


class EndOfStream(ReverbError):
    """A finite source (video file, image folder) has no more frames."""


def check_frame(frame, description: str) -> np.ndarray:
    """Return ``frame`` if it is a non-empty uint8 (H, W, 3) array, else raise :class:`SourceError`."""
    if frame is None:
        raise SourceError(f"{description} returned no frame")
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise SourceError(f"{description} returned a frame of type {kind}; expected a uint8 array")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise SourceError(f"{description} returned a frame of shape {frame.shape}; expected (H, W, 3) RGB")
    return frame


class FrameSource(ABC):
    """A camera, file or generator that delivers RGB uint8 frames of shape (H, W, 3).

    Attributes:
        description: a short name for messages, such as ``"OpenCV camera /dev/video0"``.
        live: True for cameras, whose failures are worth retrying; False for
            files, whose errors are final.
        frame_rate: frames per second at which a recorded source is played
            back, or None for a camera, which sets its own pace.
    """

    description: str = "frame source"
    live: bool = True
    frame_rate: float | None = None

    @abstractmethod
    def open(self) -> None:
        """Connect to the device or file; raise :class:`SourceError` on failure."""

    @abstractmethod
    def read(self) -> np.ndarray:
        """Return the next frame; raise :class:`SourceError`, or :class:`EndOfStream` at the end."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file. Safe to call more than once."""

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class SyntheticSource(FrameSource):
    """Digits 0–9 drawn in dark ink on light paper, each shown for ``seconds_per_digit``.

    The digit drifts a little and each pixel gets Gaussian noise (standard
    deviation 6 gray levels), so each frame differs. :attr:`digit` is the digit of the last frame read, for
    checking predictions. Frames are generated at ``frame_rate``.
    """

    live = False

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, frame_rate: float = 15.0,
                 seconds_per_digit: float = 1.0, seed: int = 0) -> None:
        width, height = _check_size(size)
        if not frame_rate > 0 or not seconds_per_digit > 0:
            raise InputError(
                f"frame_rate and seconds_per_digit must be positive, got {frame_rate} and {seconds_per_digit}"
            )
        self.size = (width, height)
        self.frame_rate = float(frame_rate)
        self.frames_per_digit = max(1, round(seconds_per_digit * frame_rate))
        self.description = f"synthetic digits {width}×{height}"
        self.digit: int | None = None
        self._seed = seed
        self._index = 0
        self._rng = np.random.default_rng(seed)
        # The shipped MNIST model reads Pillow's default font at three quarters of the frame
        # height. Smaller or bolder digits look less handwritten and are misread more often.
        self._font = ImageFont.load_default(size=max(8, int(min(width, height) * 0.75)))

    def open(self) -> None:
        self._index = 0
        self._rng = np.random.default_rng(self._seed)

    def read(self) -> np.ndarray:
        width, height = self.size
        self.digit = (self._index // self.frames_per_digit) % 10
        phase = self._index / self.frame_rate
        self._index += 1

        page = Image.new("L", (width, height), 225)
        draw = ImageDraw.Draw(page)
        centre = (width / 2 + 0.005 * width * np.sin(phase), height / 2 + 0.03 * height * np.cos(phase))
        if self.digit == 1:
            # The font's 1 has a flag and a foot that handwritten MNIST ones lack, and the
            # shipped model reads it as 7; a slanted stroke is how most people write it.
            half = 0.27 * min(width, height)
            stroke = max(1, round(0.05 * min(width, height)))
            top = (centre[0] + 0.15 * half, centre[1] - half)
            bottom = (centre[0] - 0.15 * half, centre[1] + half)
            draw.line((top, bottom), fill=30, width=stroke)
        else:
            draw.text(centre, str(self.digit), fill=30, font=self._font, anchor="mm")

        noise = self._rng.normal(0.0, 6.0, size=(height, width))
        gray = np.clip(np.asarray(page, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)

    def close(self) -> None:
        pass


class ImageFolderSource(FrameSource):
    """The images of a folder (sorted by name) or one image file, each shown once per pass."""

    live = False

    def __init__(self, path: os.PathLike | str, frame_rate: float = 2.0, loop: bool = False) -> None:
        if not frame_rate > 0:
            raise InputError(f"frame_rate must be positive, got {frame_rate}")
        self.paths = list_images(path)
        self.frame_rate = float(frame_rate)
        self.loop = loop
        self.description = f"images in {path}" if Path(path).is_dir() else f"image {path}"
        self.frame_name: str | None = None
        self.unreadable: set[Path] = set()
        self._position = 0

    def open(self) -> None:
        self._position = 0

    def read(self) -> np.ndarray:
        while True:
            if len(self.unreadable) == len(self.paths):
                raise SourceError(f"none of the {len(self.paths)} files of {self.description} is a readable image")
            if self._position >= len(self.paths):
                if not self.loop:
                    raise EndOfStream(f"no more images in {self.description}")
                self._position = 0
            path = self.paths[self._position]
            self._position += 1
            if path in self.unreadable:
                continue
            try:
                # The same colour conversion as preprocess_image: transparency over white, 16 bits scaled.
                image = convert_mode(load_image(path), 3)
            except InputError as err:
                # One unreadable photo does not end a folder, as with `reverb-edge predict`.
                logger.warning("skipping unreadable image: %s", err)
                self.unreadable.add(path)
                continue
            self.frame_name = path.name
            return np.asarray(image)

    def close(self) -> None:
        pass


def import_opencv():
    """Return the cv2 module, or raise :class:`MissingExtraError` naming the package to install."""
    try:
        import cv2
    except ImportError as err:
        raise MissingExtraError(f"video files and V4L2 cameras need OpenCV: {OPENCV_INSTALL}") from err
    return cv2


class VideoFileSource(FrameSource):
    """The frames of a video file, decoded by OpenCV (FFmpeg backend)."""

    live = False

    def __init__(self, path: os.PathLike | str, loop: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"video file not found: {self.path}")
        self.loop = loop
        self.description = f"video {self.path}"
        self.frame_rate = None
        self._capture = None

    def open(self) -> None:
        cv2 = import_opencv()
        self.close()
        if self.path.stat().st_size == 0:
            raise SourceError(f"video file {self.path} is empty (0 bytes)")
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(
                f"OpenCV cannot decode video file {self.path}: it is truncated, corrupt or uses a codec that "
                "OpenCV's FFmpeg lacks; convert it to MP4 (H.264) or MJPEG AVI"
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        # Some containers carry no rate, and OpenCV then reports 0 or nonsense.
        self.frame_rate = float(fps) if 0 < fps <= 1000 else 25.0
        self._capture = capture

    def read(self) -> np.ndarray:
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, frame = self._capture.read()
        if not ok and self.loop:
            self.open()
            ok, frame = self._capture.read()
        if not ok:
            raise EndOfStream(f"end of {self.description}")
        return _bgr_to_rgb(frame, self.description)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class OpenCVCameraSource(FrameSource):
    """A V4L2 camera (USB webcams and other /dev/videoN devices) through OpenCV.

    OpenCV's V4L2 backend gives up on a read after its own timeout (10 s in
    OpenCV 4.x) and then reports a failed read, which the capture thread retries.
    """

    live = True

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = DEFAULT_SIZE,
                 frame_rate: float | None = None) -> None:
        self.device = device
        self.size = _check_size(size) if size is not None else None
        self.requested_rate = frame_rate
        self.description = f"OpenCV camera {device if isinstance(device, str) else f'/dev/video{device}'}"
        self._capture = None

    def open(self) -> None:
        cv2 = import_opencv()
        self.close()
        backend = cv2.CAP_V4L2 if os.name == "posix" and hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.device, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(
                f"cannot open {self.description}; check that it exists (ls /dev/video*), that this user "
                "may read it (group video) and that no other program is using it"
            )
        if self.size is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.requested_rate is not None:
            capture.set(cv2.CAP_PROP_FPS, self.requested_rate)
        # Keep the driver's queue short so that a read returns a recent frame.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture

    def read(self) -> np.ndarray:
        if self._capture is None:
            raise SourceError(f"{self.description} is not open")
        ok, frame = self._capture.read()
        if not ok:
            raise SourceError(f"{self.description} delivered no frame (unplugged, or timed out)")
        return _bgr_to_rgb(frame, self.description)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _bgr_to_rgb(frame, description: str) -> np.ndarray:
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 2:
        return np.repeat(frame[:, :, np.newaxis], 3, axis=2)
    if isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    check_frame(frame, description)
    return np.ascontiguousarray(frame[:, :, ::-1])


# Byte order in memory of the picamera2 (libcamera) RGB formats: libcamera
# names them after a little-endian word, so XRGB8888 is stored as B, G, R, X.
PICAMERA_FORMATS = {
    "XRGB8888": (4, (2, 1, 0)),
    "XBGR8888": (4, (0, 1, 2)),
    "RGB888": (3, (2, 1, 0)),
    "BGR888": (3, (0, 1, 2)),
    # Planar YUV 4:2:0 (I420): a Y plane of ``stride`` bytes per row, then U and V at half size.
    "YUV420": (1, None),
}


def _rows(flat: np.ndarray, offset: int, height: int, row_bytes: int, stride: int) -> np.ndarray:
    """Return a (height, row_bytes) view of ``flat`` starting at ``offset``, skipping each row's padding."""
    return np.lib.stride_tricks.as_strided(
        flat[offset:], shape=(height, row_bytes), strides=(stride, 1), writeable=False
    )


def _yuv420_to_rgb(flat: np.ndarray, width: int, height: int, stride: int) -> np.ndarray:
    """Convert I420 to RGB with the full-range BT.601 (JPEG) equations."""
    # NOTE: picamera2's video configurations may use limited-range Rec. 709; the full-range
    # BT.601 equations then give slightly flat colours. The Y (luma) channel is exact either way.
    chroma_width, chroma_height, chroma_stride = (width + 1) // 2, (height + 1) // 2, (stride + 1) // 2
    luma = _rows(flat, 0, height, width, stride).astype(np.float32)
    u_offset = height * stride
    v_offset = u_offset + chroma_height * chroma_stride
    u = _rows(flat, u_offset, chroma_height, chroma_width, chroma_stride).astype(np.float32) - 128
    v = _rows(flat, v_offset, chroma_height, chroma_width, chroma_stride).astype(np.float32) - 128
    u = u.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    v = v.repeat(2, axis=0).repeat(2, axis=1)[:height, :width]
    rgb = np.stack([luma + 1.402 * v, luma - 0.344136 * u - 0.714136 * v, luma + 1.772 * u], axis=2)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def buffer_to_rgb(buffer, pixel_format: str, size: tuple[int, int], stride: int) -> np.ndarray:
    """Turn a picamera2 frame buffer into an RGB uint8 array of shape (H, W, 3).

    ``buffer`` is the flat bytes of the frame (``Picamera2.capture_buffer``)
    and ``size`` is (width, height). ``stride`` is the number of bytes per
    row (of the Y plane for YUV420). It may be larger than the width times
    the bytes per pixel, and the padding bytes at the end of each row are
    then dropped.

    Raises:
        SourceError: unsupported format, or a buffer too small for the size and stride.
    """
    if pixel_format not in PICAMERA_FORMATS:
        raise SourceError(
            f"picamera2 format {pixel_format!r} is not supported; configure the camera with one of "
            f"{', '.join(PICAMERA_FORMATS)}"
        )
    bytes_per_pixel, rgb_order = PICAMERA_FORMATS[pixel_format]
    try:
        width, height = size
    except (TypeError, ValueError) as err:
        raise SourceError(f"picamera2 frame size must be (width, height), got {size!r}") from err
    for name, value in (("width", width), ("height", height), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SourceError(f"picamera2 frame {name} must be a whole number >= 1, got {value!r}")
    row_bytes = width * bytes_per_pixel
    if stride < row_bytes:
        raise SourceError(f"picamera2 stride {stride} is less than width {width} × {bytes_per_pixel} bytes")

    if isinstance(buffer, np.ndarray):
        # Any array is read as its raw bytes, as picamera2's buffers are.
        flat = np.ascontiguousarray(buffer).reshape(-1).view(np.uint8)
    else:
        try:
            flat = np.frombuffer(buffer, dtype=np.uint8)
        except TypeError as err:
            raise SourceError(f"picamera2 buffer must be bytes or a numpy array, got {type(buffer).__name__}") from err
    if pixel_format == "YUV420":
        # The last chroma row may end without its padding.
        chroma_rows = (height + 1) // 2
        needed = height * stride + (2 * chroma_rows - 1) * ((stride + 1) // 2) + (width + 1) // 2
    else:
        # The last row may end without its padding, so only (height - 1) full strides are required.
        needed = (height - 1) * stride + row_bytes
    if flat.size < needed:
        raise SourceError(
            f"picamera2 buffer has {flat.size} bytes, fewer than the {needed} that a {width}×{height} "
            f"{pixel_format} frame with stride {stride} needs"
        )

    if pixel_format == "YUV420":
        return _yuv420_to_rgb(flat, width, height, stride)
    pixels = _rows(flat, 0, height, row_bytes, stride).reshape(height, width, bytes_per_pixel)
    return np.ascontiguousarray(pixels[:, :, list(rgb_order)])


class Picamera2Source(FrameSource):
    """A Raspberry Pi camera through picamera2, captured as XRGB8888 and converted to RGB.

    ``timeout`` (seconds) bounds the wait for each frame.
    """

    live = True

    def __init__(self, camera_num: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                 pixel_format: str = "XRGB8888", timeout: float = 5.0, factory=None) -> None:
        if pixel_format not in PICAMERA_FORMATS:
            raise InputError(f"pixel_format must be one of {', '.join(PICAMERA_FORMATS)}, got {pixel_format!r}")
        self.camera_num = camera_num
        self.size = _check_size(size)
        self.pixel_format = pixel_format
        self.timeout = timeout
        self.description = f"picamera2 camera {camera_num}"
        # ``factory`` replaces the Picamera2 class (tests run without a camera).
        self._factory = factory
        self._camera = None
        self._config: tuple[str, tuple[int, int], int] | None = None

    def _picamera2_class(self):
        if self._factory is not None:
            return self._factory
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise MissingExtraError(
                "Raspberry Pi cameras need picamera2: sudo apt install python3-picamera2, and create "
                "the virtual environment with --system-site-packages so it can import it"
            ) from err
        return Picamera2

    def open(self) -> None:
        cls = self._picamera2_class()
        self.close()
        # NOTE: written against picamera2 0.3's documented API; no Pi camera was attached when it was tested.
        try:
            camera = cls(self.camera_num)
            config = camera.create_video_configuration(
                main={"size": self.size, "format": self.pixel_format}, buffer_count=4
            )
            camera.configure(config)
            camera.start()
        except (RuntimeError, OSError, IndexError) as err:
            raise SourceError(f"cannot start {self.description}: {err}") from err
        main = camera.camera_configuration()["main"]
        self._config = (main["format"], tuple(main["size"]), int(main["stride"]))
        self._camera = camera
        logger.info("%s: %s %dx%d, stride %d", self.description, self._config[0], *self._config[1], self._config[2])

    def read(self) -> np.ndarray:
        if self._camera is None:
            raise SourceError(f"{self.description} is not open")
        try:
            # Recent picamera2 releases take a number for ``wait`` as a timeout in seconds;
            # older ones treat it as True and wait without limit.
            buffer = self._camera.capture_buffer("main", wait=self.timeout)
        except TimeoutError as err:
            raise SourceError(f"{self.description} delivered no frame within {self.timeout} s") from err
        except RuntimeError as err:
            raise SourceError(f"{self.description} failed: {err}") from err
        if buffer is None:
            raise SourceError(f"{self.description} returned no frame")
        pixel_format, size, stride = self._config
        return buffer_to_rgb(buffer, pixel_format, size, stride)

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            try:
                camera.stop()
            finally:
                camera.close()


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as err:
        raise InputError(f"frame size must be (width, height), got {size!r}") from err
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise InputError(f"frame size must be between 1×1 and 8192×8192, got {width}×{height}")
    return width, height


def _picamera2_available() -> bool:
    try:
        from picamera2 import Picamera2
    except ImportError:
        return False
    try:
        return len(Picamera2.global_camera_info()) > 0
    except (RuntimeError, OSError):
        return False


def open_source(spec: str | int | os.PathLike, size: tuple[int, int] | None = None,
                frame_rate: float | None = None, loop: bool = False) -> FrameSource:
    """Return the :class:`FrameSource` that ``spec`` names (see the module docstring); it is not opened yet.

    ``size`` (width, height) sets the capture size of cameras and the
    synthetic pattern, ``frame_rate`` the rate requested from a camera or the
    playback rate of images and the pattern, and ``loop`` restarts files at
    their end.

    Raises:
        InputError: ``spec`` names nothing that exists.
        MissingExtraError: the package that the source needs is not installed.
    """
    if isinstance(spec, bool) or not isinstance(spec, (str, int, os.PathLike)):
        raise InputError(f"source must be a string, a camera number or a path, got {type(spec).__name__}")
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec).strip()
    if not spec:
        raise InputError("the frame source is empty; pass auto, a camera, a video file, an image folder or synthetic")
    if frame_rate is not None and not frame_rate > 0:
        raise InputError(f"frame_rate must be positive, got {frame_rate!r}")
    camera_size = size or DEFAULT_SIZE
    if spec == "auto":
        if _picamera2_available():
            return Picamera2Source(0, camera_size)
        if Path("/dev/video0").exists():
            return OpenCVCameraSource(0, camera_size, frame_rate)
        raise InputError(
            "no camera found: picamera2 lists no camera and /dev/video0 does not exist; pass --source "
            "with a device (/dev/videoN), a video file, an image folder or 'synthetic'"
        )
    if spec == "synthetic":
        return SyntheticSource(camera_size, frame_rate or 15.0)
    kind, _, number = spec.partition(":")
    if kind == "picamera2":
        if number and not number.isdigit():
            raise InputError(f"expected picamera2 or picamera2:N with a camera number N, got {spec!r}")
        return Picamera2Source(int(number or 0), camera_size)
    if spec.isdigit():
        device = Path(f"/dev/video{spec}")
        if sys.platform.startswith("linux") and not device.exists():
            raise InputError(f"camera device {device} does not exist; list the cameras with: ls /dev/video*")
        return OpenCVCameraSource(int(spec), camera_size, frame_rate)
    if spec.startswith("/dev/"):
        if not Path(spec).exists():
            raise InputError(f"camera device {spec} does not exist; list the cameras with: ls /dev/video*")
        return OpenCVCameraSource(spec, camera_size, frame_rate)

    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"frame source {spec!r} not found: expected a camera (auto, picamera2[:N], N, /dev/videoN), "
            "a video file, an image folder or 'synthetic'"
        )
    # Any file without an image suffix goes to OpenCV, whose FFmpeg backend reads most video
    # containers (.mp4, .avi, .mkv, .3gp, .ts, …) whatever the file is called.
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(path, frame_rate or 2.0, loop=loop)
    return VideoFileSource(path, loop=loop)
