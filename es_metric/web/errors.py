"""Every error the API returns is JSON with an ``error`` field (and a ``hint`` when there is
one), with a status that says whose fault it was: 4xx the request's, 502 Elasticsearch answered
with a server error, 503 Elasticsearch or the server is unavailable right now. No stack traces."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (ClusterError, ClusterUnavailable, ConfigError, EsmError, ImageError,
                      IndexStateError, ModelError, SearchError)

log = logging.getLogger(__name__)
STATUS = {ImageError: 422, SearchError: 400, ConfigError: 400, IndexStateError: 404,
          ClusterError: 502, ClusterUnavailable: 503, ModelError: 503}
RETRY_AFTER_S = "5"


def status_of(exc: EsmError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)


def validation_message(exc: RequestValidationError) -> str:
    """``k: Input should be ...; page: ...`` (the parameter and the rule, never the input)."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(EsmError)
    async def esm_error(_req: Request, exc: EsmError) -> JSONResponse:
        status = status_of(exc)
        headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
        return JSONResponse({"error": exc.message, "hint": exc.hint,
                             "reason": getattr(exc, "reason", None)}, status_code=status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)
