"""Out-of-scope rejection scores of the few-shot intent classifier, measured on CLINC150 ``val`` + ``oos_val`` only.

Issue 13, protocol 4 (docs/text.md "Out of scope"): all 150 intents enrolled 5-shot; the classifier of
``oneshot.modalities.text.classifier`` mixed with the lexical view (the shipped settings: scale 10, prior weight
1, lexical weight 0.2) predicts; each *score* below decides rejection. For every score: the OOS recall on
``oos_val`` (100 queries) at the threshold the benchmark's calibration rule picks (the highest threshold whose
in-scope val accuracy, rejections wrong, stays within 2 points of no rejection) and the AUROC of in-scope
``val`` (3,000) against ``oos_val`` -- a steadier signal than 100 queries. Support draws ``--seeds`` (default
1000 1001, the benchmark's selection draws), paired. The test splits are never read.

Scores (higher = more in scope), all in the frozen MiniLM space (unit embeddings):
- ``template_cosine`` (the shipped score), ``max_template_cosine``;
- ``mahalanobis[a]``: minus the smallest Mahalanobis distance to a class mean (support + description), a
  covariance shared by all classes from the support residuals, shrunk ``(1 - a) S + a tr(S)/d I`` (``lw``:
  Ledoit-Wolf's a) (Lee et al. 2018; Podolskiy et al. 2021); ``..._pred``: the distance to the predicted class;
- ``relative_mahalanobis[bg,a]``: minus min_c (MD_c - MD_0), MD_0 the distance to one background Gaussian fitted
  on all support points (``support``) or on ``oos_train`` + support (``oos``) (Ren et al. 2021);
- ``knn[k]``: the cosine of the k-th nearest support example (Sun et al. 2022);
- ``in_vocabulary``: 1 - the share of the query's words absent from the support + descriptions;
- ``zsum[...]``: sum of scores standardised by their in-scope ``val`` mean / std (no OOS label used);
- ``logistic[...]``: a logistic regression on the scores fitted on one half of val + oos_val, the threshold
  calibrated and scored on the other half, both directions (``halves`` rows; the plain scores on the same halves
  for comparison).

Usage: python benchmarks/text_oos_val_levers.py [--seeds 1000 1001]
"""

# ruff: noqa: B023  (the per-seed closures are called at once, inside the loop that binds them)
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0, "lw")
KS = (1, 2, 3, 5, 10, 20)
WORD = re.compile(r"[a-z0-9']+")


def whitener(resid: np.ndarray, alpha: float | str) -> tuple[np.ndarray, float]:
    """(N, D) centred residuals -> (D, D) W with W W^T = shrunk covariance^-1, and the shrinkage used."""
    n, d = resid.shape
    s = resid.T @ resid / n
    mu = np.trace(s) / d
    if alpha == "lw":
        from sklearn.covariance import ledoit_wolf_shrinkage

        a = float(ledoit_wolf_shrinkage(resid, assume_centered=True))
    else:
        a = float(alpha)
    cov = (1 - a) * s + a * mu * np.eye(d)
    lam, v = np.linalg.eigh(cov)
    return (v / np.sqrt(lam)).astype(np.float64), a


def sqdist(z: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(Q, D) x (C, D) -> (Q, C) squared Euclidean distances."""
    return np.maximum((z * z).sum(1)[:, None] - 2 * z @ m.T + (m * m).sum(1)[None, :], 0.0)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    s = np.concatenate([pos, neg])
    s = np.where(np.isfinite(s), s, -1e30)
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], s))


def main() -> None:
    from oneshot.data.clinc150 import intent_description, load_clinc150
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.cache import cached_embeddings
    from oneshot.modalities.text.classifier import TEMPLATE_COSINE, ClassifierConfig, fit_cosine_classifier
    from oneshot.modalities.text.intents import calibrate_oos_threshold, unit
    from oneshot.modalities.text.lexical import fit_lexical, mix
    from oneshot.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_oos_val_levers.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    data = load_clinc150()
    enc = load_embedder("text")
    pos = {n: i for i, n in enumerate(data.intents)}
    n = len(data.intents)
    splits = ("train", "val", "oos_val", "oos_train")
    emb = {s: cached_embeddings(enc, data[s].texts, f"clinc150-{s}").astype(np.float64) for s in splits}
    lab = {s: np.array([pos.get(x, -1) for x in data[s].labels]) for s in splits}
    desc_texts = [intent_description(i) for i in data.intents]
    desc = enc.embed_texts(desc_texts)
    yv = lab["val"]
    per_seed: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
    preds = []
    for seed in args.seeds:
        rng = np.random.default_rng((seed, 13))  # the benchmark's `draw`
        sup = np.concatenate([rng.permutation(np.flatnonzero(lab["train"] == c))[:5] for c in range(n)])
        xs, ys = emb["train"][sup], lab["train"][sup]
        texts = [data["train"].texts[i] for i in sup] + desc_texts
        clf = fit_cosine_classifier(xs.astype(np.float32), ys, n, desc, ClassifierConfig(scale=10.0, prior_weight=1.0))
        lex = fit_lexical(texts, np.concatenate([ys, np.arange(n)]), n)
        sc: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (val scores, oos_val scores)
        prob = {s: mix(clf.proba(emb[s].astype(np.float32)), lex.proba(data[s].texts), 0.2) for s in ("val", "oos_val")}
        pv, po = prob["val"].argmax(1), prob["oos_val"].argmax(1)
        preds.append(pv)
        q = {"val": emb["val"], "oos_val": emb["oos_val"]}
        pr = {"val": pv, "oos_val": po}

        def put(name: str, f) -> None:
            sc[name] = (f("val"), f("oos_val"))

        put(TEMPLATE_COSINE, lambda s: clf.rejection_scores(q[s].astype(np.float32), TEMPLATE_COSINE, predicted=pr[s]))
        put("max_template_cosine", lambda s: (q[s] @ clf.templates.T).max(1))
        put("max_probability", lambda s: prob[s].max(1))
        put("margin", lambda s: np.diff(np.sort(prob[s], axis=1)[:, -2:], axis=1)[:, 0])
        # class means in the unit space: the 5 examples + the description (weight 1), not renormalised
        xd = np.concatenate([unit(xs), unit(desc).astype(np.float64)])
        yd = np.concatenate([ys, np.arange(n)])
        means = np.zeros((n, xs.shape[1]))
        np.add.at(means, yd, xd)
        means /= np.bincount(yd, minlength=n)[:, None]
        resid = xd - means[yd]
        for a in ALPHAS:
            w, a_used = whitener(resid, a)
            mz = means @ w
            d = {s: sqdist(q[s] @ w, mz) for s in q}
            put(f"mahalanobis[{a}]", lambda s, d=d: -d[s].min(1))
            put(f"mahalanobis_pred[{a}]", lambda s, d=d: -d[s][np.arange(len(d[s])), pr[s]])
            for bg, pts in (("support", xd), ("oos", np.concatenate([xd, emb["oos_train"]]))):
                mu0 = pts.mean(0)
                w0, _ = whitener(pts - mu0, a)
                d0 = {s: (((q[s] - mu0) @ w0) ** 2).sum(1) for s in q}
                put(f"relative_mahalanobis[{bg},{a}]", lambda s, d=d, d0=d0: -(d[s] - d0[s][:, None]).min(1))
            if a == "lw":
                print(f"seed {seed}: Ledoit-Wolf shrinkage {a_used:.3f}", flush=True)
        for dw in (0.0, 0.5, 2.0):  # the description's weight in the class mean (1 above)
            m_w = np.zeros_like(means)
            np.add.at(m_w, ys, unit(xs))
            m_w = (m_w + dw * unit(desc)) / (np.bincount(ys, minlength=n)[:, None] + dw)
            put(f"euclidean_desc_weight[{dw}]", lambda s, m_w=m_w: -sqdist(q[s], m_w).min(1))
        var_c = np.bincount(yd, weights=(resid**2).sum(1), minlength=n) / np.bincount(yd, minlength=n)
        for lam in (0.5, 0.8):  # per-class spread, shrunk towards the pooled one
            v = lam * var_c.mean() + (1 - lam) * var_c
            d = {s: sqdist(q[s], means) / v[None, :] for s in q}
            put(f"euclidean_class_spread[{lam}]", lambda s, d=d: -d[s].min(1))
        sims = {s: np.sort(q[s] @ unit(xs).T.astype(np.float64), axis=1)[:, ::-1] for s in q}
        for k in KS:
            put(f"knn[{k}]", lambda s, k=k: sims[s][:, k - 1])
        vocab = {w for t in texts for w in WORD.findall(t.lower())}
        qtexts = {"val": data["val"].texts, "oos_val": data["oos_val"].texts}

        def invocab(s: str) -> np.ndarray:
            out = []
            for t in qtexts[s]:
                ws = WORD.findall(t.lower())
                out.append(np.mean([w in vocab for w in ws]) if ws else 0.0)
            return np.array(out)

        put("in_vocabulary", invocab)
        per_seed.append(sc)
        print(f"seed {seed}: scores done ({time.perf_counter() - t_start:.0f}s)", flush=True)

    def zsum(sc: dict, names: list[str], weights: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        weights = weights or [1.0] * len(names)
        v = o = 0.0
        for nm, wt in zip(names, weights, strict=True):
            a, b = sc[nm]
            m, sd = a.mean(), a.std() + 1e-12
            v, o = v + wt * (a - m) / sd, o + wt * (b - m) / sd
        return np.asarray(v), np.asarray(o)

    best_maha = None

    def evaluate(names: list[str]) -> dict[str, dict]:
        rows = {}
        for nm in names:
            rec, au = [], []
            for sc, pv in zip(per_seed, preds, strict=True):
                a, b = sc[nm]
                rec.append(calibrate_oos_threshold(pv, a, yv, b, max_drop=0.02).val_oos_recall)
                au.append(auroc(a, b))
            rows[nm] = {"val_oos_recall": float(np.mean(rec)), "val_auroc": float(np.mean(au)), "per_seed_recall": rec}
            print(f"{nm:45s} recall {100 * np.mean(rec):5.1f}  AUROC {100 * np.mean(au):5.2f}", flush=True)
        return rows

    rows = evaluate(list(per_seed[0]))
    mahas = [k for k in rows if k.startswith("mahalanobis[") or k.startswith("relative_")]
    best_maha = max(mahas, key=lambda k: rows[k]["val_auroc"])
    best_knn = max([k for k in rows if k.startswith("knn")], key=lambda k: rows[k]["val_auroc"])
    combos = {
        f"zsum[{TEMPLATE_COSINE}+{best_maha}]": [TEMPLATE_COSINE, best_maha],
        f"zsum[{TEMPLATE_COSINE}+{best_knn}]": [TEMPLATE_COSINE, best_knn],
        f"zsum[{best_maha}+{best_knn}]": [best_maha, best_knn],
        f"zsum[{TEMPLATE_COSINE}+{best_maha}+in_vocabulary]": [TEMPLATE_COSINE, best_maha, "in_vocabulary"],
        f"zsum[{TEMPLATE_COSINE}+in_vocabulary]": [TEMPLATE_COSINE, "in_vocabulary"],
        "zsum[mahalanobis[1.0]+max_probability]": ["mahalanobis[1.0]", "max_probability"],
        "zsum[mahalanobis[1.0]+margin]": ["mahalanobis[1.0]", "margin"],
    }
    for sc in per_seed:
        for nm, parts in combos.items():
            sc[nm] = zsum(sc, parts)
    rows.update(evaluate(list(combos)))
    halves = half_rows(per_seed, preds, yv, [TEMPLATE_COSINE, best_maha, best_knn, "in_vocabulary", "max_probability"])
    out = {
        "name": "text_oos_val_levers",
        "protocol": "CLINC150 150-way 5-shot, support seeds " + str(args.seeds) + "; val (3,000) + oos_val (100); "
        "calibration: highest threshold with val accuracy (rejections wrong) within 2 points of no rejection",
        "rows": rows,
        "best_mahalanobis_by_auroc": best_maha,
        "best_knn_by_auroc": best_knn,
        "halves": halves,
        "total_seconds": time.perf_counter() - t_start,
        **provenance(),
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


def half_rows(per_seed: list, preds: list, yv: np.ndarray, feats: list[str]) -> dict:
    """Logistic regression on ``feats`` fitted on one half of val + oos_val, calibrated on the other; both ways."""
    from sklearn.linear_model import LogisticRegression

    from oneshot.modalities.text.intents import calibrate_oos_threshold

    rng = np.random.default_rng(0)
    nv, no = len(yv), len(per_seed[0][feats[0]][1])
    hv, ho = rng.permutation(nv) % 2, rng.permutation(no) % 2
    sets = {
        "logistic[all]": feats,
        "logistic[template+maha]": feats[:2],
        "logistic[maha+max_probability]": [feats[1], feats[-1]],
        **{f: [f] for f in feats},
    }
    res: dict[str, dict] = {}
    for nm, fs in sets.items():
        rec = []
        for sc, pv in zip(per_seed, preds, strict=True):
            xv = np.stack([sc[f][0] for f in fs], 1)
            xo = np.stack([sc[f][1] for f in fs], 1)
            for h in (0, 1):
                fit, ev = h, 1 - h
                m, sd = xv[hv == fit].mean(0), xv[hv == fit].std(0) + 1e-12
                x = np.concatenate([(xv[hv == fit] - m) / sd, (xo[ho == fit] - m) / sd])
                y = np.r_[np.ones((hv == fit).sum()), np.zeros((ho == fit).sum())]
                lr = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x, y)
                sv = lr.decision_function((xv[hv == ev] - m) / sd)
                so = lr.decision_function((xo[ho == ev] - m) / sd)
                rec.append(calibrate_oos_threshold(pv[hv == ev], sv, yv[hv == ev], so, max_drop=0.02).val_oos_recall)
        res[nm] = {"features": fs, "val_oos_recall_half": float(np.mean(rec)), "per_seed_half": rec}
        print(f"halves {nm:40s} recall {100 * np.mean(rec):5.1f}  {[round(100 * r) for r in rec]}", flush=True)
    return res


if __name__ == "__main__":
    main()
