"""Print the gallery benchmark results (benchmarks/results/gallery_*.json) as markdown tables for docs/gallery.md."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def open_set() -> None:
    path = RESULTS / "gallery_open_set.json"
    if not path.is_file():
        return
    r = json.loads(path.read_text())
    s = r["summary"]
    print(f"Open-set Omniglot ({len(r['runs'])} seeds, mean +- std; {r['date']}, commit {r['commit'][:10]})\n")
    acc = s["closed_set_accuracy"]
    print(f"closed-set accuracy (100-way, 1 drawing enrolled): **{acc['mean']:.4f} +- {acc['std']:.4f}**\n")
    print(
        "| target FAR | identify threshold | identify FAR (500 strangers) | identify TAR | verify threshold | verify FAR | verify TAR |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, v in s.items():
        if k == "closed_set_accuracy":
            continue
        print(
            f"| {k} | {v['identify_threshold']['mean']:.4f} | {v['identify_far']['mean']:.4f} +- {v['identify_far']['std']:.4f} | "
            f"{v['identify_tar']['mean']:.4f} +- {v['identify_tar']['std']:.4f} | {v['verify_threshold']['mean']:.4f} | "
            f"{v['verify_far']['mean']:.5f} +- {v['verify_far']['std']:.5f} | {v['verify_tar']['mean']:.4f} +- {v['verify_tar']['std']:.4f} |"
        )
    print()


def scale() -> None:
    path = RESULTS / "gallery_scale.json"
    if not path.is_file():
        return
    rows = json.loads(path.read_text())
    print(
        "| data | dim | templates | enrol /s | DB B/template | exact p50 / p99 ms | exact batch q/s | HNSW (M, efC) ef | recall@1 | HNSW p50 / p99 ms | HNSW batch q/s | index B/template (x raw) | HNSW build s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = sorted(rows.values(), key=lambda r: (r["data"], r["dim"], r["n"]))
    for r in order:
        e = r.get("enrol", {})
        ex = r["index"]["exact"]
        h = r["index"]["hnsw"]
        for ef, v in h["ef_search"].items():
            print(
                f"| {r['data']} | {r['dim']} | {r['n']:,} | {e.get('templates_per_second', float('nan')):,.0f} | "
                f"{e.get('db_bytes_per_template', float('nan')):,.0f} | {ex['single']['p50_ms']:.3f} / {ex['single']['p99_ms']:.3f} | "
                f"{ex['batch']['queries_per_second']:,.0f} | ({h['m']}, {h['ef_construction']}) {ef} | {v['recall_at_1']:.4f} | "
                f"{v['single']['p50_ms']:.3f} / {v['single']['p99_ms']:.3f} | {v['batch']['queries_per_second']:,.0f} | "
                f"{h['bytes_per_template']:,.0f} ({h['memory_vs_raw']:.2f}x); exact {ex['bytes_per_template']:,.0f} ({ex['memory_vs_raw']:.2f}x) | {h['build_seconds']:.0f} |"
            )
    print()


if __name__ == "__main__":
    open_set()
    scale()
