"""Do the training-speed levers keep training the same? Short validation curves with and without each.

ProtoNet, Conv-4, Vinyals split, the same seeds: a reference run (one thread, otherwise the defaults) and one run
per lever (two threads, channels-last off, ``--compile on``, first batch norm not folded, fused first-block kernel off), each validated every ``--eval-every`` episodes on the same validation
episodes. Writes ``benchmarks/results/lever_curves.json``: per lever its validation accuracies, the largest
difference from the reference curve and whether every point lies within the two runs' 95% intervals.

Example::

    python benchmarks/lever_curves.py --episodes 300 --eval-every 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from oneshot.data.omniglot import load_omniglot
from oneshot.encoders import build_encoder
from oneshot.methods import build_method
from oneshot.provenance import provenance
from oneshot.training import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
# The reference runs one thread (fast on a shared machine); each other run differs from it by one lever.
LEVERS = {
    "threads_1": {"threads": 1},
    "threads_2": {"threads": 2},
    "channels_last_off": {"threads": 1, "channels_last": False},
    "compile_on": {"threads": 1, "compile": "on"},
    "fold_bn_off": {"threads": 1, "fold_batch_norm": "off"},  # the reference folds (auto on CPU)
    "fused_kernel_off": {"threads": 1, "fused_kernel": "off"},  # and runs the fused first-block kernel
}
REFERENCE = "threads_1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--val-episodes", type=int, default=200)
    p.add_argument("--levers", default=",".join(LEVERS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds per lever (several: mean curves)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lever_curves.json"))
    args = p.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    train_data = load_omniglot("vinyals", "train", 28, args.data_dir)
    val_data = load_omniglot("vinyals", "val", 28, args.data_dir)
    base = TrainConfig(
        episodes=args.episodes, ways=args.ways, eval_every=args.eval_every, val_ways=20, val_shots=1, val_queries=5,
        val_episodes=args.val_episodes, device="cpu", seed=0,
    )  # fmt: skip
    curves: dict[str, dict] = {}
    for name in args.levers.split(","):
        runs = []
        for seed in args.seeds:
            cfg = dataclasses.replace(base, seed=seed, **LEVERS[name])
            torch.manual_seed(seed)
            method = build_method("protonet", build_encoder("conv4"))
            tick = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = train(
                    method, train_data, val_data, cfg, Path(tmp) / "m.safetensors", {"method": "protonet", "encoder": "conv4"}
                )
            runs.append(
                {
                    "seed": seed,
                    "val_accuracy": [h["val_accuracy"] for h in res.history],
                    "val_ci95": [h["val_ci95"] for h in res.history],
                    "loss": [h["loss"] for h in res.history],
                    "wall_seconds": time.perf_counter() - tick,
                    "images_per_second": res.images_per_second,
                }
            )
            print(name, seed, [f"{100 * a:.2f}" for a in runs[-1]["val_accuracy"]], f"{res.images_per_second:.0f} img/s", flush=True)
        curves[name] = {"config": LEVERS[name], **runs[0], "seeds": runs}
        if len(runs) > 1:  # the mean curve over seeds and the spread between seeds at each point
            points = list(zip(*(r["val_accuracy"] for r in runs), strict=True))
            curves[name]["mean_val_accuracy"] = [statistics.fmean(p) for p in points]
            curves[name]["seed_sd"] = [statistics.stdev(p) for p in points]
    ref = curves.get(REFERENCE)
    if ref:
        for c in curves.values():
            diffs = [abs(a - b) for a, b in zip(c["val_accuracy"], ref["val_accuracy"], strict=True)]
            c["max_abs_diff"] = max(diffs)
            c["within_ci95"] = all(
                d <= (ca**2 + cb**2) ** 0.5 for d, ca, cb in zip(diffs, c["val_ci95"], ref["val_ci95"], strict=True)
            )
            if "mean_val_accuracy" in c:  # seeds: is the difference of the mean curves within what seeds alone give?
                n = len(args.seeds)
                mean_diffs = [abs(a - b) for a, b in zip(c["mean_val_accuracy"], ref["mean_val_accuracy"], strict=True)]
                c["max_abs_diff_of_means"] = max(mean_diffs)
                c["means_within_2se"] = all(
                    d <= 2 * ((sa**2 + sb**2) / n) ** 0.5
                    for d, sa, sb in zip(mean_diffs, c["seed_sd"], ref["seed_sd"], strict=True)
                )
    shape = {"ways": args.ways, "shots": 1, "queries": 5, "episodes": args.episodes, "eval_every": args.eval_every, "seeds": args.seeds}
    result = {"name": "lever_curves", "train_shape": shape, "validation": "20-way 1-shot 5-query, "
              f"{args.val_episodes} episodes, val_seed 1", "reference": REFERENCE, "curves": curves, **provenance(command)}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
