"""A small HTTP server that shows the annotated camera stream and the current prediction.

Endpoints:

- ``GET /``: an HTML page with the stream and the prediction, refreshed by
  polling ``/prediction``;
- ``GET /stream.mjpg``: the annotated frames as an MJPEG stream
  (``multipart/x-mixed-replace``), which browsers show in an ``<img>``;
- ``GET /snapshot.jpg``: the newest annotated frame;
- ``GET /prediction``: the newest prediction as JSON (``label``,
  ``confidence``, ``fps``, ``latency_ms``, ``frame`` and more); status 503
  until the first frame is classified;
- ``GET /health``: ``{"status": "ok" | "starting" | "stopped", ...}``, with
  status 200 only while frames are being classified.

A client that sends slowly or never reads keeps its connection for at most
10 s, and :meth:`PreviewServer.stop` shuts down every open connection.

The server is the standard library's ``ThreadingHTTPServer``, one thread per
connection: four read-only endpoints need no web framework, and a Raspberry
Pi image then needs no extra package. It has no authentication and no TLS,
so it listens on 127.0.0.1 by default. Serve it on 0.0.0.0 only on a
network you trust.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)

__all__ = ["LiveView", "PreviewServer", "parse_address"]

BOUNDARY = "reverb-edge-frame"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reverb-edge camera</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1rem; background: #111; color: #eee; }
  img { max-width: 100%; border: 1px solid #444; }
  #prediction { font-size: 2rem; margin: 0.5rem 0; }
  #details { color: #aaa; }
</style>
</head>
<body>
<h1>reverb-edge camera</h1>
<div id="prediction">waiting for the first frame…</div>
<div id="details"></div>
<img id="stream" src="/stream.mjpg" alt="annotated camera stream">
<script>
async function refresh() {
  try {
    const response = await fetch("/prediction", {cache: "no-store"});
    const data = await response.json();
    if (response.ok) {
      document.getElementById("prediction").textContent =
        `${data.label} (${(100 * data.confidence).toFixed(1)} %)`;
      document.getElementById("details").textContent =
        `frame ${data.frame}, ${data.fps.toFixed(1)} fps, ${data.latency_ms.toFixed(1)} ms per frame`;
    } else {
      document.getElementById("details").textContent = data.error;
    }
  } catch (error) {
    document.getElementById("details").textContent = "server not reachable";
    failures += 1;
    if (failures >= 20) {
      clearInterval(timer);  // the camera command has ended; reload the page to resume
    }
    return;
  }
  failures = 0;
}
let failures = 0;
const timer = setInterval(refresh, 250);
refresh();
</script>
</body>
</html>
"""


def parse_address(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``PORT`` (host 127.0.0.1) into (host, port); raise ValueError if invalid."""
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT or PORT with a port from 0 to 65535, got {value!r}")
    return host, int(port_text)


class LiveView:
    """The newest annotated JPEG frame and prediction, shared by the camera loop and HTTP clients."""

    def __init__(self, details: dict | None = None) -> None:
        self.details = dict(details or {})
        self.started_at = time.monotonic()
        self._condition = threading.Condition()
        self._sequence = 0
        self._jpeg: bytes | None = None
        self._prediction: dict | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, jpeg: bytes, prediction: dict) -> None:
        """Replace the current frame and prediction and wake the streaming clients."""
        with self._condition:
            self._sequence += 1
            self._jpeg = jpeg
            self._prediction = dict(prediction)
            self._condition.notify_all()

    def latest(self) -> tuple[int, bytes | None, dict | None]:
        """Return (sequence number, JPEG bytes, prediction); the last two are None before the first frame."""
        with self._condition:
            return self._sequence, self._jpeg, self._prediction

    def wait_for_newer(self, sequence: int, timeout: float) -> tuple[int, bytes] | None:
        """Wait up to ``timeout`` s for a frame after ``sequence``; None on timeout or once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._sequence > sequence or self._closed, timeout)
            if self._closed or self._sequence <= sequence:
                return None
            return self._sequence, self._jpeg

    def close(self) -> None:
        """Mark the stream as ended so that streaming clients finish."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    server_version = "reverb-edge"
    # A client that stops reading blocks its thread at most this many seconds.
    timeout = 10

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    routes = {
        "/": "_page",
        "/index.html": "_page",
        "/stream.mjpg": "_stream",
        "/snapshot.jpg": "_snapshot",
        "/prediction": "_prediction",
        "/health": "_health",
        "/favicon.ico": "_no_icon",
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        handler = self.routes.get(path)
        if handler is None:
            paths = ", ".join(route for route in self.routes if route not in ("/index.html", "/favicon.ico"))
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; the paths are {paths}"})
            return
        try:
            getattr(self, handler)()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            logger.debug("client %s went away during %s", self.address_string(), path)

    def do_HEAD(self) -> None:
        # Health probes often use HEAD, which gets the headers of GET and no body.
        self._head_only = True
        self.do_GET()

    def _method_not_allowed(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not supported; use GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed

    _head_only = False

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.command not in ("GET", "HEAD"):
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if not self._head_only:
            self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, data: dict) -> None:
        self._send(status, "application/json", json.dumps(data).encode())

    def _no_icon(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self.end_headers()

    def _page(self) -> None:
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())

    def _snapshot(self) -> None:
        _, jpeg, _ = self.server.view.latest()
        if jpeg is None:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no frame classified yet"})
            return
        self._send(HTTPStatus.OK, "image/jpeg", jpeg)

    def _prediction(self) -> None:
        _, _, prediction = self.server.view.latest()
        if prediction is None:
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no frame classified yet"})
            return
        self._send_json(HTTPStatus.OK, prediction)

    def _health(self) -> None:
        view = self.server.view
        sequence, _, prediction = view.latest()
        if view.closed:
            status = "stopped"
        elif prediction is None:
            status = "starting"
        else:
            status = "ok"
        body = {
            "status": status,
            "frames": sequence,
            "uptime_s": round(time.monotonic() - view.started_at, 1),
            **view.details,
        }
        self._send_json(HTTPStatus.OK if status == "ok" else HTTPStatus.SERVICE_UNAVAILABLE, body)

    def _stream(self) -> None:
        view = self.server.view
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self._head_only:
            return

        sequence, jpeg, _ = view.latest()
        while not self.server.stopping.is_set():
            if jpeg is not None:
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg + b"\r\n"
                )
                self.wfile.flush()
            newer = view.wait_for_newer(sequence, timeout=1.0)
            if newer is None:
                if view.closed:
                    return
                jpeg = None
                continue
            sequence, jpeg = newer


class _Server(ThreadingHTTPServer):
    # Non-daemon request threads, so that server_close() joins every one of them.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address, view: LiveView) -> None:
        self.view = view
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def disconnect_clients(self) -> None:
        """Shut down every open connection, so that no client can hold a request thread."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the client
                pass


class PreviewServer:
    """Serve a :class:`LiveView` over HTTP on a background thread.

    ``port`` 0 picks a free port; :attr:`url` gives the one in use.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
    """

    def __init__(self, view: LiveView, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.view = view
        self._server = _Server((host, port), view)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> None:
        """Start serving requests on a background thread."""
        if self._thread is not None:
            raise RuntimeError("this PreviewServer was already started; create a new one to serve again")
        self._thread = threading.Thread(target=self._server.serve_forever, name="preview server", daemon=True)
        self._thread.start()
        logger.info("serving the camera view at %s", self.url)

    def stop(self) -> None:
        """End the streams, stop the server and wait for every request thread."""
        self.view.close()
        self._server.stopping.set()
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        # A client that sends slowly or never reads would otherwise keep its thread, and
        # server_close(), waiting.
        self._server.disconnect_clients()
        self._server.server_close()

    def __enter__(self) -> "PreviewServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
