"""AT&T faces: 20-way 1-shot identification, verification and the gallery flow on people never seen in training.

Evaluates each given checkpoint (trained on s1-s20 by ``benchmarks/train_photo.py``), picks the one with the best
validation accuracy (s17-s20, recorded in the checkpoint) as *the* result, and runs the raw-pixel and eigenface
baselines on the same episodes and pairs. Writes ``benchmarks/results/faces_att.json`` and the ROC plot
``benchmarks/results/faces_att_roc.png``; ``--copy-to`` copies the chosen checkpoint (e.g. to ``models/``).

    python benchmarks/faces_att.py --checkpoints runs/faces_aug.safetensors runs/faces_noaug.safetensors \
        --copy-to models/protonet_resnet12s_att.safetensors
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
from oneshot.protocols.faces import run_faces
from oneshot.provenance import git_commit, machine_description, now_iso

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--copy-to", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/faces_att.json"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="training minutes of the chosen run when it was stopped before its --minutes budget (else the budget)",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    candidates = []
    for c in a.checkpoints:
        t = read_metadata(c).get("training", {})
        candidates.append(
            {
                "checkpoint": c,
                "val_accuracy": t.get("val_accuracy"),
                "val_shape": t.get("val_shape"),
                "augment": (t.get("config") or {}).get("augment"),
                "train_command": t.get("command"),
                "episodes_trained": t.get("episodes_trained"),
            }
        )
    chosen = max(candidates, key=lambda r: r["val_accuracy"])
    t0 = time.perf_counter()
    res = run_faces(chosen["checkpoint"], a.episodes, roc_png=Path(a.out).with_name("faces_att_roc.png"))
    res["evaluation_cpu_seconds"] = round(time.perf_counter() - t0, 1)
    meta = read_metadata(chosen["checkpoint"])
    train = meta.get("training", {})
    res["training"] = {
        # A warm-started run (train_photo.py --init) counts the minutes and episodes of the run it continued.
        "minutes": round(
            (a.train_minutes if a.train_minutes is not None else train.get("config", {}).get("max_minutes", 0))
            + (train.get("init_from") or {}).get("minutes", 0),
            1,
        ),
        "episodes": train.get("episodes_trained", 0) + (train.get("init_from") or {}).get("episodes", 0),
        "init_from": train.get("init_from"),
        "device": train.get("device"),
        "encoder": meta["encoder"],
        "encoder_options": meta["encoder_options"],
    }
    if a.copy_to:
        shutil.copyfile(chosen["checkpoint"], a.copy_to)
        res["checkpoint"] = a.copy_to
    res.update(
        candidates=candidates,
        chosen_by="validation accuracy (s17-s20)",
        command="python " + " ".join(shlex.quote(x) for x in sys.argv),
        commit=git_commit(),
        machine=machine_description(),
        date=now_iso(),
        note="CPU times measured on 2 cores shared with other jobs (contended)",
    )
    Path(a.out).write_text(json.dumps(res, indent=2))
    m = res["methods"]
    for name, r in m.items():
        v = r["verification"]
        print(
            f"{name:11s} 20-way 1-shot {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}  EER {100 * v['eer']:.2f}%  "
            f"TAR@1e-2 {100 * v['tar_at_far_1e-2']:.1f}%  TAR@1e-3 {100 * v['tar_at_far_1e-3']:.1f}%"
        )
    print(json.dumps(res["gallery"]))


if __name__ == "__main__":
    main()
