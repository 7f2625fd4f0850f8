"""The FastAPI application: routes over the gallery's public API (``create_app``).

Every gallery call runs on the gallery's own thread (:class:`~oneshot.service.worker.GalleryWorker`);
identify goes through the :class:`~oneshot.service.batching.IdentifyBatcher` when batching is on. Writes
(enrol, rename, forget) need the bearer token when one is configured; reads need it with ``private_reads``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from oneshot.service import errors
from oneshot.service.auth import check_token
from oneshot.service.batching import IdentifyBatcher, identify_batch
from oneshot.service.config import ServiceConfig
from oneshot.service.errors import ApiError
from oneshot.service.limits import BodyLimitMiddleware
from oneshot.service.metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from oneshot.service.uploads import check_label, parse_metadata, prepare_examples
from oneshot.service.worker import GalleryWorker

STATIC = Path(__file__).resolve().parent / "static"
API_VERSION = "v1"
MAX_K = 50
MAX_PAGE = 1000


Files = Annotated[list[UploadFile], File(description="Example files (images for an image gallery); content is sniffed.")]
Values = Annotated[list[str], Form(description="Inline examples (text, SMILES) for galleries of those modalities.")]


class RenameBody(BaseModel):
    """``PATCH /v1/classes/{label}``: the class's new label."""

    label: str = Field(min_length=1, max_length=1000, description="The new label.")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _far(info: dict[str, Any]) -> dict[str, Any] | None:
    """The false-accept rates the current thresholds were calibrated for (None when set by hand or unset)."""
    th, cal = info.get("threshold") or {}, info.get("calibration")
    if th.get("source") != "calibrated" or not cal:
        return None
    m = cal.get("measured", {})
    return {
        "target": cal.get("target_far"),
        "identify_measured": m.get("identify_far"),
        "verify_measured": m.get("verify_far"),
        "gallery_size": cal.get("gallery_size"),
    }


def _class_dict(c: Any) -> dict[str, Any]:
    return {
        "label": c.label,
        "n_examples": c.n_examples,
        "created": c.created,
        "updated": c.updated,
        "adaptations": c.adaptations,
        "metadata": c.metadata,
    }


def _find_class(g: Any, label: str) -> Any:
    for c in g.list():
        if c.label == label:
            return c
    raise ApiError(404, "class_not_found", f"no class {label!r} in this gallery: see GET /v1/classes")


# ---------------------------------------------------------------------- functions run on the gallery thread
def _enrol(g: Any, label: str, examples: list[Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    report = g.enrol(label, examples, metadata=metadata).to_dict()
    report["gallery_classes"] = len(g)
    return report


def _forget(g: Any, label: str) -> dict[str, Any]:
    _find_class(g, label)
    return {"label": label, "examples_removed": g.forget(label), "gallery_classes": len(g)}


def _rename(g: Any, old: str, new: str) -> dict[str, Any]:
    _find_class(g, old)
    if old != new and any(c.label == new for c in g.list()):
        raise ApiError(409, "label_exists", f"class {new!r} already exists: forget it first or choose another name")
    if old != new:
        g.rename(old, new)
    return _class_dict(_find_class(g, new))


def _identify(g: Any, examples: list[Any], k: int) -> list[Any]:
    return identify_batch(g, [(examples, k)])[0]


class _FarCache:
    """The calibrated false-accept rates, re-read from the gallery at most every ``ttl`` seconds (identify
    answers carry them; calibration changes rarely, and reading the record on every request would queue
    on the gallery thread)."""

    def __init__(self, worker: GalleryWorker, ttl: float = 2.0) -> None:
        self.worker, self.ttl, self.at = worker, ttl, -1e9
        self.value: dict[str, Any] | None = None

    async def get(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if now - self.at > self.ttl:
            self.value = await self.worker.run(lambda g: _far(g.info()))
            self.at = now
        return self.value


def _verify(g: Any, example: Any, label: str) -> dict[str, Any]:
    _find_class(g, label)
    if g.thresholds()["verify"] is None:
        raise ApiError(
            409,
            "not_calibrated",
            "the gallery has no verify threshold: calibrate it "
            "(`oneshot gallery calibrate`) or set one (`oneshot gallery threshold`)",
        )
    out = g.verify(example, label).to_dict()
    out["false_accept_rate"] = _far(g.info())
    return out


def _info(g: Any) -> dict[str, Any]:
    info = g.info()
    keep = (
        "classes",
        "examples",
        "dim",
        "encoder",
        "fingerprint",
        "threshold",
        "calibration",
        "index",
        "rejection_score",
        "generation",
        "created",
        "warning",
    )
    out = {k: info[k] for k in keep if k in info}
    out["modality"] = g.modality
    out["thresholds"] = g.thresholds()
    out["false_accept_rate"] = _far(info)
    return out


# ---------------------------------------------------------------------- the application
def create_app(config: ServiceConfig, worker: GalleryWorker | None = None) -> FastAPI:
    """The service for ``config`` (the gallery is opened now, on the gallery thread).

    Args:
        config: the service's options.
        worker: an already opened gallery thread (tests); None opens ``config.gallery``.
    """
    worker = worker or GalleryWorker(config.gallery, config.encoder, config.threads)
    metrics = Metrics()
    far_cache = _FarCache(worker)
    batcher = IdentifyBatcher(worker, config.max_batch, config.max_wait_ms, metrics.batch.observe) if config.batching else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if batcher is not None:
            batcher.start()
        metrics.classes.set(await worker.run(len))
        try:
            yield
        finally:
            if batcher is not None:
                await batcher.stop()
            worker.close()

    app = FastAPI(
        title="oneshot",
        version=API_VERSION,
        lifespan=lifespan,
        description="Enrol classes from one example and recognise them: the oneshot gallery over HTTP. "
        'Errors are JSON `{"error": {"code", "message"}}` with a stable code.',
    )
    app.state.config, app.state.worker, app.state.metrics = config, worker, metrics
    errors.install(app, redact=[config.gallery, str(Path(config.gallery).resolve())])

    def writer(request: Request) -> None:
        check_token(config.token, request.headers.get("authorization"))

    def reader(request: Request) -> None:
        if config.private_reads:
            check_token(config.token, request.headers.get("authorization"))

    Write = Depends(writer)
    Read = Depends(reader)

    async def examples_of(files: list[UploadFile], values: list[str]) -> list[Any]:
        raw = [(f.filename or "upload", await f.read()) for f in files]
        return prepare_examples(raw, values, worker.embedder, worker.modality, config.max_pixels, config.max_files)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get(f"/{API_VERSION}/health", summary="Liveness: the gallery is open")
    async def health() -> dict[str, Any]:
        n = await worker.run(len)
        metrics.classes.set(n)
        return {"status": "ok", "classes": n, "modality": worker.modality}

    @app.get(
        f"/{API_VERSION}/info",
        summary="The gallery: encoder fingerprint, dimension, thresholds, calibration, size",
        dependencies=[Read],
    )
    async def info() -> dict[str, Any]:
        out = await worker.run(_info)
        metrics.classes.set(out["classes"])
        out["service"] = {
            "writes_need_token": config.token is not None,
            "reads_need_token": config.private_reads,
            "max_upload_bytes": config.max_upload_bytes,
            "max_pixels": config.max_pixels,
            "max_files": config.max_files,
            "batching": config.batching,
            "max_batch": config.max_batch,
            "max_wait_ms": config.max_wait_ms,
            "threads": config.threads,
        }
        return out

    @app.get(
        f"/{API_VERSION}/classes", summary="The enrolled classes, in enrolment order, one page at a time", dependencies=[Read]
    )
    async def list_classes(
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    ) -> dict[str, Any]:
        classes = await worker.run(lambda g: g.list())
        return {
            "total": len(classes),
            "offset": offset,
            "limit": limit,
            "classes": [_class_dict(c) for c in classes[offset : offset + limit]],
        }

    @app.get(f"/{API_VERSION}/classes/{{label}}", summary="One class", dependencies=[Read])
    async def get_class(label: str) -> dict[str, Any]:
        label = check_label(label)
        return _class_dict(await worker.run(_find_class, label))

    @app.post(
        f"/{API_VERSION}/classes",
        status_code=201,
        dependencies=[Write],
        summary="Enrol a class from one or more examples (an existing label is refined); the report holds warnings",
    )
    async def enrol(
        label: Annotated[str, Form(description="The class label (no '/', '\\', '..' or control characters).")],
        files: Files = [],  # noqa: B006 -- FastAPI copies defaults
        value: Values = [],  # noqa: B006
        metadata: Annotated[str | None, Form(description="A JSON object kept with the class.")] = None,
    ) -> dict[str, Any]:
        label = check_label(label)
        meta = parse_metadata(metadata)
        examples = await examples_of(files, value)
        report = await worker.run(_enrol, label, examples, meta)
        metrics.classes.set(report["gallery_classes"])
        return report

    @app.delete(f"/{API_VERSION}/classes/{{label}}", summary="Forget a class and its examples", dependencies=[Write])
    async def forget(label: str) -> dict[str, Any]:
        out = await worker.run(_forget, check_label(label))
        metrics.classes.set(out["gallery_classes"])
        return out

    @app.patch(f"/{API_VERSION}/classes/{{label}}", summary="Rename a class", dependencies=[Write])
    async def rename(label: str, body: RenameBody) -> dict[str, Any]:
        return await worker.run(_rename, check_label(label), check_label(body.label, "new label"))

    @app.post(
        f"/{API_VERSION}/identify",
        dependencies=[Read],
        summary="The best class of each example, or 'unknown' below the calibrated threshold, with the top-k candidates",
    )
    async def identify(
        files: Files = [],  # noqa: B006
        value: Values = [],  # noqa: B006
        k: Annotated[int, Form(ge=1, le=MAX_K, description="How many candidates to return.")] = 5,
    ) -> dict[str, Any]:
        examples = await examples_of(files, value)
        if batcher is not None:
            res = await batcher.identify(examples, k)
        else:
            res = await worker.run(_identify, examples, k)
        results = []
        for r in res:
            d = r.to_dict()
            d["score"] = _finite(d["score"])
            results.append(d)
        threshold = res[0].threshold if res else None
        return {
            "results": results,
            "threshold": threshold,
            "calibrated": threshold is not None,
            "false_accept_rate": await far_cache.get() if threshold is not None else None,
            "score_kind": res[0].score_kind if res else None,
        }

    @app.post(
        f"/{API_VERSION}/verify",
        dependencies=[Read],
        summary="Accept or reject one example as a claimed class against the calibrated verify threshold",
    )
    async def verify(
        label: Annotated[str, Form(description="The claimed class.")],
        files: Files = [],  # noqa: B006
        value: Values = [],
    ) -> dict[str, Any]:  # noqa: B006
        label = check_label(label)
        examples = await examples_of(files, value)
        if len(examples) != 1:
            raise ApiError(422, "invalid_request", f"verify takes exactly one example, got {len(examples)}")
        return await worker.run(_verify, examples[0], label)

    @app.get("/metrics", summary="Prometheus metrics (text format)", dependencies=[Read])
    async def prometheus() -> Response:
        metrics.classes.set(await worker.run(len))
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimitMiddleware, limit=config.max_upload_bytes)
    app.add_middleware(errors.CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``oneshot serve --workers N``): configuration from the environment."""
    errors.setup_logging()
    return create_app(ServiceConfig.from_env())


__all__ = ["create_app", "app_from_env", "JSONResponse"]
