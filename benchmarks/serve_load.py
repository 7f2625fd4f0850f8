"""Load on `oneshot serve` over loopback: identify and enrol requests from concurrent clients, batching on and off.

A 10,000-class gallery is built once with the committed Conv-4 encoder (each class one real Omniglot
drawing of the background set, enrolled from its embedding); then, for each mode, a real `oneshot serve`
process is started on a free loopback port and ``--clients`` closed-loop clients send, for ``--duration``
seconds, 90% identify requests (one real 105x105 PNG drawing of the evaluation set each, k=5) and 10% enrol
requests (a new class from one such PNG), over keep-alive HTTP/1.1 connections. The client is a small
asyncio HTTP/1.1 writer/reader (not httpx), so that it takes as little of the shared CPU as possible; it
runs in this process while the server runs in its own.

Writes ``benchmarks/results/serve_load.json``: per mode, requests/s (all, identify), p50 / p99 latency of
identify and enrol, error counts, the server's peak resident memory (VmHWM), the server's and the client's
CPU time per request (far less sensitive to other jobs on a shared CPU than the rates) and the load average,
with the command, commit, machine and date.

Usage: nice -n 10 python benchmarks/serve_load.py [--duration 60] [--clients 16] [--classes 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from oneshot.provenance import git_commit, machine_description, now_iso  # noqa: E402

ENCODER = "omniglot-lake"  # the shipped ProtoNet Conv-4, src/oneshot/weights/protonet_conv4_lake.safetensors
RESULT = ROOT / "benchmarks" / "results" / "serve_load.json"
TOKEN = "load-" + uuid.uuid4().hex


def build_gallery(path: Path, n_classes: int, data_dir: str | None) -> None:
    """``n_classes`` classes, each one background-set drawing (in the zip's order), from their embeddings."""
    from oneshot.data.omniglot import load_characters
    from oneshot.gallery import Gallery
    from oneshot.modalities import load_embedder

    enc = load_embedder(ENCODER)
    chars = load_characters("background", enc.preprocessing, data_dir)
    if n_classes > len(chars.keys):
        raise SystemExit(f"--classes {n_classes} is more than the {len(chars.keys)} background drawings")
    x = enc.embed_images(chars.images[:n_classes].numpy())
    with Gallery.open(path, encoder=enc) as g:
        g.enrol_vectors([f"bg-{i:05d}" for i in range(n_classes)], x)


def evaluation_pngs(data_dir: str | None, n: int) -> list[bytes]:
    from oneshot.data.omniglot import ZIPS
    from oneshot.data.paths import locate_files

    path = locate_files("omniglot", [ZIPS["evaluation"]], data_dir)[ZIPS["evaluation"].name]
    with zipfile.ZipFile(path) as z:
        names = sorted(x for x in z.namelist() if x.endswith(".png"))
        step = max(1, len(names) // n)
        return [z.read(x) for x in names[::step][:n]]


def multipart(fields: dict[str, str], files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for i, data in enumerate(files):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="q{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(path: str, fields: dict[str, str], files: list[bytes], port: int, token: str | None = None) -> bytes:
    body, ctype = multipart(fields, files)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        + (f"Authorization: Bearer {token}\r\n" if token else "")
        + "\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    return status, await reader.readexactly(length)


async def client(
    port: int,
    identify_reqs: list[bytes],
    pngs: list[bytes],
    enrol_fraction: float,
    stop_at: float,
    seed: int,
    out: dict[str, list],
) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < stop_at:
            if rng.random() < enrol_fraction:
                kind = "enrol"
                req = request("/v1/classes", {"label": f"load-{seed}-{n}"}, [rng.choice(pngs)], port, TOKEN)
            else:
                kind = "identify"
                req = rng.choice(identify_reqs)
            t0 = time.perf_counter()
            writer.write(req)
            await writer.drain()
            status, body = await read_response(reader)
            dt = time.perf_counter() - t0
            if (kind == "identify" and status == 200) or (kind == "enrol" and status == 201):
                out[kind].append(dt)
            else:
                out["errors"].append(f"{kind} {status} {body[:200]!r}")
            n += 1
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(gallery: Path, port: int, batching: bool, log: Path) -> subprocess.Popen:
    env = dict(os.environ, ONESHOT_TOKEN=TOKEN, PYTHONPATH=str(ROOT / "src"))
    cmd = [
        sys.executable,
        "-c",
        "from oneshot.cli import app; app()",
        "serve",
        "--gallery",
        str(gallery),
        "--port",
        str(port),
        "--batching" if batching else "--no-batching",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
    raise SystemExit("server did not start")


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs) * 1000, q)) if xs else None


def run_mode(base: Path, batching: bool, args: argparse.Namespace, pngs: list[bytes]) -> dict:
    gallery = base / f"mode-{'on' if batching else 'off'}.gallery"
    gallery.write_bytes((base / "base.gallery").read_bytes())
    port = free_port()
    proc = start_server(gallery, port, batching, base / f"server-{'on' if batching else 'off'}.log")
    try:
        queries = pngs[: len(pngs) // 2]
        enrol_pngs = pngs[len(pngs) // 2 :]
        identify_reqs = [request("/v1/identify", {"k": "5"}, [q], port) for q in queries]

        async def go(duration: float) -> dict:
            out: dict[str, list] = {"identify": [], "enrol": [], "errors": []}
            stop_at = time.perf_counter() + duration
            await asyncio.gather(
                *[
                    client(port, identify_reqs, enrol_pngs, args.enrol_fraction, stop_at, 1000 * (not batching) + i, out)
                    for i in range(args.clients)
                ]
            )
            return out

        asyncio.run(go(args.warmup))  # first requests of a fresh process (lazy imports, caches): not measured
        load0 = os.getloadavg()[0]
        cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
        t0 = time.perf_counter()
        out = asyncio.run(go(args.duration))
        wall = time.perf_counter() - t0
        server_cpu, client_cpu = cpu_seconds(proc.pid) - cpu0, time.process_time() - own0
        load1 = os.getloadavg()[0]
        rss = peak_rss_mib(proc.pid)
        ident, enrol = out["identify"], out["enrol"]
        return {
            "batching": batching,
            "seconds": wall,
            "requests": len(ident) + len(enrol),
            "identify": len(ident),
            "enrol": len(enrol),
            "errors": len(out["errors"]),
            "error_examples": out["errors"][:3],
            "requests_per_s": (len(ident) + len(enrol)) / wall,
            "identify_per_s": len(ident) / wall,
            "identify_ms": {
                "p50": pct(ident, 50),
                "p99": pct(ident, 99),
                "mean": pct(ident, 50) and float(np.mean(ident) * 1000),
            },
            "enrol_ms": {"p50": pct(enrol, 50), "p99": pct(enrol, 99)},
            "server_peak_rss_mib": rss,
            "load_average_1min": [load0, load1],
            # CPU time per answered request depends far less on other jobs than wall-clock rates do
            "server_cpu_ms_per_request": 1000 * server_cpu / max(1, len(ident) + len(enrol)),
            "client_cpu_ms_per_request": 1000 * client_cpu / max(1, len(ident) + len(enrol)),
            "server_cpu_share_of_wall": server_cpu / wall,
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="Measured seconds per mode.")
    ap.add_argument("--warmup", type=float, default=5.0, help="Unmeasured seconds of load before each mode's measurement.")
    ap.add_argument("--clients", type=int, default=16, help="Concurrent closed-loop clients.")
    ap.add_argument("--classes", type=int, default=10000, help="Classes in the gallery.")
    ap.add_argument("--enrol-fraction", type=float, default=0.1, help="Fraction of requests that enrol a new class.")
    ap.add_argument("--queries", type=int, default=400, help="Distinct PNG drawings used (half identify, half enrol).")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--modes", default="on,off", help="Batching modes to run, in order: on, off or both.")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="oneshot-serve-load-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        build_gallery(base / "base.gallery", args.classes, args.data_dir)
        print(f"gallery of {args.classes} classes built in {time.perf_counter() - t:.1f}s", flush=True)
        pngs = evaluation_pngs(args.data_dir, args.queries)
        modes = []
        for m in args.modes.split(","):
            r = run_mode(base, m.strip() == "on", args, pngs)
            print(json.dumps(r), flush=True)
            modes.append(r)
    result = {
        "name": "serve_load",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "commit": git_commit(),
        "machine": machine_description(),
        "date": now_iso(),
        "encoder": ENCODER,
        "classes": args.classes,
        "clients": args.clients,
        "duration_s": args.duration,
        "enrol_fraction": args.enrol_fraction,
        "k": 5,
        "query": "one 105x105 Omniglot PNG per request",
        "niceness": os.nice(0),
        "modes": modes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
