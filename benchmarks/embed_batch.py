"""Embedding speed of the shipped Omniglot encoders by CPU batch size: the old fixed batch of 2048 images
against ``oneshot.evaluation.embedding_batch``'s default (about 25,000 pixels a batch: 32 drawings at 28x28,
16 at 56x56), and a few sizes around it.

Every size is timed in the same process, interleaved round by round (so a noisy neighbour slows all of them
alike), on real Omniglot drawings (the Vinyals test split at each encoder's input size); the figure kept per
size is the median round's images per second, and each default's speed-up is that ratio. The script also checks
that the embeddings do not depend on the batch size (eval mode: batch norm uses its running statistics) and
records the largest difference. Writes ``benchmarks/results/embed_batch.json`` with the command, commit,
machine and date.

    python benchmarks/embed_batch.py --threads 2
    python benchmarks/embed_batch.py --threads 2 --out benchmarks/results/embed_batch_resnet12.json \
        --encoders models/protonet_resnet12s_att.safetensors models/simclr_resnet12s_neu.safetensors

Other encoders (``--encoders``: names or checkpoint files, e.g. the ResNet-12 faces and steel-defect encoders) are
timed on the same drawings decoded at their input size: only the shape matters for speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from oneshot.checkpoint import load_checkpoint
from oneshot.evaluation import embed_all, embedding_batch
from oneshot.experiment import load_split
from oneshot.provenance import provenance
from oneshot.weights import resolve_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", nargs="+", default=["omniglot", "omniglot-lake-v3", "omniglot-lake-v4"])
    p.add_argument("--images", type=int, default=2048, help="drawings embedded per timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "embed_batch.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    rows = []
    for name in a.encoders:
        ck = load_checkpoint(resolve_checkpoint(name))
        size = ck.preprocessing.size
        images = load_split("omniglot", "vinyals", "test", size, None).images[: a.images]
        images = images.expand(-1, ck.preprocessing.channels, -1, -1).contiguous()  # grey drawings for an RGB encoder
        default = embedding_batch(images.shape, cpu)
        sizes = sorted({2048, 256, 64, default, max(1, default // 2), default * 2})
        reference = embed_all(ck.method, images, cpu, batch_size=2048)
        times: dict[int, list[float]] = {b: [] for b in sizes}
        worst = 0.0
        for _ in range(a.rounds):
            for b in sizes:
                t0 = time.perf_counter()
                z = embed_all(ck.method, images, cpu, batch_size=b)
                times[b].append(time.perf_counter() - t0)
                worst = max(worst, float((z - reference).abs().max()))
        speed = {b: len(images) / statistics.median(t) for b, t in times.items()}
        row = {
            "encoder": name,
            "input_size": size,
            "default_batch": default,
            "images_per_second": {str(b): round(s, 1) for b, s in speed.items()},
            "speedup_default_vs_2048": round(speed[default] / speed[2048], 3),
            "max_abs_difference_vs_2048": worst,
        }
        rows.append(row)
        print(
            name,
            f"{size}x{size}",
            {b: round(s) for b, s in speed.items()},
            f"default {default}: x{row['speedup_default_vs_2048']}",
            flush=True,
        )
    out = {"benchmark": "embed_batch", "images": a.images, "rounds": a.rounds, "threads": a.threads, "rows": rows}
    out.update(provenance())
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
