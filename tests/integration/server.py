"""A real uvicorn server on a free port, in a thread of the test process, and a raw HTTP client
that streams a body while watching for an early answer (what an attacker's client does)."""
from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yields the base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the web server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def served(log: Path, timeout: float = 120) -> Iterator[tuple[str, int]]:
    """``esm serve`` in a process of its own (this environment's settings and PYTHONPATH): its
    base URL once /api/health answers, and its pid; stopped by that pid afterwards."""
    import httpx

    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "es_metric.cli", "serve", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"esm serve did not start: {log.read_text()[-2000:]}")
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


class Tap:
    """The outermost ASGI layer: counts the body bytes the app (any middleware included) read."""

    def __init__(self, app) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            self.read += len(message.get("body", b""))
            return message
        await self.app(scope, counted, send)


def multipart_head(boundary: str, filename: str = "big.png") -> tuple[bytes, dict[str, str]]:
    """The opening of a multipart form whose ``image`` part follows, and its Content-Type."""
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode()
    return head, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@dataclass
class Answer:
    status: int
    body: bytes
    sent: int       # body bytes the client got to send before the answer (or the close)


def stream_upload(base: str, path: str, head: bytes, size: int, *, headers: dict[str, str],
                  chunked: bool, declare: int | None = None, chunk: int = 64 * 1024) -> Answer:
    """POST ``head`` + ``size`` filler bytes, chunked or with a Content-Length (``declare``, or
    the true length); stop sending as soon as the server answers or closes."""
    host, port = base.rsplit("/", 1)[-1].split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {declare or len(head) + size}")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent, filler = 0, b"\x89" * chunk
    try:
        for piece in [head] + [filler] * (size // chunk):
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (or closed) early
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return Answer(*_read_answer(sock), sent=sent)


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]) if head else 0), body


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
