"""The HTTP API in process (FastAPI's TestClient): every route on a real gallery with the committed Conv-4
encoder and real Omniglot drawings, auth, limits, the malformed-request table, errors and batching."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.service_util import make_gallery, omniglot_drawings

from oneshot.service.app import create_app
from oneshot.service.config import ServiceConfig

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """The service sets one torch / FAISS thread for its process: give the rest of the suite its threads back."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


@pytest.fixture(scope="module")
def drawings(omniglot_dir: Path) -> dict[str, list[bytes]]:
    return omniglot_drawings(omniglot_dir, 4, 3)


@pytest.fixture(scope="module")
def template_gallery(tmp_path_factory: pytest.TempPathFactory, omniglot_dir: Path) -> Path:
    return make_gallery(tmp_path_factory.mktemp("tpl") / "t.gallery", omniglot_dir)


@pytest.fixture()
def gallery(template_gallery: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "g.gallery"
    dest.write_bytes(template_gallery.read_bytes())
    return dest


def client(gallery: Path, **kw) -> TestClient:
    kw.setdefault("token", TOKEN)
    return TestClient(create_app(ServiceConfig(gallery=str(gallery), **kw)))


def png(data: bytes, name: str = "x.png") -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, data, "image/png"))


def test_enrol_identify_verify_list_rename_forget(gallery: Path, drawings: dict[str, list[bytes]]) -> None:
    a, b, c, d = list(drawings)
    with client(gallery) as cl:
        assert cl.get("/v1/health").json() == {"status": "ok", "classes": 0, "modality": "image"}
        r = cl.post("/v1/identify", files=[png(drawings[a][0])])
        assert r.status_code == 409 and r.json()["error"]["code"] == "gallery_empty"
        for lab in (a, b, c):
            r = cl.post(
                "/v1/classes", data={"label": lab, "metadata": '{"desk": 3}'}, files=[png(drawings[lab][0])], headers=AUTH
            )
            assert r.status_code == 201, r.text
            rep = r.json()
            assert rep["label"] == lab and rep["created"] and rep["n_examples"] == 1 and isinstance(rep["warnings"], list)
        # refine a class with two more drawings in one request
        r = cl.post("/v1/classes", data={"label": a}, files=[png(drawings[a][1]), png(drawings[a][2])], headers=AUTH)
        assert r.status_code == 201 and r.json()["created"] is False and r.json()["n_examples"] == 3
        # identify two queries in one request: the direct Gallery call gives the same answer
        r = cl.post("/v1/identify", files=[png(drawings[b][1]), png(drawings[d][0])], data={"k": "2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["calibrated"] and body["false_accept_rate"]["target"] == 0.01
        assert [len(x["candidates"]) for x in body["results"]] == [2, 2]
        g = cl.app.state.worker.gallery
        direct = g.identify([drawings[b][1], drawings[d][0]], k=2)
        for got, want in zip(body["results"], direct, strict=True):
            assert got["label"] == (want.label or "unknown")
            assert got["candidates"][0]["label"] == want.candidates[0].label
            assert got["score"] == pytest.approx(want.score, abs=1e-5)
            assert got["threshold"] == pytest.approx(body["threshold"])
        assert body["results"][0]["candidates"][0]["label"] == b
        # verify: the genuine drawing scores as the direct call says
        r = cl.post("/v1/verify", data={"label": b}, files=[png(drawings[b][1])])
        assert r.status_code == 200 and r.json()["score"] == pytest.approx(direct[0].candidates[0].score, abs=1e-5)
        assert r.json()["accepted"] == (r.json()["score"] >= r.json()["threshold"])
        # listing and paging
        page = cl.get("/v1/classes", params={"offset": 1, "limit": 1}).json()
        assert page["total"] == 3 and [x["label"] for x in page["classes"]] == [b]
        one = cl.get(f"/v1/classes/{a}").json()
        assert one["n_examples"] == 3 and one["metadata"] == {"desk": 3}
        # rename, conflict, forget, missing
        assert cl.patch(f"/v1/classes/{a}", json={"label": "alice"}, headers=AUTH).json()["label"] == "alice"
        r = cl.patch(f"/v1/classes/{b}", json={"label": "alice"}, headers=AUTH)
        assert r.status_code == 409 and r.json()["error"]["code"] == "label_exists"
        assert cl.delete("/v1/classes/alice", headers=AUTH).json()["examples_removed"] == 3
        r = cl.get("/v1/classes/alice")
        assert r.status_code == 404 and r.json()["error"]["code"] == "class_not_found"
        info = cl.get("/v1/info").json()
        assert info["classes"] == 2 and info["dim"] == 64 and info["modality"] == "image" and info["service"]["writes_need_token"]
        metrics = cl.get("/metrics").text
        assert 'oneshot_requests_total{method="POST",route="/v1/classes",status="201"} 4.0' in metrics
        assert "oneshot_gallery_classes 2.0" in metrics and "oneshot_identify_batch_size_count" in metrics
    # every answered write is in the file
    from oneshot.gallery import Gallery

    with Gallery.open(gallery, create=False) as g:
        assert sorted(x.label for x in g.list()) == sorted([b, c])


def test_openapi_schema_lists_the_api(gallery: Path) -> None:
    with client(gallery) as cl:
        schema = cl.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/v1/health",
        "/v1/info",
        "/v1/classes",
        "/v1/classes/{label}",
        "/v1/identify",
        "/v1/verify",
        "/metrics",
    }
    assert set(schema["paths"]["/v1/classes/{label}"]) == {"get", "delete", "patch"}
    enrol = schema["paths"]["/v1/classes"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in enrol


def _png_claiming(width: int, height: int, real: bytes) -> bytes:
    """``real`` (a PNG) with its IHDR rewritten to claim width x height (valid CRC): a decompression bomb's header."""
    ihdr = real[8 + 8 : 8 + 8 + 13]
    ihdr = struct.pack(">II", width, height) + ihdr[8:]
    chunk = b"IHDR" + ihdr
    return real[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[8 + 25 :]


def _digest(gallery: Path) -> tuple[str, ...]:
    return tuple(
        hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-"
        for p in (gallery, gallery.with_name(gallery.name + "-wal"))
    )


def test_malformed_requests_leave_the_gallery_byte_identical(
    gallery: Path, drawings: dict[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    a = list(drawings)[0]
    good = drawings[a][0]
    bomb = _png_claiming(20000, 20000, good)
    boundary = "XyZ123"
    truncated = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\nbob\r\n--{boundary}\r\n'
        f'Content-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode() + good[:40]
    cases = [
        # (what, method, path, kwargs, status, code)
        ("no file", "post", "/v1/classes", dict(data={"label": "bob"}, headers=AUTH), 422, "invalid_request"),
        ("no label", "post", "/v1/classes", dict(files=[png(good)], headers=AUTH), 422, "invalid_request"),
        ("empty file", "post", "/v1/classes", dict(data={"label": "bob"}, files=[png(b"")], headers=AUTH), 422, "empty_file"),
        ("k not a number", "post", "/v1/identify", dict(data={"k": "many"}, files=[png(good)]), 422, "invalid_request"),
        ("k out of range", "post", "/v1/identify", dict(data={"k": "0"}, files=[png(good)]), 422, "invalid_request"),
        (
            "rename body not JSON",
            "patch",
            f"/v1/classes/{a}",
            dict(content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}),
            422,
            "invalid_request",
        ),
        ("rename label a number", "patch", f"/v1/classes/{a}", dict(json={"label": 5}, headers=AUTH), 422, "invalid_request"),
        (
            "10,000-character label",
            "post",
            "/v1/classes",
            dict(data={"label": "x" * 10000}, files=[png(good)], headers=AUTH),
            422,
            "invalid_label",
        ),
        (
            "label with ../",
            "post",
            "/v1/classes",
            dict(data={"label": "../../etc/passwd"}, files=[png(good)], headers=AUTH),
            422,
            "invalid_label",
        ),
        (
            "label with a control character",
            "post",
            "/v1/classes",
            dict(data={"label": "bob\x07"}, files=[png(good)], headers=AUTH),
            422,
            "invalid_label",
        ),
        (
            "blank label",
            "post",
            "/v1/classes",
            dict(data={"label": "   "}, files=[png(good)], headers=AUTH),
            422,
            "invalid_label",
        ),
        (
            "metadata not an object",
            "post",
            "/v1/classes",
            dict(data={"label": "bob", "metadata": "[1]"}, files=[png(good)], headers=AUTH),
            422,
            "invalid_metadata",
        ),
        (
            "truncated multipart",
            "post",
            "/v1/classes",
            dict(content=truncated, headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}),
            400,
            "bad_request",
        ),
        (
            "non-image bytes named .png",
            "post",
            "/v1/classes",
            dict(data={"label": "bob"}, files=[png(b"%PDF-1.4 not a picture at all")], headers=AUTH),
            415,
            "unsupported_media",
        ),
        (
            "image magic, broken header",
            "post",
            "/v1/classes",
            dict(data={"label": "bob"}, files=[png(good[:20])], headers=AUTH),
            415,
            "unsupported_media",
        ),
        (
            "PNG claiming 20000x20000",
            "post",
            "/v1/classes",
            dict(data={"label": "bob"}, files=[png(bomb)], headers=AUTH),
            413,
            "too_many_pixels",
        ),
        ("identify with the same bomb", "post", "/v1/identify", dict(files=[png(bomb)]), 413, "too_many_pixels"),
        (
            "body over the byte limit",
            "post",
            "/v1/classes",
            dict(data={"label": "bob"}, files=[png(good + b"\0" * 70000)], headers=AUTH),
            413,
            "too_large",
        ),
        ("too many files", "post", "/v1/identify", dict(files=[png(good)] * 5), 422, "too_many_files"),
        (
            "inline text for an image gallery",
            "post",
            "/v1/identify",
            dict(data={"value": "a sentence"}),
            415,
            "unsupported_media",
        ),
        ("missing token", "post", "/v1/classes", dict(data={"label": "bob"}, files=[png(good)]), 401, "unauthorized"),
        (
            "wrong token",
            "post",
            "/v1/classes",
            dict(data={"label": "bob"}, files=[png(good)], headers={"Authorization": "Bearer " + "y" * 27}),
            401,
            "unauthorized",
        ),
        (
            "not a bearer token",
            "delete",
            f"/v1/classes/{a}",
            dict(headers={"Authorization": "Basic Ym9iOmJvYg=="}),
            401,
            "unauthorized",
        ),
        ("forget a class that is not there", "delete", "/v1/classes/nobody", dict(headers=AUTH), 404, "class_not_found"),
        ("verify without a label", "post", "/v1/verify", dict(files=[png(good)]), 422, "invalid_request"),
        ("verify two files", "post", "/v1/verify", dict(data={"label": a}, files=[png(good), png(good)]), 422, "invalid_request"),
        ("unknown route", "get", "/v1/nothing", {}, 404, "not_found"),
        ("wrong method", "put", "/v1/identify", {}, 405, "method_not_allowed"),
    ]
    with client(gallery, max_upload_bytes=64 * 1024, max_files=4) as cl:
        assert cl.post("/v1/classes", data={"label": a}, files=[png(good)], headers=AUTH).status_code == 201
        before = _digest(gallery)
        caplog.set_level(logging.WARNING, logger="oneshot.service")
        for what, method, path, kwargs, status, code in cases:
            caplog.clear()
            r = (
                getattr(cl, method if method != "put" else "put")(path, **kwargs)
                if method != "delete"
                else cl.delete(path, **kwargs)
            )
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), f"{what}: {r.status_code} {r.text}"
            msg = r.json()["error"]["message"]
            assert msg and "\n" not in msg and "Traceback" not in msg and str(gallery) not in msg, what
            lines = [rec for rec in caplog.records if rec.name == "oneshot.service"]
            assert len(lines) == 1 and f"-> {status} {code}" in lines[0].getMessage(), what
            assert TOKEN not in caplog.text, what
            assert _digest(gallery) == before, f"{what} changed the gallery file"


def test_private_reads_need_the_token(gallery: Path, drawings: dict[str, list[bytes]]) -> None:
    with client(gallery, private_reads=True) as cl:
        for path in ("/v1/info", "/v1/classes", "/metrics"):
            assert cl.get(path).status_code == 401
            assert cl.get(path, headers=AUTH).status_code == 200
        assert cl.get("/v1/health").status_code == 200 and cl.get("/").status_code == 200


def test_open_writes_without_a_token(gallery: Path, drawings: dict[str, list[bytes]]) -> None:
    a = list(drawings)[0]
    with client(gallery, token=None) as cl:
        assert cl.post("/v1/classes", data={"label": a}, files=[png(drawings[a][0])]).status_code == 201
        assert cl.get("/v1/info").json()["service"]["writes_need_token"] is False


def test_a_bug_is_a_json_500_with_one_log_line_and_no_traceback(
    gallery: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with client(gallery) as cl:

        def broken(self):  # noqa: ANN001
            raise RuntimeError("secret internal detail")

        monkeypatch.setattr(type(cl.app.state.worker.gallery), "list", broken)
        caplog.set_level(logging.WARNING, logger="oneshot.service")
        r = cl.get("/v1/classes")
    assert r.status_code == 500 and r.json() == {
        "error": {"code": "internal", "message": "the service failed on this request; its log says why"}
    }
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "oneshot.service"]
    assert len(lines) == 1 and "RuntimeError: secret internal detail" in lines[0] and "\n" not in lines[0]


def test_page_and_static_files_are_served(gallery: Path) -> None:
    with client(gallery) as cl:
        page = cl.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for ref in ("/static/app.js", "/static/style.css"):
            assert ref in page.text and cl.get(ref).status_code == 200
        # every control on the page has a label
        import re

        ids = set(re.findall(r'<(?:input|textarea|select)[^>]*\bid="([^"]+)"', page.text))
        labelled = set(re.findall(r'<label for="([^"]+)"', page.text))
        assert ids and ids <= labelled


def test_concurrent_identify_requests_are_batched(gallery: Path, drawings: dict[str, list[bytes]]) -> None:
    keys = list(drawings)
    app = create_app(ServiceConfig(gallery=str(gallery), token=TOKEN, max_wait_ms=200, max_batch=64))
    g = app.state.worker.gallery
    g.enrol(keys[0], [drawings[keys[0]][0]])
    g.enrol(keys[1], [drawings[keys[1]][0]])
    queries = [drawings[k][i] for k in keys for i in (1, 2)]
    want = [r.to_dict() for r in g.identify(queries, k=2)]

    async def run() -> list[dict]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
                rs = await asyncio.gather(*[ac.post("/v1/identify", files=[png(q)], data={"k": "2"}) for q in queries])
                metrics = (await ac.get("/metrics")).text
        return [r.json() for r in rs], metrics

    got, metrics = asyncio.run(run())
    for g_, w in zip(got, want, strict=True):
        assert g_["results"][0]["label"] == w["label"]
        assert [c["label"] for c in g_["results"][0]["candidates"]] == [c["label"] for c in w["candidates"]]
        assert g_["results"][0]["score"] == pytest.approx(w["score"], abs=1e-5)
    batches = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("oneshot_identify_batch_size_count"))
    )
    assert 1 <= batches < len(queries)  # 8 concurrent requests shared fewer embedder calls


def test_oneshot_serve_starts_and_says_what_it_serves(gallery: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from tests.service_util import free_port
    from typer.testing import CliRunner

    from oneshot.cli import app as cli

    runner = CliRunner()
    help_text = runner.invoke(cli, ["serve", "--help"], terminal_width=200).output
    for opt in (
        "--gallery",
        "--host",
        "--port",
        "--token-file",
        "--private-reads",
        "--max-upload-bytes",
        "--max-pixels",
        "--max-files",
        "--batching",
        "--max-batch",
        "--max-wait-ms",
        "--threads",
        "--workers",
    ):
        assert opt in help_text, opt
    r = runner.invoke(cli, ["serve", "--gallery", str(tmp_path / "missing.gallery")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "oneshot gallery create" in r.output
    assert runner.invoke(cli, ["serve", "--gallery", str(gallery), "--token", "abc"]).exit_code == 2  # never on the command line
    r = runner.invoke(cli, ["serve", "--gallery", str(gallery), "--host", "0.0.0.0"], env={"ONESHOT_TOKEN": ""})
    assert r.exit_code == 2 and "without a token" in r.output
    bad = tmp_path / "short.token"
    bad.write_text("short\n")
    r = runner.invoke(cli, ["serve", "--gallery", str(gallery), "--token-file", str(bad)])
    assert r.exit_code == 2 and "at least 16" in r.output

    port = free_port()
    env = dict(os.environ, ONESHOT_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from oneshot.cli import app; app()", "serve", "--gallery", str(gallery), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/classes", data={"label": "x"}).status_code == 401
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert (
        f"http://127.0.0.1:{port}/" in out and "omniglot-lake" in out and "classes: 0" in out and "writes need the token" in out
    )
    assert TOKEN not in out + err
