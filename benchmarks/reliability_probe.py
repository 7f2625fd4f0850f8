"""Reliability probe (issue 11, gallery and checkpoint side): damaged, edited and foreign files, bad options.

Every trial ends in one of: a clear one-line ``OneshotError`` (``refused``), a correct answer (``correct``),
a wrong answer, a traceback, or a stored file that changed after a failure -- the last three must be zero.

Usage: python benchmarks/reliability_probe.py [--trials 200]   (writes benchmarks/results/reliability.json)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gallery_util import make_checkpoint  # noqa: E402

from oneshot import Gallery  # noqa: E402
from oneshot.checkpoint import load_checkpoint
from oneshot.errors import OneshotError  # noqa: E402
from oneshot.provenance import git_commit, machine_description, now_iso  # noqa: E402


def _classify(fn, expect, files: list[Path]) -> str:
    before = [p.read_bytes() for p in files]
    try:
        got = fn()
    except OneshotError as exc:
        if "\n" in str(exc):
            return "multi-line error"
        return "refused" if [p.read_bytes() for p in files] == before else "stored file changed"
    except Exception:  # noqa: BLE001 - what the probe counts
        traceback.print_exc(limit=2)
        return "traceback"
    return "correct" if expect(got) else "wrong answer"


def checkpoint_trials(tmp: Path, n: int, rng: np.random.Generator) -> Counter:
    ck = make_checkpoint(tmp / "enc.safetensors", 0)
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        want = load_checkpoint(ck).method.embed(x).numpy()
    data = ck.read_bytes()
    n_head = struct.unpack("<Q", data[:8])[0]
    out: Counter = Counter()

    def embed(p):
        with torch.no_grad():
            return load_checkpoint(p).method.embed(x).numpy()

    for t in range(n):
        b = bytearray(data)
        kind = t % 3
        if kind == 0:  # bytes flipped anywhere
            for pos in rng.integers(0, len(b), int(rng.integers(1, 5))):
                b[pos] ^= int(rng.integers(1, 256))
        elif kind == 1:  # bytes flipped inside the JSON header (metadata, offsets, shapes)
            for pos in rng.integers(8, 8 + n_head, int(rng.integers(1, 4))):
                b[pos] = int(rng.integers(32, 127))
        else:  # truncated
            b = b[: int(rng.integers(0, len(b)))]
        p = tmp / f"c{t}.safetensors"
        p.write_bytes(bytes(b))
        out[_classify(lambda: embed(p), lambda got: np.allclose(got, want, atol=1e-6), [p])] += 1
    return out


def _vector_gallery(path: Path, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    labels = [f"s{seed}c{i}" for i in range(n)]
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    with Gallery.open(path, dim=8) as g:
        g.enrol_vectors(labels, v)
        g.identify(v[:1])
    return labels, v


def index_cache_trials(tmp: Path, n: int, rng: np.random.Generator) -> Counter:
    path = tmp / "g.db"
    labels, v = _vector_gallery(path, 200, 0)
    other = tmp / "other.db"
    _vector_gallery(other, 200, 1)
    cache = Path(f"{path}.faiss")
    good, seal = cache.read_bytes(), Path(f"{path}.faiss.check").read_bytes()
    out: Counter = Counter()

    def answers():
        with Gallery.open(path, create=False) as g:
            return [r.label for r in g.identify(v, k=1)]

    for t in range(n):
        b = bytearray(good)
        kind = t % 4
        if kind == 0:
            for pos in rng.integers(0, len(b), int(rng.integers(1, 8))):
                b[pos] ^= 0xFF
        elif kind == 1:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:  # the header's sizes edited
            b[22 + 8 * int(rng.integers(0, 3)) :][:8] = struct.pack("<Q", int(rng.integers(0, 1 << 62)))
        else:  # another gallery's file (same size) put in its place, with the old cache beside it
            shutil.copy(other, path)
        cache.write_bytes(bytes(b))
        Path(f"{path}.faiss.check").write_bytes(seal)
        want = labels if kind != 3 else [f"s1c{i}" for i in range(200)]
        if kind == 3:
            v_use = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)

            def answers3():
                with Gallery.open(path, create=False) as g:
                    return [r.label for r in g.identify(v_use, k=1)]

            out[_classify(answers3, lambda got: got == want, [])] += 1
            path.unlink()
            Path(f"{path}-wal").unlink(missing_ok=True)
            Path(f"{path}-shm").unlink(missing_ok=True)
            labels, v = _vector_gallery(path, 200, 0)
            good, seal = cache.read_bytes(), Path(f"{path}.faiss.check").read_bytes()
        else:
            out[_classify(answers, lambda got: got == labels, [])] += 1
    return out


def gallery_file_trials(tmp: Path, n: int, rng: np.random.Generator) -> Counter:
    src = tmp / "src.db"
    labels, v = _vector_gallery(src, 50, 2)
    Path(f"{src}.faiss").unlink()
    Path(f"{src}.faiss.check").unlink()
    data = src.read_bytes()
    out: Counter = Counter()
    for t in range(n):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), int(rng.integers(1, 6))):
            b[pos] ^= int(rng.integers(1, 256))
        p = tmp / f"f{t}.db"
        p.write_bytes(bytes(b))

        def answers():
            with Gallery.open(p, create=False) as g:
                return [r.label for r in g.identify(v, k=1)]

        out[_classify(answers, lambda got: got == labels, [p])] += 1
    return out


def import_trials(tmp: Path) -> Counter:
    import sqlite3

    edits = [
        ("UPDATE examples SET embedding = ? WHERE class_id = 3", np.full(8, np.nan, np.float32).tobytes()),
        ("UPDATE examples SET embedding = zeroblob(32) WHERE class_id = 3", None),
        ("UPDATE examples SET embedding = zeroblob(12) WHERE class_id = 3", None),
        ("UPDATE classes SET label = 'a' || char(27) || '[31mred' WHERE id = 3", None),
        ("UPDATE classes SET label = 'two' || char(10) || 'lines' WHERE id = 3", None),
        ("UPDATE classes SET label = printf('%.5000c', 'x') WHERE id = 3", None),
        ("UPDATE classes SET label = 'ev' || char(8238) || 'il' WHERE id = 3", None),
        ("UPDATE classes SET label = 'zero' || char(8203) || 'width' WHERE id = 3", None),
        ("UPDATE classes SET metadata = '{not json' WHERE id = 3", None),
        ("UPDATE classes SET metadata = '[1, 2]' WHERE id = 3", None),
    ]
    out: Counter = Counter()
    for i, (sql, arg) in enumerate(edits):
        s, d = tmp / f"is{i}.db", tmp / f"id{i}.db"
        _vector_gallery(s, 3, 3)
        _vector_gallery(d, 3, 4)
        conn = sqlite3.connect(s)
        conn.execute(sql, (arg,) if arg is not None else ())
        conn.commit()
        conn.close()

        def run():
            with Gallery.open(d) as g:
                return g.import_from(s, on_conflict="merge")

        out[_classify(run, lambda got: False, [d])] += 1  # every one of these must be refused
    d = tmp / "self.db"
    _vector_gallery(d, 3, 5)

    def into_itself():
        with Gallery.open(d) as g:
            return g.import_from(d, on_conflict="merge")

    out[_classify(into_itself, lambda got: False, [d])] += 1
    return out


def option_trials() -> Counter:
    from typer.testing import CliRunner

    from oneshot.cli import app

    bad = [
        ["train", "--eval-every", "0"],
        ["train", "--eval-every", "-1"],
        ["train", "--val-episodes", "0"],
        ["train", "--lr", "-1"],
        ["train", "--lr", "nan"],
        ["train", "--lr-gamma", "-1"],
        ["train", "--out", "."],
        ["evaluate", "--episodes", "0"],
        ["evaluate", "--pairs", "0"],
        ["evaluate", "--queries", "0"],
        ["demo", "--episodes", "0"],
        ["demo", "--train-minutes", "0"],
        ["demo", "--train-minutes", "-1"],
        ["demo", "--out", "README.md"],
        ["gallery", "calibrate", "x.db", "--trials", "0", "--folder", "."],
        ["gallery", "calibrate", "x.db", "--gallery-size", "0", "--folder", "."],
        ["gallery", "adapt", "x.db", "a", "--rate", "0.1", "--max-drift", "5"],
        ["gallery", "adapt", "x.db", "a", "--rate", "0.1", "--max-drift", "nan"],
        ["gallery", "adapt", "x.db", "a", "--rate", "0.1", "--min-score", "nan"],
        ["gallery", "create", "x.db", "--encoder", "omniglot", "--approx-above", "-1"],
        # impossible episode shapes: refused before any data is loaded
        ["train", "--ways", "5000"],
        ["train", "--shots", "10", "--queries", "11"],
        ["train", "--split", "lake", "--val-ways", "300"],
        ["evaluate", "--ways", "2000"],
        ["evaluate", "--shots", "5", "--queries", "16"],
        ["train", "--device", "mps"],
    ]
    out: Counter = Counter()
    runner = CliRunner()
    for args in bad:
        t0 = time.perf_counter()
        res = runner.invoke(app, args)
        fast = time.perf_counter() - t0 < 10  # refused before any work (loading Omniglot takes ~50 s)
        one = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        ok = res.exit_code == 2 and len(one) == 1 and "Traceback" not in res.output and fast and not Path("x.db").exists()
        out["refused" if ok else "not refused: " + " ".join(args)] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {
            "checkpoint_files": checkpoint_trials(tmp, args.trials, rng),
            "index_cache_files": index_cache_trials(tmp, args.trials, rng),
            "gallery_files": gallery_file_trials(tmp, args.trials, rng),
            "imports": import_trials(tmp),
            "cli_options": option_trials(),
        }
    out = {
        "results": {k: dict(v) for k, v in res.items()},
        "seconds": time.perf_counter() - t0,
        "command": "python " + shlex.join(sys.argv),
        "commit": git_commit(),
        "machine": machine_description(),
        "date": now_iso(),
        "trials": args.trials,
        "seed": args.seed,
    }
    dest = ROOT / "benchmarks" / "results" / "reliability.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()
