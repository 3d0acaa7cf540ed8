"""A real local HTTP server for URL tests: good, slow, huge, redirecting, broken answers."""
from __future__ import annotations

import io
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from PIL import Image


def png_bytes(colour=(200, 30, 30), size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    server_version = "test"
    images: dict[str, bytes] = {}
    hits: dict[str, int] = {}
    headers_seen: list[dict[str, str]] = []   # every request's headers (a host that logs them)
    gate: threading.Event = threading.Event()  # /hold.png answers once it is set
    holding: list[int] = [0, 0]                # requests waiting at /hold.png now, and at most

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        self.headers_seen.append(dict(self.headers.items()))
        if path == "/hold.png":
            return self._hold()
        if path in self.images:
            return self._send(200, self.images[path])
        if path.startswith("/redirect-to/"):  # /redirect-to/<host:port>/<path>
            return self._send(302, b"", location="http://" + path[len("/redirect-to/"):])
        if path == "/slow.png":
            time.sleep(30)
            return self._send(200, png_bytes())
        if path == "/huge.png":
            return self._stream(200, png_bytes() + b"\0" * (8 << 20))
        if path == "/flaky.png" and self.hits[path] < 3:
            return self._send(503, b"busy")
        if path == "/flaky.png":
            return self._send(200, png_bytes((1, 2, 3)))
        if path == "/loop":
            return self._send(302, b"", location="/loop")
        if path == "/gone":
            return self._send(410, b"gone")
        if path == "/page.png":
            return self._send(200, b"<html>not an image</html>")
        return self._send(404, b"no")

    def _hold(self) -> None:
        """Answer only when the test opens the gate (a host that hangs, for as long as needed)."""
        with _holding_lock:
            self.holding[0] += 1
            self.holding[1] = max(self.holding)
        try:
            self.gate.wait(120)
        finally:
            with _holding_lock:
                self.holding[0] -= 1
        self._send(200, png_bytes())

    def _send(self, status: int, body: bytes, location: str | None = None) -> None:
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, status: int, body: bytes) -> None:
        """No Content-Length: the limit must hold while streaming."""
        self.send_response(status)
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for i in range(0, len(body), 65536):
                self.wfile.write(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass


_holding_lock = threading.Lock()


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up early is expected here (the size-limit tests do): no traceback on
    stderr from the request thread, where it would land in the output a later test captures."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextmanager
def serving(images: dict[str, bytes] | None = None) -> Iterator[str]:
    """Serve on 127.0.0.1 at a free port; yields ``host:port``."""
    with serving_handler(images) as (hp, _handler):
        yield hp


@contextmanager
def serving_handler(images: dict[str, bytes] | None = None) -> Iterator[tuple[str, type[Handler]]]:
    """As ``serving``, and the handler class: its ``headers_seen``, ``gate`` and ``holding``.
    The gate is opened on the way out, so no request waits past the test."""
    handler = type("H", (Handler,), {"images": dict(images or {}), "hits": {}, "headers_seen": [],
                                     "gate": threading.Event(), "holding": [0, 0]})
    srv = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", handler
    finally:
        handler.gate.set()
        srv.shutdown()
        srv.server_close()
