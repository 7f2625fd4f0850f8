"""Inference-only levers for the Omniglot encoders, measured on the Vinyals VALIDATION split (issue 16).

Two levers that need no training, each measured on validation only (never test), for the committed Conv-4
checkpoints:

* **shift test-time augmentation**: an image's embedding is the mean of the L2-normalised embeddings of the
  image and its four one-pixel-scale shifts (affine translation by +-0.07 of the half-width, i.e. ~1 pixel at
  28x28), for support and query alike (inductive: each image is processed alone);
* **ensembles**: the concatenation of several encoders' normalised embeddings (each trained on the background
  classes only, selected on validation), i.e. a wider encoder made of existing ones.

Episodes: 20-way 1-shot and 5-way 1-shot, 5 queries per class, ``--episodes`` seeded episodes, nearest
prototype by Euclidean distance on the (concatenated) normalised embeddings. Writes
``benchmarks/results/omniglot_inference_levers.json``.

    python benchmarks/omniglot_inference_levers.py --episodes 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from oneshot.checkpoint import load_checkpoint
from oneshot.evaluation import embed_all, mean_ci95
from oneshot.experiment import load_split
from oneshot.provenance import command_line, provenance

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {
    "protonet": "src/oneshot/weights/protonet_conv4_vinyals.safetensors",
    "siamese": "models/siamese_conv4_vinyals.safetensors",
    "memory": "models/memory_conv4_vinyals.safetensors",
}
SHIFTS = ((0.0, 0.0), (0.07, 0.0), (-0.07, 0.0), (0.0, 0.07), (0.0, -0.07))


def shifted(images: torch.Tensor, tx: float, ty: float) -> torch.Tensor:
    """uint8 images (N, C, H, W) translated by (tx, ty) in normalised coordinates, zero fill."""
    if tx == 0.0 and ty == 0.0:
        return images
    theta = torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty]]).expand(images.shape[0], 2, 3)
    x = images.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False).round().clamp(0, 255).to(images.dtype)


def embeddings(path: str, images: torch.Tensor) -> dict[bool, torch.Tensor]:
    """(N, D) L2-normalised embeddings without (False) and with (True) the mean over SHIFTS."""
    method = load_checkpoint(ROOT / path).method.eval()
    with torch.no_grad():
        z = [F.normalize(embed_all(method, shifted(images, tx, ty), torch.device("cpu")).float(), dim=1) for tx, ty in SHIFTS]
    return {False: z[0], True: F.normalize(torch.stack(z).mean(0), dim=1)}


def episode_accuracy(z: torch.Tensor, labels: np.ndarray, ways: int, shots: int, episodes: int, queries: int = 5) -> list[float]:
    """Per-episode nearest-prototype accuracy on seeded episodes (seed 0)."""
    rng = np.random.default_rng(0)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = np.array(sorted(by_class))
    accs = []
    for _ in range(episodes):
        picked = [rng.permutation(by_class[c])[: shots + queries] for c in rng.choice(classes, ways, replace=False)]
        s = np.concatenate([p[:shots] for p in picked])
        q = np.concatenate([p[shots:] for p in picked])
        protos = z[s].view(ways, shots, -1).mean(1)
        pred = torch.cdist(z[q], protos).argmin(1).numpy()
        accs.append(float((pred == np.repeat(np.arange(ways), queries)).mean()))
    return accs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/omniglot_inference_levers.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_split("omniglot", "vinyals", "val", 28, None)
    labels = data.labels.numpy()
    per_member = {n: embeddings(path, data.images) for n, path in MEMBERS.items()}
    z = {(n, tta): per_member[n][tta] for n in MEMBERS for tta in (False, True)}
    combos = [(n,) for n in MEMBERS] + [tuple(MEMBERS)]
    rows = []
    for combo in combos:
        for tta in (False, True):
            zz = torch.cat([z[(n, tta)] for n in combo], 1)
            row: dict = {"members": list(combo), "shift_tta": tta}
            for ways, shots in ((20, 1), (5, 1)):
                m, ci = mean_ci95(episode_accuracy(zz, labels, ways, shots, a.episodes))
                row[f"{ways}w{shots}s"] = {"accuracy": m, "ci95": ci}
            rows.append(row)
            print(
                f"{'+'.join(combo):26s} tta={tta!s:5s} 20w1s {100 * row['20w1s']['accuracy']:.2f} 5w1s {100 * row['5w1s']['accuracy']:.2f}",
                flush=True,
            )
    out = {
        "benchmark": "omniglot_inference_levers",
        "split": "vinyals val (choices only; no test figure is computed here)",
        "episodes": a.episodes,
        "shifts": SHIFTS,
        "members": MEMBERS,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        **provenance(command_line()),
    }
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
