"""Semi-supervised few-shot intents on CLINC150: the few-shot intent classifier self-trained on unlabeled utterances.

Protocol (issue 13's protocol 1 with unlabeled data, its own row): 150-way K-shot, K = 1, 5, 10, support draws 0..9
from ``train`` (the draws of ``benchmarks/text_clinc150.py``), accuracy on all 4,500 in-scope ``test`` queries. The
unlabeled pool is every ``train`` utterance not in the support (labels never read) plus CLINC150's 100 ``oos_train``
utterances. Rows on the same draws: the classifier fitted on the support alone (``fit_mixed``, protocol 6's model:
frozen MiniLM, intent names as descriptions, lexical view) and self-trained (``fit_self_trained``).

Choice on ``val`` only: the fraction ``keep`` of each predicted class's pseudo-labels, over ``--keeps``, by mean
val accuracy at 5 and 10 shots on support draws ``--select-seeds`` (1000, 1001); the test split is read once with
the chosen fraction. Out of scope (5-shot, as protocol 8): ``mean_distance`` with its threshold calibrated on
``val`` + ``oos_val`` (in-scope accuracy within 2 points of no rejection), scored on ``test`` + ``oos_test``.

Writes ``benchmarks/results/text_clinc150_semisupervised.json``.

Usage: python benchmarks/text_clinc150_semisupervised.py [--seeds 10] [--keeps 0.8 0.9 0.95 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


class Data:
    """CLINC150's embeddings (cached per encoder fingerprint), labels, texts and the intent descriptions."""

    def __init__(self, data_dir: str | None) -> None:
        from oneshot.data.clinc150 import intent_description, load_clinc150
        from oneshot.modalities import load_embedder
        from oneshot.modalities.text.cache import cached_embeddings

        self.data = load_clinc150(data_dir)
        enc = load_embedder("text")
        self.n = len(self.data.intents)
        pos = {name: i for i, name in enumerate(self.data.intents)}
        splits = ("train", "val", "test", "oos_train", "oos_val", "oos_test")
        self.emb = {s: cached_embeddings(enc, self.data[s].texts, f"clinc150-{s}") for s in splits}
        self.texts = {s: list(self.data[s].texts) for s in splits}
        self.lab = {s: np.array([pos[x] for x in self.data[s].labels]) for s in ("train", "val", "test")}
        self.desc_texts = [intent_description(i) for i in self.data.intents]
        self.desc = enc.embed_texts(self.desc_texts)

    def support_and_pool(self, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into ``train`` of the seeded support (the benchmark's ``draw``) and of the rest (the pool)."""
        from text_clinc150 import draw

        sup = draw(self.lab["train"], list(range(self.n)), shots, seed)
        return sup, np.setdiff1d(np.arange(len(self.lab["train"])), sup)

    def fit(self, shots: int, seed: int, keep: float | None) -> Any:
        """The support-only classifier (``keep`` None) or the self-trained one."""
        from oneshot.modalities.text.lexical import fit_mixed
        from oneshot.modalities.text.selftrain import fit_self_trained

        sup, pool = self.support_and_pool(shots, seed)
        x, t, y = self.emb["train"][sup], [self.texts["train"][i] for i in sup], self.lab["train"][sup]
        if keep is None:
            return fit_mixed(x, t, y, self.n, self.desc, self.desc_texts)
        ux = np.concatenate([self.emb["train"][pool], self.emb["oos_train"]])
        ut = [self.texts["train"][i] for i in pool] + self.texts["oos_train"]
        return fit_self_trained(x, t, y, self.n, ux, ut, self.desc, self.desc_texts, keep=keep)

    def predict(self, model: Any, split: str) -> np.ndarray:
        """(Q, C) probabilities of ``split``'s queries."""
        return model.proba(self.emb[split], self.texts[split])

    def oos(self, model: Any, max_drop: float) -> dict[str, float]:
        """``mean_distance`` rejection calibrated on val + oos_val, scored on test + oos_test."""
        from oneshot.modalities.text.classifier import MEAN_DISTANCE
        from oneshot.modalities.text.intents import calibrate_oos_threshold, oos_metrics

        def scored(split: str) -> tuple[np.ndarray, np.ndarray]:
            return self.predict(model, split).argmax(1), model.embedding.rejection_scores(self.emb[split], MEAN_DISTANCE)

        vp, vs = scored("val")
        th = calibrate_oos_threshold(vp, vs, self.lab["val"], scored("oos_val")[1], max_drop=max_drop)
        tp, ts = scored("test")
        out = oos_metrics(tp, ts, self.lab["test"], scored("oos_test")[1], th.threshold)
        return dict(out, no_rejection_accuracy=float((tp == self.lab["test"]).mean()), threshold=th.threshold)


def agg(values: list[float]) -> dict[str, Any]:
    """Mean, 95% CI half-width, count and the values (fractions, as the other text results files)."""
    from oneshot.modalities.text.intents import mean_ci95

    m, ci = mean_ci95(values)
    return {"mean": m, "ci95": ci, "n": len(values), "values": [float(v) for v in values]}


def main() -> None:
    from oneshot.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="support draws 0..N-1 on test")
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10, 1], help="test shots, in this order")
    ap.add_argument("--keeps", type=float, nargs="+", default=[0.8, 0.9, 0.95, 1.0])
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument("--select-shots", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--max-drop", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_clinc150_semisupervised.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    d = Data(args.data_dir)
    selection: dict[str, dict[str, float]] = {}
    for keep in [None, *args.keeps]:
        name = "support only" if keep is None else f"keep={keep}"
        for k in args.select_shots:
            accs = [float((d.predict(d.fit(k, s, keep), "val").argmax(1) == d.lab["val"]).mean()) for s in args.select_seeds]
            selection.setdefault(name, {})[str(k)] = 100 * float(np.mean(accs))
        print("val", name, selection[name], flush=True)
    chosen = max(args.keeps, key=lambda kp: float(np.mean(list(selection[f"keep={kp}"].values()))))
    print("chosen keep", chosen, flush=True)
    rows: dict[str, dict[str, Any]] = {}
    oos_rows: dict[str, list[dict[str, float]]] = {}

    def write() -> None:  # after every K, so an interrupted run keeps the shots it finished
        oos = {n: {key: agg([r[key] for r in recs]) for key in recs[0]} for n, recs in oos_rows.items()}
        result = {
            "name": "text_clinc150_semisupervised",
            "protocol": (
                "CLINC150 150-way K-shot, support draws 0..N-1 from train, all 4,500 in-scope test queries; unlabeled pool ="
                " train minus the support (labels unread) + the 100 oos_train utterances; accuracy as a fraction"
            ),
            "classifier": "fit_mixed (cosine classifier from description + examples templates, lexical weight 0.2), frozen MiniLM",
            "selection": {
                "split": "val",
                "seeds": args.select_seeds,
                "shots": args.select_shots,
                "val_accuracy_percent": selection,
                "keep": chosen,
            },
            "results": rows,
            "oos_5shot": {"score": "mean_distance", "max_drop": args.max_drop, **oos},
            "seconds": time.perf_counter() - t0,
            **provenance(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}", flush=True)

    for k in args.shots:
        per: dict[str, list[float]] = {"support_only": [], "self_trained": []}
        for seed in range(args.seeds):
            for name, keep in (("support_only", None), ("self_trained", chosen)):
                model = d.fit(k, seed, keep)
                per[name].append(float((d.predict(model, "test").argmax(1) == d.lab["test"]).mean()))
                if k == 5:
                    oos_rows.setdefault(name, []).append(d.oos(model, args.max_drop))
            print(k, seed, {n: round(100 * v[-1], 2) for n, v in per.items()}, flush=True)
        diff = [a - b for a, b in zip(per["self_trained"], per["support_only"], strict=True)]
        rows[str(k)] = {
            **{n: agg(v) for n, v in per.items()},
            "paired_gain": agg(diff),
            "self_trained_better": int(sum(x > 0 for x in diff)),
        }
        print("shots", k, {n: (round(100 * r["mean"], 2), round(100 * r["ci95"], 2)) for n, r in rows[str(k)].items() if isinstance(r, dict)}, flush=True)
        write()


if __name__ == "__main__":
    main()
