"""Gallery at scale: enrol throughput, identify latency and throughput, exact vs HNSW, recall@1, bytes/template.

One run measures one configuration and merges it into ``benchmarks/results/gallery_scale.json`` (keyed by
data/dim/n), so the big configurations can be run one at a time::

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/gallery_scale.py --data random --dim 64 --n 1000000

Data:
    * ``random``: isotropic Gaussian vectors, L2-normalised (the hardest case for approximate search).
    * ``real``: "real-derived": a Gaussian fitted (mean and full covariance) to the Conv-4 embeddings of all
      32,460 Omniglot drawings by ``--encoder``; for dim 512 its 64-d samples are mapped by a fixed random
      orthonormal 64->512 matrix plus isotropic noise at 10% of the per-dimension scale.

Queries: 1000 enrolled templates plus Gaussian noise (cosine ~0.9 to their template), i.e. new examples of
enrolled classes. Recall@1 is the fraction of queries whose approximate top-1 equals the exact top-1.

``--candidates`` instead compares every approximate index kind in one run (exact, HNSW, HNSW over 8-bit
scalar codes, IVF-Flat, IVF-SQ8 and IVF-PQ, the quantised ones with and without exact re-ranking), each
over a sweep of its search-time knob: memory against the raw float32 vectors, recall@1 against exact
search, single-query p50/p99 latency. It writes ``benchmarks/results/gallery_memory.json``::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/gallery_scale.py --data real --dim 64 --n 1000000 --candidates

Steps: (1) enrol all templates through ``Gallery.enrol_vectors`` (SQLite, 10,000 enrolments per
transaction): enrol throughput and database bytes/template; (2) build the exact and the HNSW index from the
templates; (3) per index: single-query latency p50/p99 (``Gallery.identify``-equivalent raw index search, and
one full ``Gallery.identify`` call path for the gallery's default index), batch throughput (1000-query
batches), recall@1 vs exact, index bytes/template.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from oneshot.gallery import Gallery, IndexSettings
from oneshot.gallery.index import TemplateIndex
from oneshot.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "gallery_scale.json"
MEMORY_RESULT = ROOT / "benchmarks" / "results" / "gallery_memory.json"

# (name, IndexSettings overrides, sweep knob, sweep values); quantised kinds are built with re-ranking on and
# also measured with it off (``refine_factor`` 0), whose memory leaves out the float copies.
CANDIDATES = [
    ("ivf_flat", {"approx_kind": "ivf_flat"}, "nprobe", [16, 32, 64, 128]),
    ("ivf_sq8", {"approx_kind": "ivf_sq8", "refine_factor": 4}, "nprobe", [16, 32, 64, 128]),
    ("ivf_pq16", {"approx_kind": "ivf_pq", "pq_m": 16, "refine_factor": 8}, "nprobe", [32, 64, 128]),
    ("hnsw_sq8", {"approx_kind": "hnsw_sq8", "refine_factor": 4}, "ef_search", [128, 256, 512]),
    ("hnsw", {"approx_kind": "hnsw"}, "ef_search", [128, 256]),
]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_embeddings(encoder: Path, data_dir: str | None) -> np.ndarray:
    """(32460, D) embeddings of every Omniglot drawing (cached beside the checkpoint's digest)."""
    from oneshot.data.omniglot import load_characters
    from oneshot.gallery import ImageEmbedder

    enc = ImageEmbedder(encoder)
    cache = Path(tempfile.gettempdir()) / f"oneshot_real_emb_{enc.fingerprint['tensors_sha256'][:16]}.npy"
    if cache.is_file():
        return np.load(cache)
    parts = [
        enc.embed_images(load_characters(kind, enc.preprocessing, data_dir).images.numpy())
        for kind in ("background", "evaluation")
    ]
    x = np.concatenate(parts)
    np.save(cache, x)
    return x


def make_data(kind: str, dim: int, n: int, encoder: Path | None, data_dir: str | None, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(n, dim) L2-normalised templates and a description of how they were made."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        out = np.empty((n, dim), np.float32)
        for s in range(0, n, 100000):
            out[s : s + 100000] = unit(rng.standard_normal((min(100000, n - s), dim), dtype=np.float32))
        return out, {"kind": "random", "description": "isotropic Gaussian, L2-normalised"}
    if encoder is None:
        raise SystemExit("--data real needs --encoder")
    base = real_embeddings(encoder, data_dir).astype(np.float64)
    mu, cov = base.mean(0), np.cov(base, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mu)))
    proj = None
    if dim != base.shape[1]:
        if dim < base.shape[1]:
            raise SystemExit(f"real-derived data needs dim >= {base.shape[1]}")
        proj = np.linalg.qr(rng.standard_normal((dim, base.shape[1])))[0].T.astype(np.float32)  # (64, dim) orthonormal rows
    out = np.empty((n, dim), np.float32)
    scale = float(np.sqrt(np.trace(cov) / len(mu)))
    for s in range(0, n, 100000):
        m = min(100000, n - s)
        z = (mu + rng.standard_normal((m, len(mu))) @ chol.T).astype(np.float32)
        if proj is not None:
            z = z @ proj + 0.1 * scale * rng.standard_normal((m, dim), dtype=np.float32)
        out[s : s + m] = unit(z)
    return out, {
        "kind": "real-derived",
        "base_embeddings": int(len(base)),
        "encoder": str(encoder),
        "description": "Gaussian fitted to Conv-4 embeddings of all Omniglot drawings"
        + (f", mapped 64->{dim} by a random orthonormal matrix + 10% isotropic noise" if proj is not None else ""),
    }


def make_queries(templates: np.ndarray, m: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """New examples of enrolled classes: template + noise (cosine ~0.9)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(templates), size=min(m, len(templates)), replace=False)
    d = templates.shape[1]
    noise = unit(rng.standard_normal((len(idx), d), dtype=np.float32))
    return idx, unit(templates[idx] + 0.48 * noise)


def latency(search, q: np.ndarray, count: int) -> dict:
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        search(q[i % len(q)][None])
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1000
    return {
        "queries": count,
        "p50_ms": float(np.percentile(t, 50)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()),
    }


def batch_throughput(search, q: np.ndarray, batch: int, max_seconds: float) -> dict:
    done, t0 = 0, time.perf_counter()
    while done < len(q):
        search(q[done : done + batch])
        done += batch
        if time.perf_counter() - t0 > max_seconds:
            break
    dt = time.perf_counter() - t0
    return {"batch": batch, "queries": done, "seconds": dt, "queries_per_second": done / dt}


def measure_candidates(args: argparse.Namespace, row: dict, templates: np.ndarray, queries: np.ndarray) -> None:
    """Every candidate index kind on the same templates and queries; rewrites MEMORY_RESULT after each one."""
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    raw = templates.nbytes
    exact = TemplateIndex.build(args.dim, ids, templates, IndexSettings(approx_above=10**12))
    _, ex_ids = exact.search(queries, args.k)
    n_single = min(args.single, max(20, int(2e8 / (args.n * args.dim))))
    row["candidates"] = {
        "exact": {
            "memory_vs_raw": exact.nbytes() / raw,
            "bytes_per_template": exact.nbytes() / args.n,
            "sweep": {"-": {"recall_at_1": 1.0, "single": latency(lambda q: exact.search(q, args.k), queries, n_single)}},
        }
    }
    del exact
    print(f"  exact: p50 {row['candidates']['exact']['sweep']['-']['single']['p50_ms']:.3f} ms", flush=True)
    for name, overrides, knob, values in CANDIDATES:
        if args.only and name not in args.only:
            continue
        settings = IndexSettings(approx_above=0, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, **overrides)
        t0 = time.perf_counter()
        index = TemplateIndex.build(args.dim, ids, templates, settings)
        build = time.perf_counter() - t0
        vectors = index.vectors
        modes = [("refine", settings.refine_factor), ("no refine", 0)] if vectors is not None else [("", 0)]
        for mode, factor in modes:
            index.vectors = vectors if factor else None
            settings.refine_factor = factor or settings.refine_factor
            label = f"{name} + refine x{factor}" if factor else (f"{name}, no refine" if mode else name)
            out = {
                "kind": settings.approx_kind,
                "settings": settings.to_dict(),
                "refine_factor": factor,
                "build_seconds": build,
                "bytes_per_template": index.nbytes() / args.n,
                "memory_vs_raw": index.nbytes() / raw,
                "knob": knob,
                "sweep": {},
            }
            for v in values:
                setattr(settings, knob, v)
                if knob == "ef_search":
                    faiss_hnsw = __import__("faiss").downcast_index(index.main.index)
                    faiss_hnsw.hnsw.efSearch = v
                _, a_ids = index.search(queries, args.k)
                r = {
                    "recall_at_1": float(np.mean(a_ids[:, 0] == ex_ids[:, 0])),
                    "recall_at_k": float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(a_ids, ex_ids)])),
                    "single": latency(lambda q: index.search(q, args.k), queries, args.single),
                }
                out["sweep"][str(v)] = r
                print(
                    f"  {label} {knob}={v}: {out['memory_vs_raw']:.2f}x raw, recall@1 {r['recall_at_1']:.4f}, "
                    f"p50 {r['single']['p50_ms']:.3f} ms, p99 {r['single']['p99_ms']:.3f} ms",
                    flush=True,
                )
            row["candidates"][label] = out
        index.vectors = vectors
        del index
        MEMORY_RESULT.write_text(json.dumps(row, indent=2))
    row["goal"] = {"memory_vs_raw_at_most": 1.5, "recall_at_1_at_least": 0.99, "p50_ms_below": 2.0}
    MEMORY_RESULT.write_text(json.dumps(row, indent=2))
    print(f"wrote {MEMORY_RESULT}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["random", "real"], required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--encoder", type=Path, default=ROOT / "src" / "oneshot" / "weights" / "protonet_conv4_lake.safetensors")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=1000, help="single queries timed per index (exact at 1e6: fewer)")
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "oneshot_gallery_scale")
    p.add_argument("--skip-gallery", action="store_true", help="index only (no SQLite enrolment)")
    p.add_argument("--candidates", action="store_true", help="compare every index kind (writes gallery_memory.json)")
    p.add_argument("--only", nargs="*", default=[], help="with --candidates: only these candidate names")
    args = p.parse_args()

    import faiss

    row: dict = {
        "data": args.data,
        "dim": args.dim,
        "n": args.n,
        "k": args.k,
        "faiss": faiss.__version__,
        "threads": faiss.omp_get_max_threads(),
        **provenance(),
        "load_average_at_start": os.getloadavg(),
    }
    t0 = time.perf_counter()
    templates, row["data_info"] = make_data(args.data, args.dim, args.n, args.encoder, args.data_dir)
    source, queries = make_queries(templates, args.queries)
    row["data_seconds"] = time.perf_counter() - t0
    raw_bytes = templates.nbytes
    row["raw_bytes_per_template"] = raw_bytes / args.n
    print(f"{args.data} d={args.dim} n={args.n}: data ready in {row['data_seconds']:.1f}s", flush=True)

    if args.candidates:
        measure_candidates(args, row, templates, queries)
        return
    labels = [f"t{i}" for i in range(args.n)]
    if not args.skip_gallery:
        shutil.rmtree(args.workdir, ignore_errors=True)
        args.workdir.mkdir(parents=True)
        path = args.workdir / "scale.gallery"
        g = Gallery.open(path, dim=args.dim, approx_above=10**9)  # exact here; both kinds are measured below
        t0 = time.perf_counter()
        g.enrol_vectors(labels, templates, batch=10000)
        dt = time.perf_counter() - t0
        g.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db_bytes = sum(
            f.stat().st_size
            for f in args.workdir.iterdir()
            if f.name.startswith("scale.gallery") and not f.name.endswith(".faiss")
        )
        row["enrol"] = {
            "seconds": dt,
            "templates_per_second": args.n / dt,
            "db_bytes_per_template": db_bytes / args.n,
            "transaction": "10000 enrolments",
        }
        print(f"  enrol: {args.n / dt:.0f} templates/s, db {db_bytes / args.n:.0f} B/template", flush=True)
        t0 = time.perf_counter()
        g.identify(queries[:1], k=args.k)  # builds the exact index from SQLite
        row["enrol"]["exact_index_from_sqlite_seconds"] = time.perf_counter() - t0
        row["identify_api_exact"] = latency(
            lambda q: g.identify(q, k=args.k), queries, min(args.single, max(20, int(2e8 / (args.n * args.dim))))
        )
        print(f"  Gallery.identify (exact): p50 {row['identify_api_exact']['p50_ms']:.3f} ms", flush=True)
        g.close()
        shutil.rmtree(args.workdir, ignore_errors=True)

    ids = np.arange(1, args.n + 1, dtype=np.int64)
    results = {}
    # Exact.
    t0 = time.perf_counter()
    exact = TemplateIndex.build(args.dim, ids, templates, IndexSettings(approx_above=10**12))
    build = time.perf_counter() - t0
    n_single = min(args.single, max(20, int(2e8 / (args.n * args.dim))))
    ex_scores, ex_ids = exact.search(queries, args.k)
    results["exact"] = {
        "build_seconds": build,
        "bytes_per_template": exact.nbytes() / args.n,
        "memory_vs_raw": exact.nbytes() / raw_bytes,
        "single": latency(lambda q: exact.search(q, args.k), queries, n_single),
        "batch": batch_throughput(lambda q: exact.search(q, args.k), queries, 1000, 60),
    }
    print(
        f"  exact: p50 {results['exact']['single']['p50_ms']:.3f} ms, batch {results['exact']['batch']['queries_per_second']:.0f} q/s",
        flush=True,
    )
    del exact
    # HNSW.
    settings = IndexSettings(approx_above=0, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    t0 = time.perf_counter()
    hnsw = TemplateIndex.build(args.dim, ids, templates, settings)
    build = time.perf_counter() - t0
    print(f"  hnsw built in {build:.1f}s", flush=True)
    results["hnsw"] = {
        "build_seconds": build,
        "m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "bytes_per_template": hnsw.nbytes() / args.n,
        "memory_vs_raw": hnsw.nbytes() / raw_bytes,
        "ef_search": {},
    }
    for ef in args.ef_search:
        hnsw.settings.ef_search = ef
        _, h_ids = hnsw.search(queries, args.k)
        r = {
            "recall_at_1": float(np.mean(h_ids[:, 0] == ex_ids[:, 0])),
            "recall_at_k": float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(h_ids, ex_ids)])),
            "single": latency(lambda q: hnsw.search(q, args.k), queries, args.single),
            "batch": batch_throughput(lambda q: hnsw.search(q, args.k), queries, 1000, 60),
        }
        results["hnsw"]["ef_search"][str(ef)] = r
        print(
            f"  hnsw ef={ef}: recall@1 {r['recall_at_1']:.4f}, p50 {r['single']['p50_ms']:.3f} ms, p99 {r['single']['p99_ms']:.3f} ms, "
            f"batch {r['batch']['queries_per_second']:.0f} q/s",
            flush=True,
        )
    row["index"] = results
    row["exact_top1_is_source_template"] = float(np.mean(ex_ids[:, 0] == source + 1))
    key = f"{args.data}-d{args.dim}-n{args.n}"
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(
        Path(tempfile.gettempdir()) / "oneshot_gallery_scale.lock", "w"
    ) as lock:  # runs of other configurations may finish at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        all_rows = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
        all_rows[key] = row
        tmp = RESULT.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(all_rows.items())), indent=2))
        os.replace(tmp, RESULT)
    print(f"wrote {RESULT} [{key}]")


if __name__ == "__main__":
    main()
