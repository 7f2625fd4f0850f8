"""The request-size guard: bodies over the limit are refused before they are parsed (413 ``too_large``), and a
multipart body that stops before its closing boundary is refused as truncated (400 ``bad_request``)."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException  # re-raised as is by FastAPI's body parsing

from oneshot.service.errors import body as error_body


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes (413 ``too_large``): at once from Content-Length, or as soon
    as a streamed body crosses the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = f"the request is larger than this service's limit of {self.limit} bytes: send a smaller file"
        try:
            too_long = declared is not None and int(declared) > self.limit
        except ValueError:
            too_long = False
        if too_long:
            logging.getLogger("oneshot.service").warning("%s %s -> 413 too_large: %s", scope["method"], scope["path"], too_big)
            payload = json.dumps(error_body("too_large", too_big)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        seen = [0]
        boundary = _boundary(dict(scope.get("headers") or []).get(b"content-type", b""))
        tail = [b""]

        async def counted() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen[0] += len(chunk)
                if seen[0] > self.limit:
                    raise HTTPException(413, too_big)
                if boundary:
                    tail[0] = (tail[0] + chunk)[-(len(boundary) + 8) :]
                    if (
                        not message.get("more_body", False)
                        and seen[0]
                        and not tail[0].rstrip(b"\r\n").endswith(b"--" + boundary + b"--")
                    ):
                        raise HTTPException(400, "truncated multipart body")
            return message

        await self.app(scope, counted, send)


def _boundary(content_type: bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, else None."""
    if not content_type.lower().startswith(b"multipart/"):
        return None
    for part in content_type.split(b";")[1:]:
        key, _, value = part.strip().partition(b"=")
        if key.lower() == b"boundary" and value:
            return value.strip(b'"')
    return None
