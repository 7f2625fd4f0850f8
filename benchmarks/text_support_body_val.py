"""Issue 13, protocol 1(b) lever on ``val`` only: tune MiniLM's whole body on one 150-way K-shot support draw.

The support is draw ``--seed`` (default 1000, a selection draw: never a test draw) of K examples per intent from
``train``, drawn as ``benchmarks/text_clinc150.py`` draws; the body is tuned with the supervised contrastive loss
(``oneshot.modalities.text.finetune``, two dropout views) for each ``--epochs`` value from the pretrained weights;
accuracy is nearest template (the support's class means) on all 3,000 in-scope ``val`` utterances, frozen
against tuned. One thread. Writes ``benchmarks/results/text_support_body_val.json``.

Usage: python benchmarks/text_support_body_val.py --shots 5 --epochs 4 10 --lr 5e-5 --views 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    import torch
    from text_clinc150 import draw

    from oneshot.data.clinc150 import load_clinc150
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.finetune import FinetuneConfig, finetune
    from oneshot.modalities.text.intents import class_templates, nearest
    from oneshot.provenance import command_line, provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--epochs", type=int, nargs="+", default=[4, 10])
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_support_body_val.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_clinc150()
    pos = {n: i for i, n in enumerate(d.intents)}
    tr, va = d["train"], d["val"]
    ytr = np.array([pos[label] for label in tr.labels])
    yva = np.array([pos[label] for label in va.labels])
    sup = draw(ytr, list(range(len(d.intents))), args.shots, args.seed)  # the draw text_clinc150.py makes
    examples: dict[str, list[str]] = {}
    for i in sup:
        examples.setdefault(tr.labels[i], []).append(tr.texts[i])

    def val_accuracy(enc) -> float:
        xs = enc.embed_texts([tr.texts[i] for i in sup], warn=False)
        t = class_templates(xs, ytr[sup], len(d.intents))
        return float((nearest(enc.embed_texts(va.texts, warn=False), t)[0] == yva).mean())

    rows = [{"epochs": 0, "val_accuracy": val_accuracy(load_embedder("text")), "seconds": 0.0}]
    print(rows[-1], flush=True)
    for e in args.epochs:
        enc = load_embedder("text")
        t0 = time.perf_counter()
        res = finetune(enc, examples, FinetuneConfig(epochs=e, lr=args.lr, views=args.views, head_steps=0, seed=0))
        rows.append({"epochs": e, "val_accuracy": val_accuracy(enc), "seconds": res.seconds, "final_loss": res.final_loss})
        print(rows[-1], f"({time.perf_counter() - t0:.0f}s)", flush=True)
    out = {
        "name": "text_support_body_val",
        "shots": args.shots,
        "lr": args.lr,
        "views": args.views,
        "seed": args.seed,
        "rows": rows,
        **provenance(command_line()),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
