"""``oneshot serve``'s checks before it listens and what it hands uvicorn (:mod:`oneshot.service.cli`, with
``uvicorn.run`` replaced so no port is opened), and :class:`ServiceConfig`'s bounds, token sources and its
round trip through the environment to worker processes (:mod:`oneshot.service.config`)."""

from __future__ import annotations

import json

import pytest
from gallery_util import make_checkpoint
from typer.testing import CliRunner

from oneshot import Gallery
from oneshot.cli import app
from oneshot.errors import OneshotError
from oneshot.service import ServiceConfig, create_app
from oneshot.service.config import CONFIG_ENV, TOKEN_ENV, load_token

TOKEN = "a-token-of-at-least-16-chars"


@pytest.fixture(autouse=True)
def _restore_threads():
    """Serving sets one torch / FAISS thread: give the rest of the suite its threads back."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


@pytest.fixture()
def gallery(tmp_path):
    path = tmp_path / "g.db"
    with Gallery.open(path, encoder=str(make_checkpoint(tmp_path / "enc.safetensors", 0))):
        pass
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_upload_bytes", 1023, "at least 1024"),
        ("max_pixels", 0, "max-pixels"),
        ("max_files", 1001, "max-files"),
        ("max_batch", 0, "max-batch"),
        ("max_wait_ms", 1000.5, "max-wait-ms"),
        ("threads", 257, "threads"),
        ("private_reads", True, "needs a token"),
    ],
)
def test_config_bounds(field, value, message):
    with pytest.raises(OneshotError, match=message):
        ServiceConfig(gallery="g.db", **{field: value})


def test_token_from_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert load_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert load_token(None) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(OneshotError, match=f"token in {TOKEN_ENV} must be at least 16"):
        load_token(None)
    f = tmp_path / "token"
    with pytest.raises(OneshotError, match="does not exist"):
        load_token(f)
    f.write_text(TOKEN + "\n")
    assert load_token(f) == TOKEN  # the file wins over the environment
    f.write_bytes(b"\xff\xfe not utf-8 at all")
    with pytest.raises(OneshotError, match="cannot read token file .*UnicodeDecodeError"):
        load_token(f)
    f.write_text("has a space inside it ok")
    with pytest.raises(OneshotError, match="without spaces"):
        load_token(f)


def test_config_travels_to_workers_without_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(OneshotError, match="oneshot serve"):
        ServiceConfig.from_env()
    f = tmp_path / "token"
    f.write_text(TOKEN)
    cfg = ServiceConfig(gallery="g.db", token=TOKEN, token_file=str(f), private_reads=True, max_batch=8)
    env = cfg.to_env()
    assert TOKEN not in env and json.loads(env)["token_file"] == str(f)
    monkeypatch.setenv(CONFIG_ENV, env)
    assert ServiceConfig.from_env() == cfg  # the worker re-reads the token from the file


def test_create_app_from_the_package_serves_the_gallery(gallery):
    from fastapi.testclient import TestClient

    with TestClient(create_app(ServiceConfig(gallery=str(gallery)))) as c:
        assert c.get("/v1/health").json() == {"status": "ok", "classes": 0, "modality": "image"}


def _serve(*args: str):
    return CliRunner().invoke(app, ["serve", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--port", "0"], "not a TCP port"),
        (["--port", "65536"], "not a TCP port"),
        (["--host", "0.0.0.0"], "without a token"),
        (["--max-files", "0"], "max-files"),
    ],
)
def test_serve_refuses_bad_options_before_listening(gallery, monkeypatch, args, message):
    import uvicorn

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    r = _serve("--gallery", str(gallery), *args)
    assert r.exit_code == 2 and message in r.output, r.output
    r = _serve("--gallery", str(gallery.with_name("missing.db")))
    assert r.exit_code == 2 and "does not exist" in r.output


def test_serve_hands_uvicorn_the_app_or_the_factory(gallery, tmp_path, monkeypatch):
    import uvicorn
    from fastapi.testclient import TestClient

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    r = _serve("--gallery", str(gallery), "--port", "8123", "--no-batching")
    assert r.exit_code == 0, r.output
    assert f"serving {gallery} at http://127.0.0.1:8123/" in r.output
    assert "classes: 0" in r.output and "writes are OPEN" in r.output and "batching off" in r.output
    (served, kw) = calls.pop()
    assert kw["port"] == 8123 and kw["host"] == "127.0.0.1"
    with TestClient(served) as c:  # the app itself, on the gallery
        assert c.get("/v1/health").json()["status"] == "ok"

    f = tmp_path / "token"
    f.write_text(TOKEN)
    monkeypatch.setenv(CONFIG_ENV, "")  # so that the value serve sets is undone after the test
    r = _serve("--gallery", str(gallery), "--host", "::1", "--workers", "2", "--token-file", str(f), "--private-reads")
    assert r.exit_code == 0, r.output
    assert "http://[::1]:8000/" in r.output and "writes need the token" in r.output and "workers: 2" in r.output
    (target, kw) = calls.pop()
    assert target == "oneshot.service.app:app_from_env" and kw["factory"] and kw["workers"] == 2
    cfg = ServiceConfig.from_env()  # what each worker process reads
    assert cfg.gallery == str(gallery.resolve()) and cfg.token == TOKEN and cfg.private_reads
