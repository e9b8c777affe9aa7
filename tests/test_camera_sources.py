"""Frame sources: picamera2 buffer layouts, files, folders, the synthetic pattern and source names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from camera_media import real_digits, write_digit_video
from reverb_edge.camera import (
    EndOfStream,
    ImageFolderSource,
    OpenCVCameraSource,
    Picamera2Source,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    buffer_to_rgb,
    open_source,
)
from reverb_edge.camera.sources import check_frame
from reverb_edge.errors import InputError


def bgrx_buffer(rgb: np.ndarray, stride: int, padding_value: int = 77) -> np.ndarray:
    """Lay out an RGB image as picamera2's XRGB8888 does: B, G, R, X per pixel, rows ``stride`` bytes apart."""
    height, width, _ = rgb.shape
    rows = np.full((height, stride), padding_value, dtype=np.uint8)
    pixels = rows[:, :width * 4].reshape(height, width, 4)
    pixels[:, :, 0] = rgb[:, :, 2]
    pixels[:, :, 1] = rgb[:, :, 1]
    pixels[:, :, 2] = rgb[:, :, 0]
    pixels[:, :, 3] = 255
    return rows.reshape(-1)


def test_bgrx_red_pixel_is_red():
    buffer = np.zeros((4, 4, 4), dtype=np.uint8)
    buffer[1, 2] = (0, 0, 255, 255)  # B, G, R, X in memory
    rgb = buffer_to_rgb(buffer.reshape(-1), "XRGB8888", (4, 4), 16)
    assert tuple(rgb[1, 2]) == (255, 0, 0)
    assert rgb.sum() == 255


def test_xbgr_red_pixel_is_red():
    buffer = np.zeros((2, 2, 4), dtype=np.uint8)
    buffer[0, 1] = (255, 0, 0, 255)  # R, G, B, X in memory
    rgb = buffer_to_rgb(buffer.tobytes(), "XBGR8888", (2, 2), 8)
    assert tuple(rgb[0, 1]) == (255, 0, 0)


def test_rgb888_is_stored_blue_first():
    buffer = np.zeros((1, 3, 3), dtype=np.uint8)
    buffer[0, 0] = (0, 0, 255)
    assert tuple(buffer_to_rgb(buffer.tobytes(), "RGB888", (3, 1), 9)[0, 0]) == (255, 0, 0)
    assert tuple(buffer_to_rgb(buffer.tobytes(), "BGR888", (3, 1), 9)[0, 0]) == (0, 0, 255)


def test_strided_704_wide_buffer_drops_padding(rng):
    height, width, stride_pixels = 576, 704, 768
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = bgrx_buffer(rgb, stride_pixels * 4, padding_value=201)
    out = buffer_to_rgb(buffer, "XRGB8888", (width, height), stride_pixels * 4)
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_yuv420_768_byte_stride_keeps_704_columns(rng):
    height, width, stride = 576, 704, 768
    luma = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    planes = np.full(height * stride + 2 * (height // 2) * (stride // 2), 13, dtype=np.uint8)
    planes[:height * stride].reshape(height, stride)[:, :width] = luma
    planes[height * stride:] = 128  # no colour
    out = buffer_to_rgb(planes, "YUV420", (width, height), stride)
    assert out.shape == (height, width, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], luma)


def test_yuv420_red_matches_bt601():
    # Full-range BT.601 of pure red: Y 76, U 85, V 255.
    width, height, stride = 2, 2, 2
    buffer = np.array([76, 76, 76, 76, 85, 255], dtype=np.uint8)
    rgb = buffer_to_rgb(buffer, "YUV420", (width, height), stride)
    assert np.abs(rgb[0, 0].astype(int) - (255, 0, 0)).max() <= 2


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 40),
    height=st.integers(1, 12),
    padding=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_strided_buffers_equal_image(width, height, padding, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    stride = width * 4 + padding * 4
    buffer = bgrx_buffer(rgb, stride)
    # The last row may come without its padding.
    trimmed = buffer[: (height - 1) * stride + width * 4]
    np.testing.assert_array_equal(buffer_to_rgb(trimmed, "XRGB8888", (width, height), stride), rgb)


def test_short_buffer_is_rejected():
    with pytest.raises(SourceError, match="fewer than"):
        buffer_to_rgb(np.zeros(100, dtype=np.uint8), "XRGB8888", (10, 10), 40)


def test_stride_below_width_is_rejected():
    with pytest.raises(SourceError, match="stride 30 is less than"):
        buffer_to_rgb(np.zeros(400, dtype=np.uint8), "XRGB8888", (10, 10), 30)


def test_unknown_picamera_format_is_rejected():
    with pytest.raises(SourceError, match="SRGGB10"):
        buffer_to_rgb(np.zeros(400, dtype=np.uint8), "SRGGB10", (10, 10), 40)


class StandInPicamera2:
    """Replays synthetic XRGB8888 buffers through the calls Picamera2Source makes, for tests without a camera."""

    def __init__(self, camera_num):
        self.camera_num = camera_num
        self.started = False
        self.closed = False
        self.stride = None

    def create_video_configuration(self, main, buffer_count):
        return {"main": dict(main), "buffer_count": buffer_count}

    def configure(self, config):
        width, _ = config["main"]["size"]
        # Rows are padded to a multiple of 256 pixels in this stand-in: 704 wide gives a 768-pixel stride.
        self.stride = -(-width // 256) * 256 * 4
        self.config = config

    def start(self):
        self.started = True

    def camera_configuration(self):
        return {"main": {**self.config["main"], "stride": self.stride}}

    def capture_buffer(self, name, wait=None):
        width, height = self.config["main"]["size"]
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
        rgb[:, :, 0] = 255
        return bgrx_buffer(rgb, self.stride)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_picamera2_source_returns_rgb():
    cameras = []

    def factory(number):
        cameras.append(StandInPicamera2(number))
        return cameras[-1]

    source = Picamera2Source(1, size=(704, 576), factory=factory)
    with source:
        frame = source.read()
    assert frame.shape == (576, 704, 3)
    assert cameras[0].stride == 768 * 4
    assert (frame == (255, 0, 0)).all()
    assert cameras[0].camera_num == 1
    assert cameras[0].closed


def test_picamera2_missing_names_package():
    source = open_source("picamera2:0")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="python3-picamera2"):
            source.open()
    else:
        pytest.skip("picamera2 is installed here")


def test_check_frame_rejects_bad_frames():
    with pytest.raises(SourceError, match="no frame"):
        check_frame(None, "camera")
    with pytest.raises(SourceError, match=r"shape \(4, 4\)"):
        check_frame(np.zeros((4, 4), dtype=np.uint8), "camera")
    with pytest.raises(SourceError, match="float32"):
        check_frame(np.zeros((4, 4, 3), dtype=np.float32), "camera")


def test_video_file_frames_and_end(tmp_path):
    digits, _ = real_digits(3)
    path = write_digit_video(tmp_path / "digits.avi", digits, frames_per_digit=2, frame_rate=12.0)
    source = VideoFileSource(path)
    with source:
        frames = [source.read() for _ in range(6)]
        with pytest.raises(EndOfStream):
            source.read()
    assert source.frame_rate == pytest.approx(12.0)
    assert all(frame.shape == (240, 320, 3) for frame in frames)


def test_video_file_loops(tmp_path):
    digits, _ = real_digits(1)
    path = write_digit_video(tmp_path / "one.avi", digits, frames_per_digit=2)
    with VideoFileSource(path, loop=True) as source:
        frames = [source.read() for _ in range(5)]
    assert len(frames) == 5


def test_corrupt_video_is_rejected(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(path).open()


def test_image_folder_in_name_order(tmp_path):
    for name, value in (("b.png", 200), ("a.png", 10), ("c.txt", 0)):
        if name.endswith(".png"):
            Image.new("L", (5, 4), value).save(tmp_path / name)
        else:
            (tmp_path / name).write_text("not an image")
    source = ImageFolderSource(tmp_path)
    with source:
        first, second = source.read(), source.read()
        with pytest.raises(EndOfStream):
            source.read()
    assert first.shape == (4, 5, 3)
    assert first[0, 0, 0] == 10
    assert second[0, 0, 0] == 200


def test_synthetic_digits_cycle():
    source = SyntheticSource(size=(64, 48), frame_rate=10, seconds_per_digit=0.2)
    digits = []
    with source:
        for _ in range(6):
            frame = source.read()
            digits.append(source.digit)
    assert frame.shape == (48, 64, 3)
    assert digits == [0, 0, 1, 1, 2, 2]


def test_open_source_names(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "clip.3gp").write_bytes(b"\0" * 10)
    assert isinstance(open_source("synthetic"), SyntheticSource)
    assert isinstance(open_source("picamera2:1"), Picamera2Source)
    assert isinstance(open_source(tmp_path), ImageFolderSource)
    assert isinstance(open_source(str(tmp_path / "a.png")), ImageFolderSource)
    # Files without an image suffix go to OpenCV, whatever their suffix.
    assert isinstance(open_source(tmp_path / "clip.3gp"), VideoFileSource)


def test_open_source_camera_number_checked():
    with pytest.raises(InputError, match="/dev/video97 does not exist"):
        open_source(97)
    with pytest.raises(InputError, match="/dev/video96 does not exist"):
        open_source("96")


def test_open_source_missing_things():
    with pytest.raises(InputError, match="/dev/video97 does not exist"):
        open_source("/dev/video97")
    with pytest.raises(InputError, match="not found"):
        open_source("no-such-video.mp4")
    with pytest.raises(InputError, match="picamera2:N"):
        open_source("picamera2:front")
    with pytest.raises(InputError, match="the frame source is empty"):
        open_source("  ")
    with pytest.raises(InputError, match="frame_rate must be positive"):
        open_source("synthetic", frame_rate=0)


def test_empty_video_is_rejected(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        VideoFileSource(path).open()


def test_image_folder_skips_unreadable(tmp_path, caplog):
    Image.new("L", (5, 4), 10).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    Image.new("L", (5, 4), 200).save(tmp_path / "c.png")
    source = ImageFolderSource(tmp_path)
    with source:
        first = source.read()
        first_name = source.frame_name
        second = source.read()
        second_name = source.frame_name
    assert first[0, 0, 0] == 10
    assert second[0, 0, 0] == 200
    assert (first_name, second_name) == ("a.png", "c.png")
    assert "b.png" in caplog.text


def test_image_folder_all_unreadable(tmp_path):
    (tmp_path / "a.png").write_bytes(b"broken")
    source = ImageFolderSource(tmp_path, loop=True)
    with source, pytest.raises(SourceError, match="none of the 1 files"):
        source.read()


def test_image_folder_transparency_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[1, 1] = (0, 0, 0, 255)  # one opaque black pixel, the rest transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    with ImageFolderSource(tmp_path / "ink.png") as source:
        frame = source.read()
    assert tuple(frame[0, 0]) == (255, 255, 255)
    assert tuple(frame[1, 1]) == (0, 0, 0)


def test_image_folder_16_bit_scaled(tmp_path):
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    with ImageFolderSource(tmp_path) as source:
        assert source.read()[0, 0, 0] == 255


def test_yuv420_odd_width_without_padding():
    width, height, stride = 5, 2, 5
    luma = np.arange(10, dtype=np.uint8).reshape(2, 5) * 20
    u = np.array([128, 128, 200], dtype=np.uint8)  # the third chroma column carries colour
    v = np.array([128, 128, 128], dtype=np.uint8)
    rgb = buffer_to_rgb(np.concatenate([luma.ravel(), u, v]), "YUV420", (width, height), stride)
    np.testing.assert_array_equal(rgb[:, :4, 0], luma[:, :4])
    assert rgb[0, 4, 2] > rgb[0, 4, 0]


def test_buffer_to_rgb_bad_arguments():
    with pytest.raises(SourceError, match="width must be a whole number"):
        buffer_to_rgb(np.zeros(100, np.uint8), "XRGB8888", (0, 3), 12)
    with pytest.raises(SourceError, match="stride must be a whole number"):
        buffer_to_rgb(np.zeros(100, np.uint8), "XRGB8888", (2, 2), 8.5)
    with pytest.raises(SourceError, match="bytes or a numpy array"):
        buffer_to_rgb(None, "XRGB8888", (2, 2), 8)


def test_buffer_to_rgb_reads_uint32_as_bytes():
    words = np.full((2, 2), 0x00FF0000, dtype="<u4")  # little-endian B, G, R, X = 0, 0, 255, 0
    assert tuple(buffer_to_rgb(words, "XRGB8888", (2, 2), 8)[0, 0]) == (255, 0, 0)


def test_missing_v4l2_camera_fails_to_open():
    source = OpenCVCameraSource(97)
    with pytest.raises(SourceError, match="cannot open OpenCV camera /dev/video97"):
        source.open()
