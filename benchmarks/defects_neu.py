"""NEU steel defects: 6-way 1-shot and 5-shot episodes from images the self-supervised pretraining never saw.

Evaluates a SimCLR checkpoint trained on NEU's unlabelled pool (``benchmarks/train_photo.py --dataset neu
--method simclr``) against raw pixels, the same encoder with random weights and the Omniglot encoder, on the same
seeded episodes. Writes ``benchmarks/results/defects_neu.json``.

    python benchmarks/defects_neu.py --checkpoint runs/simclr_neu.safetensors \
        --copy-to models/simclr_resnet12s_neu.safetensors
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from oneshot.checkpoint import read_metadata
from oneshot.protocols.defects import run_defects
from oneshot.provenance import git_commit, machine_description, now_iso

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--omniglot", default=str(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors"))
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--copy-to", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/defects_neu.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = run_defects(a.checkpoint, a.episodes, a.omniglot)
    res["evaluation_cpu_seconds"] = round(time.perf_counter() - t0, 1)
    meta = read_metadata(a.checkpoint)
    t = meta.get("training", {})
    res["episodes"] = a.episodes
    res["training"] = {
        # A warm-started run (train_photo.py --init) counts the minutes and episodes of the run it continued.
        "minutes": round(t.get("config", {}).get("max_minutes", 0) + (t.get("init_from") or {}).get("minutes", 0), 1),
        "episodes": t.get("episodes_trained", 0) + (t.get("init_from") or {}).get("episodes", 0),
        "init_from": t.get("init_from"),
        "val_accuracy": t.get("val_accuracy"),
        "val_shape": t.get("val_shape"),
        "command": t.get("command"),
        "encoder": meta["encoder"],
        "encoder_options": meta["encoder_options"],
        "device": t.get("device"),
    }
    if a.copy_to:
        shutil.copyfile(a.checkpoint, a.copy_to)
        res["checkpoint"] = a.copy_to
    res.update(
        command="python " + " ".join(shlex.quote(x) for x in sys.argv),
        commit=git_commit(),
        machine=machine_description(),
        date=now_iso(),
        note="CPU times measured on 2 cores shared with other jobs (contended)",
    )
    Path(a.out).write_text(json.dumps(res, indent=2))
    if "logistic_rule_validation" in res:
        print("validation (6-way 5-shot):", json.dumps(res["logistic_rule_validation"]["accuracy"]))
    for name, r in res["methods"].items():
        shapes = {k: v for k, v in r.items() if isinstance(v, dict)}
        print(f"{name:24s} " + "  ".join(f"{k} {100 * v['accuracy']:.2f} +- {100 * v['ci95']:.2f}" for k, v in shapes.items()))


if __name__ == "__main__":
    main()
