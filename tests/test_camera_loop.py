"""The capture thread, the camera loop and ``reverb-edge camera``, on videos of real MNIST digits."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from camera_media import real_digits, write_digit_video
from reverb_edge import Engine
from reverb_edge.camera import (
    CameraLoop,
    CapturedFrame,
    FrameClassifier,
    LatestFrame,
    SourceError,
    SyntheticSource,
    VideoFileSource,
)
from reverb_edge.camera.classify import default_roi
from reverb_edge.cli import main
from reverb_edge.errors import InputError, ReverbError

FRAMES_PER_DIGIT = 4


@pytest.fixture(scope="module")
def engine():
    return Engine.load("mnist")


@pytest.fixture(scope="module")
def digit_video(tmp_path_factory):
    """A video of 30 real MNIST test digits, with the labels and the engine's own reading of each digit."""
    digits, labels = real_digits(30)
    path = write_digit_video(tmp_path_factory.mktemp("video") / "digits.avi", digits, FRAMES_PER_DIGIT)
    model = Engine.load("mnist")
    spec = model.input_spec
    direct = np.array([
        int(model.predict(((digit / 255 - spec.mean[0]) / spec.std[0]).astype(np.float32)[np.newaxis]).argmax())
        for digit in digits
    ])
    return path, labels, direct


class FailingCamera(VideoFileSource):
    """A real video played as a live camera that stops delivering after ``good_frames`` (an unplug)."""

    live = True

    def __init__(self, path, good_frames: int, reopen_works: bool = False):
        super().__init__(path, loop=True)
        self.description = "unplugged camera"
        self.good_frames = good_frames
        self.reopen_works = reopen_works
        self.opens = 0
        self.delivered = 0

    def open(self):
        self.opens += 1
        if self.opens > 1 and not self.reopen_works:
            raise SourceError("camera not found after unplug")
        super().open()

    def read(self):
        if self.delivered >= self.good_frames and not (self.reopen_works and self.opens > 1):
            raise SourceError("read timed out")
        self.delivered += 1
        return super().read()


def capture_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("capture ")]


def test_latest_frame_keeps_newest():
    slot = LatestFrame()
    for index in range(5):
        slot.put(CapturedFrame(index, np.zeros((1, 1, 3), np.uint8), 0.0))
    newest = slot.get(timeout=0)
    assert newest.index == 4
    assert slot.dropped == 4
    assert slot.get(timeout=0) is None


def test_latest_frame_waits_for_consumer():
    slot = LatestFrame(wait_for_consumer=True)
    slot.put(CapturedFrame(0, np.zeros((1, 1, 3), np.uint8), 0.0))
    second = threading.Thread(target=slot.put, args=(CapturedFrame(1, np.zeros((1, 1, 3), np.uint8), 0.0),))
    second.start()
    time.sleep(0.05)
    assert second.is_alive()
    assert slot.get(timeout=1).index == 0
    second.join(1)
    assert slot.get(timeout=1).index == 1
    assert slot.dropped == 0


def test_latest_frame_close_raises_error():
    slot = LatestFrame()
    slot.close(SourceError("gone"))
    with pytest.raises(SourceError, match="gone"):
        slot.get(timeout=1)


def test_video_labels_match_digits(engine, digit_video):
    path, labels, direct = digit_video
    with CameraLoop(engine, VideoFileSource(path), every_frame=True) as loop:
        predicted = [int(result.prediction.label) for result in loop]
    assert len(predicted) == len(labels) * FRAMES_PER_DIGIT
    per_digit = np.array(predicted).reshape(len(labels), FRAMES_PER_DIGIT)
    # Each frame of a digit is read as the engine reads the digit itself, which is its label
    # for all but the digits the model gets wrong anyway (2 of these 30).
    np.testing.assert_array_equal(per_digit, np.repeat(direct[:, np.newaxis], FRAMES_PER_DIGIT, axis=1))
    assert (direct == labels).mean() >= 0.9
    assert not capture_threads()


def test_realtime_playback_skips_nothing_when_fast(engine, digit_video):
    path, labels, _ = digit_video
    with CameraLoop(engine, VideoFileSource(path)) as loop:
        results = [result.prediction for result in loop]
    assert results[-1].frame == len(labels) * FRAMES_PER_DIGIT - 1
    assert results[-1].fps > 0


def test_failing_camera_retries_then_raises(engine, digit_video, caplog):
    source = FailingCamera(digit_video[0], good_frames=6)
    loop = CameraLoop(engine, source, retries=2, retry_delay=0.01)
    seen = 0
    with pytest.raises(SourceError, match="gave up after 2 retries") as raised:
        for _ in loop:
            seen += 1
    assert "camera not found after unplug" in str(raised.value)
    assert source.opens == 3
    assert 1 <= seen <= 6
    assert sum("retry" in record.message for record in caplog.records) == 2
    assert not loop.capture.is_alive()
    assert not capture_threads()


def test_failing_camera_recovers(engine, digit_video):
    source = FailingCamera(digit_video[0], good_frames=3, reopen_works=True)
    loop = CameraLoop(engine, source, every_frame=True, retries=2, retry_delay=0.01)
    frames = 0
    for _ in loop:
        frames += 1
        if frames == 12:
            break
    assert frames == 12
    assert source.opens == 2
    assert not capture_threads()


def test_stop_from_other_thread_ends_loop(engine):
    loop = CameraLoop(engine, SyntheticSource(size=(64, 64), frame_rate=50))
    timer = threading.Timer(0.3, loop.stop)
    timer.start()
    count = sum(1 for _ in loop)
    timer.join()
    assert count >= 1
    assert not capture_threads()


def test_stall_raises(engine):
    class FrozenCamera(SyntheticSource):
        """Delivers one frame, then blocks in read() like a driver that never returns."""

        live = True

        def __init__(self):
            super().__init__(size=(32, 32))
            self.release = threading.Event()
            self.reads = 0

        def read(self):
            self.reads += 1
            if self.reads > 1:
                self.release.wait(10)
                raise SourceError("released")
            return super().read()

    camera = FrozenCamera()
    loop = CameraLoop(engine, camera, retries=0, stall_timeout=0.3)
    # The blocked read returns after a while, as OpenCV's V4L2 timeout does.
    threading.Timer(1.0, camera.release.set).start()
    with pytest.raises(SourceError, match="no frame from synthetic digits 32×32 for 0.3 s"):
        for _ in loop:
            pass
    loop.capture.join(5)
    assert not capture_threads()


def test_smoothing_averages_probabilities(engine):
    classifier = FrameClassifier(engine, smoothing=3)
    source = SyntheticSource(size=(120, 120), frame_rate=10, seconds_per_digit=0.1)
    with source:
        frames = [source.read() for _ in range(3)]
    single = FrameClassifier(engine)
    singles = [single.classify(frame).probabilities for frame in frames]
    smoothed = [classifier.classify(frame).probabilities for frame in frames]
    np.testing.assert_allclose(smoothed[-1], np.mean(singles, axis=0), rtol=1e-6)
    assert smoothed[-1].sum() == pytest.approx(1.0)


def test_default_roi_is_centred_square():
    assert default_roi((640, 480), (1, 28, 28)) == (80, 0, 480, 480)
    assert default_roi((300, 500), (1, 28, 28)) == (0, 100, 300, 300)


def test_roi_outside_frame_is_rejected(engine):
    classifier = FrameClassifier(engine, roi=(600, 0, 100, 100))
    with pytest.raises(InputError, match="does not fit in the 640×480 frame"):
        classifier.classify(np.zeros((480, 640, 3), dtype=np.uint8))


def test_event_model_is_rejected():
    with pytest.raises(InputError, match="reverb-edge dvs"):
        FrameClassifier(Engine.load("nmnist"))


def test_cli_json_labels(digit_video):
    path, labels, direct = digit_video
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", str(path), "--every-frame", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [int(f["label"]) for f in frames[::FRAMES_PER_DIGIT]] == direct.tolist()
    assert {"label", "confidence", "fps", "latency_ms", "frame"} <= set(frames[0])
    assert summary["frames"] == len(labels) * FRAMES_PER_DIGIT
    assert summary["stopped_by"] == "end of source"


def test_cli_records_mjpeg(tmp_path):
    target = tmp_path / "out.mjpeg"
    result = CliRunner().invoke(
        main, ["camera", "mnist", "--source", "synthetic", "--size", "96x64", "--fps", "50",
               "--max-frames", "5", "--record", str(target)]
    )
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.count(b"\xff\xd8\xff") == 5
    assert "5 frames classified" in result.stdout


def test_cli_records_avi_playable(tmp_path):
    import cv2

    target = tmp_path / "out.avi"
    result = CliRunner().invoke(
        main, ["camera", "mnist", "--source", "synthetic", "--size", "96x64", "--fps", "50",
               "--max-frames", "4", "--record", str(target)]
    )
    assert result.exit_code == 0, result.output
    capture = cv2.VideoCapture(str(target))
    ok, frame = capture.read()
    capture.release()
    assert ok
    assert frame.shape == (64, 96, 3)


def test_cli_failing_camera_exits_cleanly(digit_video, monkeypatch):
    import reverb_edge.cli.camera as camera_cli

    monkeypatch.setattr(camera_cli, "open_source", lambda *args, **kwargs: FailingCamera(digit_video[0], 5))
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", "usb", "--retries", "1", "--retry-delay", "0"])
    assert result.exit_code == 1
    assert "unplugged camera stopped delivering frames; gave up after 1 retry" in result.output
    assert "Traceback" not in result.output
    assert not capture_threads()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--source", "/dev/video97"], "/dev/video97 does not exist"),
        (["--source", "synthetic", "--size", "640"], "expected WIDTHxHEIGHT"),
        (["--source", "synthetic", "--roi", "1,2,3"], "LEFT,TOP,WIDTH,HEIGHT"),
        (["--source", "synthetic", "--serve", "localhost:http"], "HOST:PORT"),
        (["--source", "synthetic", "--record", "out.gif"], "cannot record to out.gif"),
    ],
)
def test_cli_bad_options(arguments, message):
    result = CliRunner().invoke(main, ["camera", "mnist", *arguments])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_port_in_use():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["camera", "mnist", "--source", "synthetic", "--serve", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_overlay_draws_roi_and_banner(engine):
    from reverb_edge.camera import draw_overlay, encode_jpeg

    frame = np.full((240, 320, 3), 128, dtype=np.uint8)
    prediction = FrameClassifier(engine).classify(frame)
    annotated = np.asarray(draw_overlay(frame, prediction))
    left, top, width, height = prediction.roi
    assert annotated.shape == frame.shape
    # The region of interest gets a yellow outline.
    assert tuple(annotated[top + height // 2, left]) == (255, 200, 0)
    # The status banner darkens the top rows and carries white text.
    assert annotated[:5, :, 0].mean() < 100
    assert annotated[:20].max() == 255
    assert encode_jpeg(draw_overlay(frame, prediction))[:2] == b"\xff\xd8"


def test_loop_reuse_is_rejected(engine):
    loop = CameraLoop(engine, SyntheticSource(size=(32, 32), frame_rate=100))
    for _ in loop:
        break
    with pytest.raises(ReverbError, match="create a new CameraLoop"):
        next(iter(loop))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"roi": "10,10,50,50"}, "roi must be four whole numbers"),
        ({"roi": (0, 0, None, 10)}, "roi must be four whole numbers"),
        ({"roi": (-1, 0, 10, 10)}, "left, top >= 0"),
        ({"smoothing": 0}, "smoothing must be"),
        ({"retries": -1}, "retries must be"),
        ({"stall_timeout": 0}, "stall_timeout > 0"),
    ],
)
def test_loop_bad_arguments(engine, arguments, message):
    with pytest.raises(InputError, match=message):
        CameraLoop(engine, SyntheticSource(size=(32, 32)), **arguments)


def test_loop_wrong_engine_and_source(engine):
    with pytest.raises(InputError, match="Engine.load"):
        CameraLoop("mnist", SyntheticSource(size=(32, 32)))
    with pytest.raises(InputError, match="open_source"):
        CameraLoop(engine, "synthetic")


def test_classify_accepts_numpy_smoothing_and_pil(engine):
    from PIL import Image

    classifier = FrameClassifier(engine, smoothing=np.int64(2))
    prediction = classifier.classify(Image.new("RGB", (40, 30), (255, 255, 255)))
    assert prediction.roi == (5, 0, 30, 30)


def test_cli_duration_with_slow_source():
    started = time.monotonic()
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", "synthetic", "--size", "64x64",
                                       "--fps", "0.05", "--duration", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 20
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["frames"] == 1
    assert summary["stopped_by"] == "--duration"


def test_cli_image_folder_names_files(tmp_path, caplog):
    from camera_media import paper_frame
    from PIL import Image

    digits, labels = real_digits(3)
    for number, digit in enumerate(digits):
        Image.fromarray(paper_frame(digit)).save(tmp_path / f"{number}_photo.png")
    (tmp_path / "9_broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", str(tmp_path), "--every-frame", "--json"])
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    assert [frame["name"] for frame in frames] == ["0_photo.png", "1_photo.png", "2_photo.png"]
    assert [int(frame["label"]) for frame in frames] == labels.tolist()
    assert "skipping unreadable image" in caplog.text


def test_cli_record_to_full_disk(tmp_path):
    target = tmp_path / "full.mjpeg"
    target.symlink_to("/dev/full")
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", "synthetic", "--size", "64x64",
                                       "--fps", "50", "--max-frames", "3", "--record", str(target)])
    assert result.exit_code == 1
    assert "cannot write recording" in result.output
    assert "No space left on device" in result.output
    assert "Traceback" not in result.output


def test_cli_record_avi_keeps_video_rate(tmp_path, digit_video):
    import cv2

    target = tmp_path / "copy.avi"
    result = CliRunner().invoke(main, ["camera", "mnist", "--source", str(digit_video[0]), "--every-frame",
                                       "--max-frames", "5", "--record", str(target)])
    assert result.exit_code == 0, result.output
    capture = cv2.VideoCapture(str(target))
    rate = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert rate == pytest.approx(10.0)


def test_server_stops_despite_slow_client(engine):
    import socket

    from reverb_edge.camera import LiveView, PreviewServer

    server = PreviewServer(LiveView(), "127.0.0.1", 0)
    server.start()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    slow = socket.create_connection(server.address)
    slow.sendall(b"GET /hea")  # a request line that never ends
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    slow.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("Thread-") and "process_request" in t.name]
