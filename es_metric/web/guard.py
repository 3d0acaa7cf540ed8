"""Admission control in front of the HTTP API.

``RequestGuard`` is a pure ASGI middleware: FastAPI resolves ``File``/``Form`` parameters, and
so spools an upload to a temporary file, before any dependency runs; checking the key or the
size there is too late. The guard checks ``X-API-Key`` from the headers before the app reads a
byte, refuses a ``Content-Length`` over the limit up front and counts the bytes of every body
(chunked ones too) as they arrive, answering 413 the moment the limit is crossed. Its refusals
close the connection, so the client stops sending.

``SearchSlots`` runs searches (decode, embed, Elasticsearch round trips) in worker threads, at
most ``concurrency`` at a time, with up to ``queue`` more waiting; past that a search gets 503
with ``Retry-After``. The event loop stays free for every other request.
"""
from __future__ import annotations

import hmac
from typing import Callable, TypeVar

import anyio
import anyio.to_thread
from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")
PUBLIC_PATHS = frozenset({"/", "/api/health", "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and the text fields beside the image


def key_matches(expected: str | None, given: str | bytes | None) -> bool:
    """True when no key is configured or ``given`` equals it (constant-time, any bytes)."""
    if not expected:
        return True
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given or b"", expected.encode("utf-8", "surrogateescape"))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body is over the limit."""


class RequestGuard:
    """Key check before any body is read; body limit enforced while the body streams in."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if not is_public(scope["path"]) and not key_matches(self.api_key, headers.get(b"x-api-key")):
            return await _refuse(scope, receive, send, 401, "missing or wrong X-API-Key")
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await _refuse(scope, receive, send, 400, "Content-Length is not a number")
        if length is not None and int(length) > self.max_body:
            return await _refuse(scope, receive, send, 413, self._too_large(int(length)))
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        read, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal read, over
            if over:
                raise _BodyTooLarge()
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.max_body:
                over = True
                raise _BodyTooLarge()
            return message

        async def replaced(message: Message) -> None:
            nonlocal started
            if over:  # the app's answer to the interrupted body; ours follows
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, replaced)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _refuse(scope, receive, send, 413, self._too_large(read))

    def _too_large(self, size: int) -> str:
        return f"request body (at least {size} bytes) is over the {self.max_body}-byte limit"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)


class SearchSlots:
    """Blocking searches in worker threads: ``concurrency`` at once, ``queue`` waiting, else 503."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, concurrency))
        self.queue, self.in_flight = max(0, queue), 0

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self.in_flight >= self.limiter.total_tokens + self.queue:
            raise HTTPException(503, f"{self.in_flight} searches are running or waiting; "
                                     "try again shortly", headers={"Retry-After": "1"})
        self.in_flight += 1  # one event loop: no lock needed
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self.in_flight -= 1
