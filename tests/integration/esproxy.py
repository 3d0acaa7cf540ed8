"""A loopback proxy in front of the real Elasticsearch that answers bulk documents the way an
overloaded node does (a 200 whose items say 429 es_rejected_execution_exception), on demand;
every other request, and every document it lets through, goes to the real node unchanged."""
from __future__ import annotations

import http.client
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Overload:
    """Which bulk documents are refused: each the first ``times`` times it is sent (-1: every
    time), and only those of ``index`` (a concrete index) and whose id is in ``ids`` when they
    are given. ``seen`` counts the _bulk requests, ``refused`` the documents refused."""
    times: int = 0
    index: str | None = None
    ids: set[str] | None = None
    seen: int = 0
    refused: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, meta: dict) -> bool:
        """Whether this sending of the document (its bulk action's metadata) is refused."""
        index, doc_id = str(meta.get("_index")), str(meta.get("_id"))
        if (self.index is not None and index != self.index) or (self.ids is not None and doc_id not in self.ids):
            return False
        with self.lock:
            n = self.sent[doc_id] = self.sent.get(doc_id, 0) + 1
            refused = self.times < 0 or n <= self.times
            self.refused += refused
            return refused


def _actions(body: bytes) -> list[tuple[dict, bytes | None]]:
    """(action line, its source line or None) of an NDJSON bulk body."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    out, i = [], 0
    while i < len(lines):
        action = json.loads(lines[i])
        has_source = next(iter(action)) != "delete"
        out.append((action, lines[i + 1] if has_source else None))
        i += 2 if has_source else 1
    return out


def _refused(action: dict) -> dict:
    op, meta = next(iter(action.items()))
    return {op: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 429,
                 "error": {"type": "es_rejected_execution_exception",
                           "reason": "rejected execution of coordinating operation (the test's proxy)"}}}


def _handler(target: str, overload: Overload) -> type[BaseHTTPRequestHandler]:
    parts = urlsplit(target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                return answer.status, answer.getheaders(), answer.read()
            finally:
                conn.close()

        def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if body and self.command in ("POST", "PUT") and urlsplit(self.path).path.endswith("/_bulk"):
                return self._bulk(body)
            self._reply(*self._forward(body))

        def _bulk(self, body: bytes) -> None:
            actions = _actions(body)
            with overload.lock:
                overload.seen += 1
            refuse = [overload.refuse(next(iter(a.values()))) for a, _ in actions]
            passed = [(a, s) for (a, s), r in zip(actions, refuse) if not r]
            status, headers, forwarded = 200, [("Content-Type", "application/json"),
                                               ("X-Elastic-Product", "Elasticsearch")], b""
            items: list[dict] = []
            if passed:
                sent = b"".join(json.dumps(a).encode() + b"\n" + (s + b"\n" if s is not None else b"")
                                for a, s in passed)
                status, headers, forwarded = self._forward(sent)
                if status != 200:
                    return self._reply(status, headers, forwarded)
                items = json.loads(forwarded)["items"]
            merged = [_refused(a) if r else items.pop(0) for (a, _), r in zip(actions, refuse)]
            self._reply(200, headers, json.dumps({"took": 1, "errors": True, "items": merged}).encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's names

    return Handler


@contextmanager
def overload_proxy(target: str, overload: Overload) -> Iterator[str]:
    """The proxy's URL while it runs, in front of the Elasticsearch at ``target``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target, overload))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
