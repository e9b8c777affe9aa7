"""The camera page of ``reverb-edge camera --serve`` in a real headless Chromium, driven by Playwright.

The server runs as a subprocess on a looping video of real MNIST digits, so
the true digit of every classified frame follows from its frame index. The
module skips unless Debian's Chromium (/usr/bin/chromium) and the playwright
package are installed. Playwright drives that system browser, so
``playwright install`` is never needed.
"""

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found; install Debian's Chromium with `apt install chromium`",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the browser test needs the playwright package (pip install playwright) and Debian's Chromium "
           "(apt install chromium)",
)

from camera_media import real_digits, write_digit_video  # noqa: E402  (after the skips)
from reverb_edge.errors import MissingExtraError  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

DIGIT_COUNT = 4
FRAME_RATE = 10.0
# Each digit shows for 2 s, so the page can be read and compared with /prediction while one digit is on screen.
FRAMES_PER_DIGIT = 20
VIDEO_SIZE = (320, 240)

# These are upper bounds for a busy machine. On an idle one the server is healthy after about 1 s.
STARTUP_TIMEOUT_S = 30.0
PAGE_TIMEOUT_MS = 10_000
SHUTDOWN_TIMEOUT_S = 5.0

PREDICTION_TEXT = re.compile(r"^(\d) \((\d{1,3}\.\d) %\)$")
DETAILS_TEXT = re.compile(r"^frame (\d+), ")
PREDICTION_KEYS = {"label", "confidence", "fps", "latency_ms", "frame", "age_ms", "dropped", "roi"}

# No proxy from the environment: every request goes straight to the server on 127.0.0.1.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Response:
    """An HTTP response: status code, Content-Type header and body."""

    status: int
    content_type: str
    body: bytes


def fetch(url: str) -> Response:
    """GET ``url`` and return the response, including error statuses such as 404 and 503."""
    try:
        with HTTP.open(url, timeout=5) as response:
            return Response(response.status, response.headers.get("Content-Type", ""), response.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, err.headers.get("Content-Type", ""), err.read())


@dataclass
class CameraServer:
    """A running ``reverb-edge camera --serve`` subprocess."""

    process: subprocess.Popen
    url: str
    stdout_path: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def camera_command(video: Path) -> list[str]:
    """Return the command line that serves ``video``, looping, on a free port of 127.0.0.1."""
    return [sys.executable, "-m", "reverb_edge", "camera", "mnist", "--source", str(video), "--loop", "--serve", "127.0.0.1:0"]


def restore_sigint() -> None:
    # Python installs its KeyboardInterrupt handler only when SIGINT is not ignored at startup, and a
    # non-interactive shell starts background jobs (such as a test run) with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def camera_server(video: Path, folder: Path):
    """Start the server on ``video``, wait until /health returns 200, and kill the process on exit."""
    stdout_path = folder / "stdout.txt"
    stderr_path = folder / "stderr.txt"
    sigint_ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(camera_command(video), stdout=stdout, stderr=stderr,
                                   preexec_fn=restore_sigint if sigint_ignored else None)
    try:
        url = wait_for_url(process, stderr_path)
        server = CameraServer(process, url, stdout_path, stderr_path)
        wait_for_health(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def wait_for_url(process: subprocess.Popen, stderr_path: Path) -> str:
    """Return the URL that the server prints on stderr as ``serving http://127.0.0.1:PORT/``."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        stderr = stderr_path.read_text(errors="replace")
        match = re.search(r"^serving (http://127\.0\.0\.1:\d+/)$", stderr, re.MULTILINE)
        if match:
            return match.group(1)
        if process.poll() is not None:
            pytest.fail(f"reverb-edge camera exited with status {process.returncode} before serving:\n{stderr}")
        time.sleep(0.05)
    pytest.fail(f"reverb-edge camera printed no 'serving' line within {STARTUP_TIMEOUT_S:g} s:\n{stderr}")


def wait_for_health(server: CameraServer) -> None:
    """Wait until /health returns 200, which it does once the first frame is classified."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_response = "no response"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"reverb-edge camera exited with status {server.process.returncode}:\n{server.stderr()}")
        try:
            response = fetch(server.url + "health")
        except OSError as err:  # urllib.error.URLError, such as a refused connection
            last_response = str(err)
        else:
            if response.status == 200:
                return
            last_response = f"{response.status} {response.body!r}"
        time.sleep(0.05)
    pytest.fail(f"/health did not return 200 within {STARTUP_TIMEOUT_S:g} s (last response: {last_response}):\n"
                f"{server.stderr()}")


@pytest.fixture(scope="module")
def digits():
    """Real MNIST digits (N, 28, 28) and their labels, one of each class from 0 up."""
    try:
        return real_digits(DIGIT_COUNT, seed=0)
    except MissingExtraError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def digit_labels(digits) -> list[str]:
    """The true labels of the video's digits, in the order they are shown."""
    return [str(label) for label in digits[1]]


@pytest.fixture(scope="module")
def video(tmp_path_factory, digits) -> Path:
    """An MJPEG AVI of the digits, dark ink on light paper, each held for FRAMES_PER_DIGIT frames."""
    images, _ = digits
    path = tmp_path_factory.mktemp("camera_browser") / "digits.avi"
    return write_digit_video(path, images, frames_per_digit=FRAMES_PER_DIGIT, frame_rate=FRAME_RATE,
                             size=VIDEO_SIZE)


def true_label(frame: int, digit_labels: list[str]) -> str:
    """Return the label of the digit in frame ``frame``, whose index keeps counting when the video loops."""
    return digit_labels[(frame // FRAMES_PER_DIGIT) % len(digit_labels)]


@pytest.fixture(scope="module")
def server(video, tmp_path_factory):
    with camera_server(video, tmp_path_factory.mktemp("camera_server")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url: str):
    """Open the camera page and wait until it shows a prediction."""
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_function(
        "pattern => new RegExp(pattern).test(document.getElementById('prediction').textContent)",
        arg=PREDICTION_TEXT.pattern,
    )
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server.url)
    try:
        yield page
    finally:
        page.close()


def stream_size(page) -> tuple[int, int]:
    """Wait until the <img> has decoded a frame of the MJPEG stream; return its natural (width, height)."""
    page.wait_for_function("document.getElementById('stream').naturalWidth > 0")
    return tuple(page.evaluate("[document.getElementById('stream').naturalWidth, "
                               "document.getElementById('stream').naturalHeight]"))


def test_page_prediction_text(page):
    text = page.text_content("#prediction")
    assert PREDICTION_TEXT.match(text), text


def test_page_details_text(page):
    page.wait_for_function("document.getElementById('details').textContent.startsWith('frame ')")
    text = page.text_content("#details")
    assert re.match(r"^frame \d+, \d+\.\d fps, \d+\.\d ms per frame$", text), text


def test_page_stream_has_video_size(page):
    width, height = stream_size(page)
    assert width == VIDEO_SIZE[0]
    assert height == VIDEO_SIZE[1]


def test_page_stream_updates(page):
    stream_size(page)
    # Draw the <img> into a canvas and wait until its pixels change. The overlay shows each frame's latency,
    # and the digit itself changes every FRAMES_PER_DIGIT frames (2 s), so a live stream changes within 5 s.
    changed = page.evaluate(
        """async (timeoutMs) => {
            const image = document.getElementById('stream');
            const canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth;
            canvas.height = image.naturalHeight;
            const context = canvas.getContext('2d');
            const pixels = () => {
                context.drawImage(image, 0, 0);
                return context.getImageData(0, 0, canvas.width, canvas.height).data.join(',');
            };
            const first = pixels();
            const deadline = performance.now() + timeoutMs;
            while (performance.now() < deadline) {
                await new Promise(resolve => setTimeout(resolve, 100));
                if (pixels() !== first) return true;
            }
            return false;
        }""",
        PAGE_TIMEOUT_MS // 2,
    )
    assert changed, "the <img> showed the same pixels for 5 s; the MJPEG stream is not updating"


def test_page_label_matches_json(page, server, digit_labels):
    # The page shows the result of its last poll of /prediction (every 250 ms), so a new digit can appear
    # between reading the page and fetching the JSON. Several reads close in time must agree at least once.
    observations = []
    for _ in range(5):
        prediction_text, details_text = page.evaluate(
            "[document.getElementById('prediction').textContent, document.getElementById('details').textContent]"
        )
        prediction_match = PREDICTION_TEXT.match(prediction_text)
        details_match = DETAILS_TEXT.match(details_text)
        assert prediction_match, prediction_text
        assert details_match, details_text
        page_label = prediction_match.group(1)
        page_frame = int(details_match.group(1))
        record = json.loads(fetch(server.url + "prediction").body)
        observations.append((page_label, page_frame, record["label"], record["frame"]))
        if page_label == record["label"]:
            break
        time.sleep(0.3)

    assert any(page_label == json_label for page_label, _, json_label, _ in observations), (
        f"the page and /prediction never showed the same label; (page label, page frame, JSON label, "
        f"JSON frame): {observations}"
    )
    for page_label, page_frame, json_label, json_frame in observations:
        assert json_frame >= page_frame, observations
        assert page_label == true_label(page_frame, digit_labels), observations
        assert json_label == true_label(json_frame, digit_labels), observations


def test_prediction_json_fields(server, digit_labels):
    response = fetch(server.url + "prediction")
    assert response.status == 200
    assert response.content_type == "application/json"
    record = json.loads(response.body)
    assert set(record) == PREDICTION_KEYS
    assert record["label"] == true_label(record["frame"], digit_labels)
    assert 0.0 <= record["confidence"] <= 1.0
    assert len(record["roi"]) == 4


def test_health_ok(server):
    response = fetch(server.url + "health")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert json.loads(response.body)["status"] == "ok"


def test_snapshot_is_jpeg_of_video_size(server):
    response = fetch(server.url + "snapshot.jpg")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert response.body[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(response.body)).size == VIDEO_SIZE


def test_unknown_path_returns_404_json(server):
    response = fetch(server.url + "no-such-page")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert "/no-such-page" in json.loads(response.body)["error"]


def test_sigint_stops_server_cleanly(browser, video, tmp_path):
    # A server of its own, so that the shutdown does not depend on the order of the other tests.
    with camera_server(video, tmp_path) as running:
        page = open_page(browser, running.url)
        try:
            # The open page keeps a /stream.mjpg connection open, which the shutdown has to end.
            stream_size(page)
            running.process.send_signal(signal.SIGINT)
            try:
                status = running.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"reverb-edge camera still running {SHUTDOWN_TIMEOUT_S:g} s after SIGINT:\n"
                            f"{running.stderr()}")
            assert status == 0, running.stderr()
            assert "stopped" in running.stderr().splitlines()
            assert "frames classified" in running.stdout_path.read_text()

            page.wait_for_function("document.getElementById('details').textContent === 'server not reachable'")
        finally:
            page.close()
