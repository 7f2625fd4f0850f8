"""Record finished training runs -- command, learning curve, training time -- in one results file.

A run's checkpoint keeps its command and configuration but not its curve; the resume state beside it
(``<checkpoint>.resume``) keeps the validation history, the episodes run and the training seconds. This script
reads both for each run named and writes them side by side, so a results file shows the candidates a choice was
made among (validation only) and whether more training would have moved them::

    python benchmarks/training_record.py --out benchmarks/results/lake_encoder_candidates.json \\
        --chosen lake_rot_aug runs/lake_rot.safetensors runs/lake_rot_aug.safetensors ...

Each run: ``name`` (the checkpoint's stem), ``command``, ``method``, ``encoder`` and its options, ``config``,
``episodes_run``, ``train_seconds`` (validation excluded, as the training loop counts it), ``best_val`` /
``best_episode`` and ``history`` (episode, validation accuracy and CI, training loss).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open

from oneshot.checkpoint import load_checkpoint
from oneshot.provenance import provenance


def run_record(checkpoint: Path) -> dict:
    """One run's record from its checkpoint and its resume state."""
    meta = load_checkpoint(checkpoint).metadata
    with safe_open(str(checkpoint) + ".resume", framework="numpy") as f:
        state = json.loads((f.metadata() or {})["resume"])
    training = meta.get("training", {})
    return {
        "name": checkpoint.stem,
        "command": training.get("command"),
        "method": meta.get("method"),
        "method_options": meta.get("method_options", {}),
        "encoder": meta.get("encoder"),
        "encoder_options": meta.get("encoder_options", {}),
        "config": training.get("config"),
        "episodes_run": state["episode"],
        "train_seconds": state["seconds"],
        "images": state["images"],
        "best_val": state["best"],
        "best_val_ci95": state["best_ci"],
        "best_episode": state["best_episode"],
        "history": [{k: h[k] for k in ("episode", "val_accuracy", "val_ci95", "loss") if k in h} for h in state["history"]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints, each with its .resume beside it")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--chosen", default=None, help="the run kept (by name), chosen on validation")
    p.add_argument("--note", default="", help="what the runs compare")
    a = p.parse_args()
    runs = [run_record(c) for c in a.checkpoints]
    for r in runs:
        curve = ", ".join(f"{h['episode']}: {100 * h['val_accuracy']:.2f}" for h in r["history"])
        print(
            f"{r['name']}: best val {100 * r['best_val']:.2f} at {r['best_episode']} ({r['train_seconds'] / 60:.0f} min); {curve}"
        )
    out = {"benchmark": "training_record", "note": a.note, "chosen": a.chosen, "runs": runs, **provenance()}
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
