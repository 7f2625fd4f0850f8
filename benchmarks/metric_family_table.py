"""Print the metric-learning family's results (benchmarks/results/*.json) as one Markdown table.

Columns: 5w1s, 5w5s, 20w1s, 20w5s on the Vinyals test split (1000 episodes, seed 0, 95% CI), Lake's 20
runs, verification EER, training wall time, images/s and device; published numbers beside each method.
Usage: python benchmarks/metric_family_table.py [NAME ...]  (default: every family result present).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [
    "protonet_conv4_vinyals",
    "siamese_conv4_vinyals",
    "contrastive_conv4_vinyals",
    "triplet_conv4_vinyals",
    "matching_conv4_vinyals",
    "matching_fce_conv4_vinyals",
    "baseline_conv4_vinyals",
]
# Published Omniglot figures (Vinyals protocol; 5w1s / 5w5s / 20w1s / 20w5s).
PUBLISHED = {
    "protonet": "98.8 / 99.7 / 96.0 / 98.9 (Snell et al. 2017)",
    "siamese": "97.3 / 98.4 / 88.2 / 97.0 (Koch et al. 2015, in Vinyals et al. 2016)",
    "matching": "98.1 / 98.9 / 93.8 / 98.5 (Vinyals et al. 2016)",
}


def row(res: dict) -> str:
    ev = res["evaluation"]
    accs = {(r["ways"], r["shots"]): r for r in ev["results"]}
    cells = [
        f"{100 * accs[s]['accuracy']:.2f} ± {100 * accs[s]['ci95']:.2f}" if s in accs else "-"
        for s in [(5, 1), (5, 5), (20, 1), (20, 5)]
    ]
    lake = f"{100 * ev['lake_runs']['accuracy']:.1f}" if "lake_runs" in ev else "-"
    eer = f"{100 * ev['verification']['eer']:.2f}" if "verification" in ev else "-"
    tr = res["training"]
    opts = res.get("method_options") or ev.get("method_options") or {}
    hidden = {"input_shape", "num_classes", "finetune_steps", "finetune_lr", "steps"}
    shown = {k: v for k, v in opts.items() if k not in hidden}
    label = res["method"] + (" " + ", ".join(f"{k}={v}" for k, v in shown.items()) if shown else "")
    return (
        f"| {label} | " + " | ".join(cells) + f" | {lake} | {eer} | {tr['train_seconds'] / 60:.1f} min, {tr['episodes_run']} ep "
        f"| {tr['images_per_second']:.0f} | {tr['device']} | {PUBLISHED.get(res['method'], 'none on Omniglot')} |"
    )


def main() -> None:
    names = sys.argv[1:] or DEFAULT
    print("| method (options) | 5w1s | 5w5s | 20w1s | 20w5s | Lake 20 runs | EER % | training | images/s | device | published |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        path = ROOT / "benchmarks" / "results" / f"{name}.json"
        if path.is_file():
            print(row(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
