"""JSON errors with stable codes: ``{"error": {"code": ..., "message": ...}}``, one log line each, no traceback.

Codes (stable; clients may branch on them): ``bad_request`` (400: a body that cannot be parsed),
``unauthorized`` (401), ``not_found`` / ``class_not_found`` (404), ``method_not_allowed`` (405),
``label_exists``, ``gallery_empty``, ``not_calibrated`` (409), ``too_large`` / ``too_many_pixels`` (413),
``unsupported_media`` (415), ``invalid_request``, ``invalid_label``, ``invalid_metadata``, ``empty_file``,
``too_many_files``, ``unreadable_input``, ``invalid_input`` (422), ``busy`` (503: the gallery stayed locked
by another process), ``internal`` (500: a bug; the log has the details, the client only the code).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oneshot.errors import OneshotError

log = logging.getLogger("oneshot.service")


def setup_logging(level: int = logging.INFO) -> None:
    """Send the service's error lines to stderr (once), timestamped, one line each."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s oneshot.service: %(message)s"))
        log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False


class ApiError(Exception):
    """An error answered to the client: HTTP status, stable code, a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def respond(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer, and the one log line that goes with it."""
    level = logging.ERROR if status >= 500 else logging.WARNING
    log.log(level, "%s %s -> %d %s: %s", request.method, request.url.path, status, code, _one_line(message))
    return JSONResponse(body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media",
    422: "invalid_request",
}


def install(app: FastAPI, redact: list[str] | None = None) -> None:
    """Register the handlers that turn every exception into a JSON error; ``redact``: server paths (the
    gallery file) that the gallery's messages name and a client need not see."""
    hidden = sorted({p for p in (redact or []) if p}, key=len, reverse=True)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(OneshotError)
    async def _user(request: Request, exc: OneshotError) -> JSONResponse:
        # The gallery's own one-line messages are written for people already.
        message = str(exc)
        for p in hidden:
            message = message.replace(p, "the gallery")
        return respond(request, 422, "invalid_input", message.replace("gallery the gallery", "the gallery"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            if e.get("type") == "json_invalid":
                parts.append("the body is not valid JSON")
                continue
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return respond(request, 422, "invalid_request", "; ".join(parts) + " (see /docs for the expected fields)")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
        message = {
            404: f"no such endpoint {request.url.path}: see /docs for the API",
            405: f"{request.method} is not allowed on {request.url.path}: see /docs for the API",
            400: "the request body could not be parsed: send multipart/form-data (or JSON where documented) that is complete",
        }.get(exc.status_code, str(exc.detail))
        return respond(request, exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(sqlite3.OperationalError)
    async def _locked(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        if "locked" in str(exc) or "busy" in str(exc):
            return respond(
                request, 503, "busy", "the gallery is busy with another writer: retry in a moment", {"Retry-After": "1"}
            )
        return _internal(request, exc)


INTERNAL = "the service failed on this request; its log says why"


def _bug_line(method: str, path: str, exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    log.error("%s %s -> 500 internal: %s: %s%s", method, path, type(exc).__name__, _one_line(str(exc)), where)


def _internal(request: Request, exc: BaseException) -> JSONResponse:
    _bug_line(request.method, request.url.path, exc)
    return JSONResponse(body("internal", INTERNAL), status_code=500)


class CatchAllMiddleware:
    """Pure ASGI middleware: a bug anywhere below becomes a JSON 500 and one log line -- the exception goes no
    further, so neither the client nor the server's log sees a traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = [False]

        async def tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 -- the last line of defence
            _bug_line(scope.get("method", "?"), scope.get("path", "?"), exc)
            if not started[0]:
                payload = json.dumps(body("internal", INTERNAL)).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
