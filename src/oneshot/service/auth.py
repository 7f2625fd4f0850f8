"""Bearer-token checks, compared in constant time (``hmac.compare_digest``)."""

from __future__ import annotations

import hmac

from oneshot.service.errors import ApiError


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def check_token(expected: str | None, header: str | None) -> None:
    """Refuse (401 ``unauthorized``) unless the header carries ``expected``; nothing to check when None."""
    if expected is None:
        return
    given = bearer(header)
    if given is None:
        raise ApiError(401, "unauthorized", "this operation needs the service's token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")):
        raise ApiError(401, "unauthorized", "the token is wrong: use the token the service was started with")
