"""Two more levers of the few-shot intent classifier, measured on CLINC150 ``val`` only (issue 13; docs/text.md).

1. Label smoothing of the cosine classifier's cross-entropy (0 = the shipped fit).
2. The lexical mixing weight chosen per K instead of one weight for 5 and 10 shots (the shipped 0.2).

150-way, support draws ``--seeds`` (default 1000 1001, the benchmark's selection draws) from ``train``, all 3,000
``val`` queries; the classifier of ``oneshot.modalities.text.classifier`` (scale 10, 100 steps, descriptions = the
intent names) and the lexical view of ``oneshot.modalities.text.lexical`` fitted once per draw. The test split is
never read. Writes ``benchmarks/results/text_classifier_val_levers.json``.

Usage: python benchmarks/text_classifier_val_levers.py [--seeds 1000 1001] [--shots 5 10]
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

SMOOTHING = (0.0, 0.05, 0.1, 0.2)
WEIGHTS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def main() -> None:
    from oneshot.data.clinc150 import intent_description, load_clinc150
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.cache import cached_embeddings
    from oneshot.modalities.text.classifier import ClassifierConfig, fit_cosine_classifier
    from oneshot.modalities.text.lexical import LEXICAL_WEIGHT, fit_lexical, mix
    from oneshot.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_classifier_val_levers.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    data = load_clinc150()
    enc = load_embedder("text")
    pos = {n: i for i, n in enumerate(data.intents)}
    n = len(data.intents)
    emb = {s: cached_embeddings(enc, data[s].texts, f"clinc150-{s}") for s in ("train", "val")}
    lab = {s: np.array([pos[x] for x in data[s].labels]) for s in ("train", "val")}
    desc_texts = [intent_description(i) for i in data.intents]
    desc = enc.embed_texts(desc_texts)
    acc: dict[str, dict[str, list[float]]] = {}
    for k in args.shots:
        for seed in args.seeds:
            rng = np.random.default_rng((seed, 13))  # the draw of sample_support / the benchmark's `draw`
            sup = np.concatenate([rng.permutation(np.flatnonzero(lab["train"] == c))[:k] for c in range(n)])
            texts = [data["train"].texts[i] for i in sup] + desc_texts
            lex = fit_lexical(texts, np.concatenate([lab["train"][sup], np.arange(n)]), n).proba(data["val"].texts)
            for ls in SMOOTHING:
                clf = fit_cosine_classifier(emb["train"][sup], lab["train"][sup], n, desc, ClassifierConfig(label_smoothing=ls))
                p = clf.proba(emb["val"])
                for w in WEIGHTS:
                    a = float((mix(p, lex, w).argmax(1) == lab["val"]).mean())
                    acc.setdefault(f"smoothing={ls} weight={w}", {}).setdefault(str(k), []).append(a)
            print(k, seed, {key: v[str(k)][-1] for key, v in acc.items() if key.endswith(f"weight={LEXICAL_WEIGHT}")}, flush=True)
    table = {key: {kk: 100 * float(np.mean(v)) for kk, v in per.items()} for key, per in acc.items()}
    shipped = table[f"smoothing=0.0 weight={LEXICAL_WEIGHT}"]
    per_k = {str(k): max(WEIGHTS, key=lambda w, k=k: table[f"smoothing=0.0 weight={w}"][str(k)]) for k in args.shots}
    result = {
        "protocol": f"CLINC150 150-way, support draws {args.seeds} from train, all val queries; accuracy %",
        "shipped": {"label_smoothing": 0.0, "lexical_weight": LEXICAL_WEIGHT, "val_accuracy": shipped},
        "val_accuracy": table,
        "lexical_weight_per_k": {
            k: {"weight": w, "val_accuracy": table[f"smoothing=0.0 weight={w}"][k]} for k, w in per_k.items()
        },
        "seconds": time.perf_counter() - t_start,
        **provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"shipped": result["shipped"], "per_k": result["lexical_weight_per_k"]}), flush=True)
    for key, v in table.items():
        print(key, {kk: round(x, 2) for kk, x in v.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
