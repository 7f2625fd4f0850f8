"""Rewrite the README's result tables from benchmarks/results/*.json.

Each table sits in README.md between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; everything
between the two markers is replaced, nothing else is touched. Tables: ``methods`` (every
``*_conv4_vinyals.json``: accuracy with 95% CI per shape, Lake's runs, EER, training budget and speed,
published figures), ``throughput`` (``throughput_protonet.json``), ``meta_cost`` (``meta_step_cost*.json``, one per device),
``gallery_open_set`` and ``gallery_scale`` (``gallery_*.json``).

Usage: python benchmarks/make_tables.py [--check]   (``--check`` exits 1 when the README is out of date)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
SHAPES = [(5, 1), (5, 5), (20, 1), (20, 5)]

# Published Omniglot figures, Vinyals protocol, 5w1s / 5w5s / 20w1s / 20w5s.
PUBLISHED = {
    "protonet": "98.8 / 99.7 / 96.0 / 98.9 (Snell 2017)",
    "siamese": "97.3 / 98.4 / 88.2 / 97.0 (Koch 2015)",
    "matching": "98.1 / 98.9 / 93.8 / 98.5 (Vinyals 2016)",
    "maml": "98.7 / 99.9 / 95.8 / 98.9 (Finn 2017)",
    "fomaml": "98.3 / 99.2 / 89.4 / 97.9 (Finn 2017)",
    "reptile": "95.4 / 98.9 / 88.1 / 96.7 (Nichol 2018)",
    "memory": "98.4 / 99.6 / 95.0 / 98.6 (Kaiser 2017)",
}
ORDER = ["protonet", "siamese", "contrastive", "triplet", "matching", "baseline", "maml", "fomaml", "reptile", "memory"]


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def methods_table() -> str:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*_conv4_vinyals.json"))]
    results.sort(key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else 99, r["name"]))
    lines = [
        "| method | 5w1s | 5w5s | 20w1s | 20w5s | Lake 20 runs | EER % | training (CPU budget) | img/s | published 5w1s / 5w5s / 20w1s / 20w5s | checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ev = r["evaluation"]
        acc = {(x["ways"], x["shots"]): x for x in ev["results"]}
        cells = [f"{100 * acc[s]['accuracy']:.2f} ± {100 * acc[s]['ci95']:.2f}" if s in acc else "-" for s in SHAPES]
        episodes = {x["episodes"] for x in ev["results"]}
        lake = f"{100 * ev['lake_runs']['accuracy']:.1f}" if "lake_runs" in ev else "-"
        eer = f"{100 * ev['verification']['eer']:.2f}" if "verification" in ev else "-"
        tr = r["training"]
        label = r["name"].replace("_conv4_vinyals", "")
        if episodes != {1000}:
            label += f" ({'/'.join(str(e) for e in sorted(episodes))} test episodes)"
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {lake} | {eer} | {tr['train_seconds'] / 60:.0f} min, {tr['episodes_run']} episodes, {tr['device']} "
            f"| {tr['images_per_second']:.0f} | {PUBLISHED.get(r['method'], 'none on Omniglot')} | `models/{r['name']}.safetensors` |"
        )
    return "\n".join(lines)


def throughput_table() -> str:
    r = load("throughput_protonet")
    if r is None:
        return "_not measured yet: run `python benchmarks/throughput.py`_"
    s = r["episode_shape"]
    lines = [
        f"ProtoNet, Conv-4, {s['ways']}-way {s['shots']}-shot {s['queries']}-query {s['size']}x{s['size']} episodes ({s['images']} images), "
        f"{r['precision']}, channels_last={r['channels_last']}; median of {len(r['measurements']['oneshot'])} interleaved repeats, "
        f"{r['machine'].get('cpu_count')} CPU cores, {r['date'][:10]}, commit {r['commit'][:10]}.",
        "",
        "| loop | images/s | episodes/s | ratio |",
        "|---|---|---|---|",
        f"| raw forward + backward + Adam (one batch in memory) | {r['raw_images_per_second']:.0f} | {r['raw_images_per_second'] / s['images']:.2f} | 1.00 |",
        f"| oneshot training loop (sampler, gather, step) | {r['images_per_second']:.0f} | {r['episodes_per_second']:.2f} | {r['ratio_to_raw']:.2f} of raw |",
    ]
    if r.get("easyfsl_images_per_second"):
        lines.append(
            f"| easyfsl 1.5.0 as shipped (TaskSampler + DataLoader + PrototypicalNetworks, fp32, own process) | {r['easyfsl_images_per_second']:.0f} | "
            f"{r['easyfsl_episodes_per_second']:.2f} | oneshot is **{r['speedup_over_easyfsl']:.2f}x** |"
        )
    if r.get("easyfsl_tuned_allocator_images_per_second"):
        e = r["easyfsl_tuned_allocator_images_per_second"]
        lines.append(
            f"| easyfsl 1.5.0 given oneshot's allocator tuning (same process) | {e:.0f} | {e / s['images']:.2f} "
            f"| oneshot is {r['speedup_over_easyfsl_tuned_allocator']:.2f}x |"
        )
    if "allocator_tuned" in r:
        lines += ["", f"Allocator tuning (`oneshot.runtime.tune_cpu_allocator`) in the oneshot and raw loops: {r['allocator_tuned']}."]
    return "\n".join(lines)


def meta_cost_table() -> str:
    """MAML against first-order MAML per meta-step, one block of rows per ``meta_step_cost*.json`` (one per device)."""
    files = sorted(RESULTS.glob("meta_step_cost*.json"))
    if not files:
        return "_not measured yet: run `python benchmarks/meta_memory.py`_"
    lines = [
        "| device | ways | shots / queries | inner steps | meta-batch | MAML s/step | FOMAML s/step | time ratio | MAML peak MiB | FOMAML peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mib = 1024 * 1024
    notes = []
    for path in files:
        r = json.loads(path.read_text())
        machine = r["machine"]
        device = machine.get("gpu") or f"{machine.get('cpu', 'CPU')} ({machine.get('cpu_count')} cores)"
        rows = r.get("rows") or []
        by = {(x["method"], x["ways"]): x for x in rows}
        for ways in sorted({x["ways"] for x in rows}):
            m, f = by.get(("maml", ways)), by.get(("fomaml", ways))
            if m is None or f is None:
                continue
            lines.append(
                f"| {device} | {ways} | {m['shots']} / {m['queries']} | {m['inner_steps']} | {m['meta_batch']} "
                f"| {m['seconds_per_meta_step']:.3f} | {f['seconds_per_meta_step']:.3f} "
                f"| {m['seconds_per_meta_step'] / f['seconds_per_meta_step']:.2f}x "
                f"| {m['meta_step_memory_bytes'] / mib:.0f} | {f['meta_step_memory_bytes'] / mib:.0f} "
                f"| {m['meta_step_memory_bytes'] / f['meta_step_memory_bytes']:.2f}x |"
            )
        notes.append(f"`{path.name}`: `{r['command']}` at {r['commit'][:8]}, {r['date'][:10]}, torch {machine.get('torch')}")
    memory = "memory is the rise of the peak (CUDA: `max_memory_allocated`; CPU: peak RSS) over its value before the first meta-step"
    return "\n".join(lines) + "\n\n" + f"Mean seconds per timed meta-step; {memory}. " + "; ".join(notes) + "."


def gallery_open_set_table() -> str:
    r = load("gallery_open_set")
    if r is None:
        return "_not measured yet: run `python benchmarks/gallery_open_set.py`_"
    s = r["summary"]
    acc = s["closed_set_accuracy"]
    lines = [
        f"{len(r['runs'])} seeds (mean ± std), {r['date'][:10]}: closed-set accuracy (100 classes, one drawing each) "
        f"**{100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}%**.",
        "",
        "| target FAR | identify: measured FAR (500 strangers) | identify: TAR | verify: measured FAR | verify: TAR |",
        "|---|---|---|---|---|",
    ]
    for k, v in s.items():
        if k == "closed_set_accuracy":
            continue
        lines.append(
            f"| {k} | {v['identify_far']['mean']:.4f} ± {v['identify_far']['std']:.4f} | {v['identify_tar']['mean']:.3f} ± {v['identify_tar']['std']:.3f} "
            f"| {v['verify_far']['mean']:.5f} ± {v['verify_far']['std']:.5f} | {v['verify_tar']['mean']:.3f} ± {v['verify_tar']['std']:.3f} |"
        )
    return "\n".join(lines)


def gallery_scale_table() -> str:
    r = load("gallery_scale")
    if r is None:
        return "_not measured yet: run `python benchmarks/gallery_scale.py`_"
    lines = [
        "Per (data, dimension, size): exact search, and the smallest HNSW `efSearch` measured that reaches recall@1 ≥ 0.99 "
        "(else the best measured). Full results: `benchmarks/results/gallery_scale.json`, `python benchmarks/gallery_report.py`.",
        "",
        "| data | dim | templates | enrol/s | exact p50 / p99 ms | HNSW ef | recall@1 | HNSW p50 / p99 ms | index bytes/template (x raw) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(r.values(), key=lambda c: (c["data"], c["dim"], c["n"])):
        ex = c["index"]["exact"]
        h = c["index"]["hnsw"]
        sweeps = sorted(((int(ef), v) for ef, v in h["ef_search"].items()), key=lambda t: t[0])
        ok = [t for t in sweeps if t[1]["recall_at_1"] >= 0.99]
        ef, best = ok[0] if ok else max(sweeps, key=lambda t: t[1]["recall_at_1"])
        lines.append(
            f"| {c['data']} | {c['dim']} | {c['n']:,} | {c['enrol']['templates_per_second']:,.0f} | "
            f"{ex['single']['p50_ms']:.2f} / {ex['single']['p99_ms']:.2f} | {ef} | {best['recall_at_1']:.3f} | "
            f"{best['single']['p50_ms']:.2f} / {best['single']['p99_ms']:.2f} | "
            f"{h['bytes_per_template']:,.0f} ({h['memory_vs_raw']:.2f}x); exact {ex['bytes_per_template']:,.0f} ({ex['memory_vs_raw']:.2f}x) |"
        )
    return "\n".join(lines)


def molecules_tox21_table() -> str:
    """Tox21 few-shot ROC-AUC: learned model vs baselines, per test assay and over the three (issue 14)."""
    r = load("molecules_tox21")
    if r is None:
        return "_not yet run: `python benchmarks/molecules_tox21.py`_"
    assays = r["split"]["test"]
    lines = ["| support | scorer | " + " | ".join(assays) + " | mean of the three ± 95% CI | draws per assay |",
             "|---|---|" + "---|" * (len(assays) + 2)]
    for shots, block in sorted(r["shots"].items(), key=lambda kv: int(kv[0])):
        for name, row in block["rows"].items():
            cells = [f"{100 * row['per_assay'][a]['mean']:.2f} ± {100 * row['per_assay'][a]['ci95']:.2f}" for a in assays]
            lines.append(f"| {shots}+/{shots}- | {name.replace('_', ' ')} | " + " | ".join(cells)
                         + f" | **{100 * row['mean']:.2f}** ± {100 * row['ci95']:.2f} | {row['draws_per_assay']} |")
    pub = " · ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in r["published"].items())
    train = []
    for shots, block in sorted(r["shots"].items(), key=lambda kv: int(kv[0])):
        t = block["training"] or {}
        if "train_seconds" in t:
            train.append(f"{shots}-shot model: {t['train_seconds'] / 60:.1f} min training (validation excluded), {t['episodes']} episodes "
                         f"(best validation ROC-AUC {100 * t['val_auc']:.2f} at episode {t['best_episode']})")
    prov = r["provenance"]
    return ("\n".join(lines) + f"\n\nTraining (2 shared CPU cores): {'; '.join(train) or 'see the results file'}. "
            f"{r['molecules']} molecules ({len(r['skipped_rows'])} rows RDKit cannot parse are listed in the results file). "
            f"Published on the same split (10-shot / 1-shot): {pub}. "
            f"`molecules_tox21.json`: `{prov['command']}` at {prov['commit'][:10]}, {prov['date'][:10]}.")


def molecules_clintox_table() -> str:
    r = load("molecules_clintox")
    if r is None:
        return "_not yet run: `python benchmarks/molecules_tox21.py --parts clintox`_"
    lines = ["| gallery encoder | ROC-AUC (FDA approved) ± 95% CI | draws |", "|---|---|---|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {100 * row['mean']:.2f} ± {100 * row['ci95']:.2f} | {row['draws']} |")
    prov = r["provenance"]
    return ("\n".join(lines) + f"\n\n{r['approved']} approved and {r['failed']} failed drugs; each draw enrols one of each "
            f"and ranks the other {r['approved'] + r['failed'] - 2} by score(approved) - score(failed). "
            f"`{prov['command']}` at {prov['commit'][:10]}, {prov['date'][:10]}.")


def molecules_search_table() -> str:
    r = load("molecules_search")
    if r is None:
        return "_not yet run: `python benchmarks/molecules_tox21.py --parts search`_"
    rows = [("oneshot Tanimoto index (FAISS popcount over packed bits)", r["index"]),
            ("NumPy bitwise_count over packed uint64", r["numpy_popcount"]),
            ("RDKit BulkTanimotoSimilarity + argpartition", r["rdkit_bulk"])]
    lines = ["| exact top-10 Tanimoto | p50 ms | p99 ms | queries |", "|---|---|---|---|"]
    for name, s in rows:
        lines.append(f"| {name} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['queries']} |")
    prov = r["provenance"]
    return ("\n".join(lines) + f"\n\n{r['fingerprints']:,} random 2048-bit fingerprints drawn bit by bit at Tox21's ECFP4 bit "
            f"frequencies ({r['mean_bits_set']:.1f} bits set on average); index memory {r['index']['bytes'] / 2**20:.0f} MiB "
            f"({r['index']['bytes_per_fingerprint']:.0f} bytes per fingerprint); RDKit needed {r['rdkit_bulk']['build_seconds']:.0f} s "
            f"to build its bit vectors. Top-10 scores identical to RDKit's: {r['top10_scores_identical_to_rdkit']}. "
            f"Goal p50 <= {r['goal_p50_ms']} ms. One thread, shared 2-core machine. "
            f"`{prov['command']}` at {prov['commit'][:10]}, {prov['date'][:10]}.")


TABLES = {
    "methods": methods_table,
    "throughput": throughput_table,
    "meta_cost": meta_cost_table,
    "gallery_open_set": gallery_open_set_table,
    "gallery_scale": gallery_scale_table,
    "molecules_tox21": molecules_tox21_table,
    "molecules_clintox": molecules_clintox_table,
    "molecules_search": molecules_search_table,
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->).*?(<!-- /table:{name} -->)", re.S)
        try:
            body = make()
        except (KeyError, TypeError, ValueError) as exc:  # a results file of another shape: say so in place
            body = f"_table {name} could not be made from its results file: {exc!r}_"
        text = pattern.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(2), text)
    return text


def main() -> None:
    text = README.read_text()
    new = render(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else 1)
    README.write_text(new)
    print(f"updated {README}")


if __name__ == "__main__":
    main()
