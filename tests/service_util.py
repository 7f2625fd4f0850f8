"""Helpers shared by the service tests (not a test module): real Omniglot drawings, a calibrated gallery
with the committed Conv-4 encoder, and real uvicorn servers in child processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENCODER = "omniglot-lake"  # the shipped ProtoNet Conv-4 (src/oneshot/weights/protonet_conv4_lake.safetensors)


def omniglot_drawings(data_dir: Path, n_chars: int, per_char: int, skip: int = 0) -> dict[str, list[bytes]]:
    """PNG bytes of ``per_char`` drawings of ``n_chars`` evaluation-set characters (after skipping ``skip``)."""
    out: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(data_dir / "omniglot" / "images_evaluation.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        by_char: dict[str, list[str]] = {}
        for n in names:
            by_char.setdefault(n.rsplit("/", 1)[0], []).append(n)
        for char in sorted(by_char)[skip : skip + n_chars]:
            key = char.split("/", 1)[1].replace("/", "-")
            out[key] = [z.read(n) for n in by_char[char][:per_char]]
    return out


def make_gallery(path: Path, data_dir: Path, calibrate: bool = True) -> Path:
    """An empty gallery on the committed Lake-split Conv-4, calibrated (target FAR 0.01) on 12 evaluation
    characters that the tests never enrol (characters 200-211)."""
    from oneshot.gallery import Gallery

    with Gallery.open(path, encoder=ENCODER) as g:
        if calibrate:
            val = omniglot_drawings(data_dir, 12, 6, skip=200)
            ex = [b for bs in val.values() for b in bs]
            labels = np.repeat(np.arange(len(val)), 6)
            g.calibrate(g.embed(ex), labels, target_far=0.01, gallery_size=10)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(gallery: str, port: int, token: str | None, extra: dict) -> None:  # pragma: no cover - child process
    import uvicorn

    from oneshot.service.app import create_app
    from oneshot.service.config import ServiceConfig
    from oneshot.service.errors import setup_logging

    setup_logging()
    app = create_app(ServiceConfig(gallery=gallery, token=token, **extra))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


_CTX = None


def _context():
    """A forkserver that has imported torch, FAISS and the service once: each server starts in well under a
    second, and no child inherits a parent's torch threads."""
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(
            [
                "torch",
                "faiss",
                "fastapi",
                "uvicorn",
                "oneshot.service.app",
                "oneshot.gallery.gallery",
                "oneshot.modalities.image",
                "oneshot.checkpoint",
                "tests.service_util",
                "uvicorn.main",
                "uvicorn.server",
                "uvicorn.config",
                "uvicorn.loops.auto",
                "uvicorn.protocols.http.auto",
                "uvicorn.protocols.http.h11_impl",
                "uvicorn.protocols.http.httptools_impl",
                "uvicorn.lifespan.on",
                "uvicorn.protocols.websockets.auto",
                "starlette.formparsers",
                "PIL.PngImagePlugin",
                "PIL.Image",
            ]
        )
    return _CTX


class Server:
    """A real uvicorn serving a gallery on a free loopback port, in its own process."""

    def __init__(self, gallery: Path, token: str | None = None, **extra) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = _context().Process(target=_serve, args=(str(gallery), self.port, token, extra), daemon=True)
        self.proc.start()

    def wait(self, timeout: float = 60.0) -> Server:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.proc.is_alive():
                raise RuntimeError(f"server exited with {self.proc.exitcode}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.pid is not None and self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        if self.proc.is_alive():
            self.kill()

    def __enter__(self) -> Server:
        return self.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()
