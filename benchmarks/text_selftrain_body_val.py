"""Self-training with the transformer body tuned on the pseudo-labels too (CLINC150 ``val`` only; not shipped).

One support draw (``--shots``, ``--seed``, the draws of ``benchmarks/text_clinc150.py``): the shipped self-trained
fit (``fit_self_trained``, frozen MiniLM) labels the pool (``train`` minus the support, labels unread, + the 100
``oos_train`` utterances); its kept pseudo-labels + the support + the intent names tune the body
(``finetune``: supervised contrastive, one view); each WiSE-FT mix ``--alphas`` of the tuned weights is then
re-embedded and self-trained again, and scored on the 3,000 ``val`` queries. Prints one JSON line per mix
(docs/text.md, "Unlabeled utterances"). About 8 minutes of one core per draw for one epoch.

Usage: python benchmarks/text_selftrain_body_val.py [--shots 5] [--seed 1000] [--epochs 1] [--lr 5e-5]
       [--alphas 0.5 0.7 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--seed", type=int, default=1000, help="support draw (val selection draws are 1000, 1001)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.7, 1.0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.seed < 1000:
        raise SystemExit("draws below 1000 are the test draws: choose on val draws (1000 and up)")

    import torch
    from text_clinc150_semisupervised import Data

    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.finetune import FinetuneConfig, finetune, interpolate_weights
    from oneshot.modalities.text.lexical import fit_mixed
    from oneshot.modalities.text.selftrain import KEEP, confident_per_class, fit_self_trained

    torch.set_num_threads(args.threads)
    d = Data(args.data_dir)
    sup, pool = d.support_and_pool(args.shots, args.seed)
    tr = d.texts["train"]
    t, y = [tr[i] for i in sup], d.lab["train"][sup]
    ut = [tr[i] for i in pool] + d.texts["oos_train"]
    ux = np.concatenate([d.emb["train"][pool], d.emb["oos_train"]])
    frozen = fit_self_trained(d.emb["train"][sup], t, y, d.n, ux, ut, d.desc, d.desc_texts, keep=KEEP)
    frozen_val = float((d.predict(frozen, "val").argmax(1) == d.lab["val"]).mean())
    idx, pseudo = confident_per_class(frozen.proba(ux, ut), KEEP)
    truth = np.concatenate([d.lab["train"][pool], -np.ones(len(d.texts["oos_train"]), np.int64)])
    examples: dict[str, list[str]] = {str(c): [] for c in range(d.n)}
    for text, c in [*zip(t, y, strict=True), *((ut[i], c) for i, c in zip(idx, pseudo, strict=True))]:
        examples[str(int(c))].append(text)
    for c in range(d.n):  # the intent name last, as one more example
        examples[str(c)].append(d.desc_texts[c])
    enc = load_embedder("text")
    start = copy.deepcopy(enc.model.state_dict())
    res = finetune(enc, examples, FinetuneConfig(epochs=args.epochs, lr=args.lr, views=1, seed=0))
    tuned = copy.deepcopy(enc.model.state_dict())
    for alpha in args.alphas:
        enc.model.load_state_dict(tuned)
        if alpha < 1.0:
            interpolate_weights(enc.model, start, alpha)
        t0 = time.perf_counter()
        e_train = enc.embed_texts(tr, warn=False)
        e_oos = enc.embed_texts(d.texts["oos_train"], warn=False)
        e_val = enc.embed_texts(d.texts["val"], warn=False)
        desc = enc.embed_texts(d.desc_texts, warn=False)
        only = fit_mixed(e_train[sup], t, y, d.n, desc, d.desc_texts)
        st = fit_self_trained(e_train[sup], t, y, d.n, np.concatenate([e_train[pool], e_oos]), ut, desc, d.desc_texts, keep=KEEP)
        row = {
            "shots": args.shots,
            "seed": args.seed,
            "epochs": args.epochs,
            "lr": args.lr,
            "alpha": alpha,
            "pseudo_labels": len(idx),
            "pseudo_label_accuracy": float((truth[idx] == pseudo).mean()),
            "val_frozen_self_trained": frozen_val,
            "val_tuned_support_only": float((only.proba(e_val, d.texts["val"]).argmax(1) == d.lab["val"]).mean()),
            "val_tuned_self_trained": float((st.proba(e_val, d.texts["val"]).argmax(1) == d.lab["val"]).mean()),
            "tune_seconds": res.seconds,
            "embed_seconds": time.perf_counter() - t0,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
