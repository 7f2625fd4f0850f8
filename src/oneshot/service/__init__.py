"""The HTTP service and its web page: the gallery's operations over HTTP (``oneshot serve``).

A thin layer over :class:`oneshot.gallery.Gallery` -- every enrolment, search and edit is a call to the
gallery's public API, which owns the transactions; the service adds what HTTP needs: token auth
(:mod:`.auth`), bounded and sniffed uploads (:mod:`.limits`, :mod:`.uploads`), JSON errors with stable codes
(:mod:`.errors`), one thread that owns the gallery (:mod:`.worker`), dynamic batching of identify
(:mod:`.batching`), Prometheus metrics (:mod:`.metrics`), the routes (:mod:`.app`) and the page
(``static/``). See ``docs/service.md``.
"""

from __future__ import annotations

from oneshot.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def create_app(config: ServiceConfig):  # noqa: ANN201 -- FastAPI is imported lazily
    """Build the FastAPI application for ``config`` (see :func:`oneshot.service.app.create_app`)."""
    from oneshot.service.app import create_app as _create

    return _create(config)
