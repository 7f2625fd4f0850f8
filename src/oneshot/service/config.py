"""What a service instance is started with (``oneshot serve`` options), and where its token comes from."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oneshot.errors import OneshotError

#: Environment variable holding the write token (the alternative to ``--token-file``).
TOKEN_ENV = "ONESHOT_TOKEN"
#: Environment variable carrying a :class:`ServiceConfig` (without the token) to uvicorn worker processes.
CONFIG_ENV = "ONESHOT_SERVE_CONFIG"
MIN_TOKEN_CHARS = 16


@dataclass
class ServiceConfig:
    """Everything one service process needs.

    Attributes:
        gallery: the gallery file (it must exist: ``oneshot gallery create`` makes it).
        encoder: an embedder spec overriding the gallery's recorded one (None: the gallery's own).
        token: the bearer token writes need (None: writes are open -- only sensible on loopback).
        token_file: where the token was read from (re-read by worker processes; never the token itself).
        private_reads: reads (list, info, identify, verify, metrics) need the token too.
        max_upload_bytes: bound on one request's body in bytes.
        max_pixels: bound on an uploaded image's width x height, checked from its header before decoding.
        max_files: bound on the files (and inline values) of one request.
        batching: gather concurrent identify requests into one embedder call.
        max_batch: at most this many queries per batch.
        max_wait_ms: how long the first request of a batch waits for company when the encoder is idle.
        threads: PyTorch intra-op threads for the embedder (1 by default: on a shared or busy CPU, more
            threads spin against each other -- a Conv-4 query took 60x longer with 2 threads than with 1
            on this project's contended 2-core machine; the event loop needs a core of its own anyway).
    """

    gallery: str
    encoder: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    private_reads: bool = False
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16
    batching: bool = True
    max_batch: int = 64
    max_wait_ms: float = 2.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1024:
            raise OneshotError(f"--max-upload-bytes {self.max_upload_bytes} is too small: give at least 1024")
        if self.max_pixels < 1:
            raise OneshotError("--max-pixels must be at least 1")
        if not 1 <= self.max_files <= 1000:
            raise OneshotError("--max-files must be between 1 and 1000")
        if not 1 <= self.max_batch <= 4096:
            raise OneshotError("--max-batch must be between 1 and 4096")
        if not 0 <= self.max_wait_ms <= 1000:
            raise OneshotError("--max-wait-ms must be between 0 and 1000")
        if not 1 <= self.threads <= 256:
            raise OneshotError("--threads must be between 1 and 256")
        if self.private_reads and not self.token:
            raise OneshotError("--private-reads needs a token: give --token-file or set ONESHOT_TOKEN")

    def to_env(self) -> str:
        """JSON for :data:`CONFIG_ENV`, without the token (workers read it from the file or environment)."""
        d = asdict(self)
        d.pop("token")
        return json.dumps(d)

    @classmethod
    def from_env(cls) -> ServiceConfig:
        """The configuration a parent process left in :data:`CONFIG_ENV` (for ``--workers`` > 1)."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise OneshotError(f"{CONFIG_ENV} is not set: start the service with `oneshot serve`")
        d = json.loads(raw)
        d["token"] = load_token(Path(d["token_file"]) if d.get("token_file") else None)
        return cls(**d)


def load_token(token_file: Path | None) -> str | None:
    """The write token from ``token_file`` (first line) or else :data:`TOKEN_ENV`; None when neither is set."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise OneshotError(f"token file {token_file} does not exist: write the token into it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise OneshotError(f"cannot read token file {token_file} ({exc.__class__.__name__}): check it") from None
        source = str(token_file)
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = TOKEN_ENV
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise OneshotError(
            f"the token in {source} must be at least {MIN_TOKEN_CHARS} printable characters without spaces: "
            "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return token
