"""Validation-only probe of Omniglot encoder candidates, alone and as an ensemble of any input sizes (issue 16).

Each checkpoint embeds the split's ``val`` part at its own input size (``preprocessing.size``: a 56x56 encoder
reads the drawings decoded at 56x56, a 28x28 one at 28x28; the images are the same drawings in the same order),
with and without shift TTA; then the members' embeddings are combined as ``oneshot evaluate`` combines an
ensemble (each member L2-normalised, concatenated; ``oneshot.inference.combine``) and scored by the one
evaluation path on the same seeded episodes (1000 per shape, 15 queries, seed 0). Nothing here reads a test
split: it is for choosing among candidates. Writes ``--out`` (JSON, with the command, commit, machine and date).

    python benchmarks/omniglot_val_probe.py --split lake --out benchmarks/results/omniglot_val_probe_lake.json \\
        src/oneshot/weights/protonet_conv4_lake_v3.safetensors runs/lake_rot_aug_s56_b5.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omniglot_inference import score as score_shapes  # the same scoring as the inference benchmark

from oneshot.checkpoint import load_checkpoint
from oneshot.experiment import load_split
from oneshot.inference import InferenceOptions, combine, episode_rule, view_embeddings
from oneshot.provenance import provenance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", help="members (one alone is probed alone)")
    p.add_argument("--split", choices=("lake", "vinyals"), default="lake")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    shapes = [(5, 1), (20, 1)] if a.split == "vinyals" else [(20, 1)]
    members, views, labels, data = [], [], None, None
    for path in a.checkpoints:
        ck = load_checkpoint(path)
        part = load_split("omniglot", a.split, "val", ck.preprocessing.size, None)
        if labels is not None and not torch.equal(part.labels, labels):
            raise SystemExit(f"{path}: the val drawings at size {ck.preprocessing.size} are not in the same order")
        labels, data = part.labels, data or part
        views.append(view_embeddings(ck.method, part.images, torch.device("cpu"), "shift"))
        members.append({"checkpoint": str(path), "size": ck.preprocessing.size, "method": ck.metadata["method"]})

    def score(z: torch.Tensor, n_members: int, tta: str) -> dict:
        return score_shapes(data, ck.method, z, episode_rule(ck.method, n_members, InferenceOptions(tta)), shapes, a.episodes)

    rows = []
    for i, m in enumerate(members):
        for tta in ("none", "shift"):
            z = combine([views[i] if tta == "shift" else views[i][:1]])
            rows.append({"members": [m["checkpoint"]], "tta": tta, **score(z, 1, tta)})
            print(Path(m["checkpoint"]).name, tta, {k: round(100 * v["accuracy"], 2) for k, v in rows[-1].items() if "w" in k})
    if len(members) > 1:
        for tta in ("none", "shift"):
            z = combine([v if tta == "shift" else v[:1] for v in views])
            rows.append({"members": [m["checkpoint"] for m in members], "tta": tta, **score(z, len(members), tta)})
            print("ensemble", tta, {k: round(100 * v["accuracy"], 2) for k, v in rows[-1].items() if "w" in k})
    result = {
        "benchmark": "omniglot_val_probe",
        "split": a.split,
        "part": "val",
        "episodes": a.episodes,
        "members": members,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        **provenance(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
