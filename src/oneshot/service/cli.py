"""``oneshot serve``: the gallery over HTTP, with its web page at ``/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from oneshot.errors import OneshotError


def serve(
    gallery: Annotated[
        Path, typer.Option("--gallery", help="The gallery file to serve (create it first with `oneshot gallery create`).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps the service on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    token_file: Annotated[
        Optional[Path],
        typer.Option(
            help="File whose first line is the bearer token writes need (else $ONESHOT_TOKEN; neither: writes are open). "
            "The token is never taken on the command line and never logged."
        ),
    ] = None,
    private_reads: Annotated[
        bool,
        typer.Option(
            "--private-reads/--open-reads", help="Whether reads (list, info, identify, verify, metrics) need the token too."
        ),
    ] = False,
    encoder: Annotated[
        Optional[str], typer.Option(help="Override the gallery's recorded encoder (same fingerprint required).")
    ] = None,
    max_upload_bytes: Annotated[int, typer.Option(help="Largest request body in bytes.")] = 10 * 1024 * 1024,
    max_pixels: Annotated[
        int, typer.Option(help="Largest image (width x height), checked from its header before decoding.")
    ] = 40_000_000,
    max_files: Annotated[int, typer.Option(help="Most examples in one request.")] = 16,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Gather concurrent identify requests into one encoder call.")
    ] = True,
    max_batch: Annotated[int, typer.Option(help="Most queries in one identify batch.")] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long an identify request waits for others when the encoder is idle.")
    ] = 2.0,
    threads: Annotated[
        int, typer.Option(help="PyTorch threads for the encoder in each process (1 keeps a busy CPU responsive).")
    ] = 1,
    workers: Annotated[int, typer.Option(help="Server processes sharing the gallery file (each loads the encoder).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")] = "info",
) -> None:
    """Serve a gallery over HTTP: the JSON API under /v1 (schema at /docs) and the web page at /."""
    import uvicorn

    from oneshot.service.config import CONFIG_ENV, ServiceConfig, load_token

    if not gallery.is_file():
        raise OneshotError(f"gallery {gallery} does not exist: create it with `oneshot gallery create {gallery} --encoder ...`")
    if workers < 1:
        raise OneshotError("--workers must be at least 1")
    if not 0 < port < 65536:
        raise OneshotError(f"--port {port} is not a TCP port: give 1-65535")
    token = load_token(token_file)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        raise OneshotError(
            f"--host {host} would open the gallery's writes to the network without a token: give --token-file "
            "or set ONESHOT_TOKEN (or serve on 127.0.0.1)"
        )
    config = ServiceConfig(
        gallery=str(gallery.resolve()),
        encoder=encoder,
        token=token,
        token_file=str(token_file.resolve()) if token_file else None,
        private_reads=private_reads,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_files=max_files,
        batching=batching,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        threads=threads,
    )
    from oneshot.service.app import create_app
    from oneshot.service.errors import setup_logging

    setup_logging()
    if workers == 1:
        app = create_app(config)
        g = app.state.worker.gallery
        summary = (len(g), g.store.get_meta("encoder_path") or g.fingerprint.get("kind"), g.modality)
    else:
        from oneshot.gallery import Gallery

        with Gallery.open(gallery, encoder=encoder, create=False) as g:
            _ = g.encoder  # fail here, once, when the encoder cannot be loaded
            summary = (len(g), g.store.get_meta("encoder_path") or g.fingerprint.get("kind"), g.modality)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"oneshot serving {gallery} at http://{shown}:{port}/ (API /v1, schema /docs)")
    typer.echo(
        f"model: {summary[1]} ({summary[2]}); classes: {summary[0]}; "
        f"writes {'need the token' if token else 'are OPEN (no token given)'}; reads {'need the token' if private_reads else 'are open'}; "
        f"batching {'on' if batching else 'off'}; workers: {workers}"
    )
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
    else:
        os.environ[CONFIG_ENV] = config.to_env()
        uvicorn.run(
            "oneshot.service.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=log_level == "debug",
        )
