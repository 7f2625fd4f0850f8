"""CLINC150 protocols 6 and 7 of benchmarks/text_clinc150.py: the few-shot intent classifier (issue 13's levers).

6. 150-way K-shot (K = 1, 5, 10) with the classifier of ``oneshot.modalities.text.classifier``: cosine-softmax
   weights initialised at the description + examples templates and tuned on the support; and the same mixed
   with the lexical TF-IDF view (``oneshot.modalities.text.lexical``). Every setting is chosen on ``val``
   (support draws ``--select-seeds`` from ``train``, 5- and 10-shot) and recorded under ``classifier_selection``.
8. = 7 with one more candidate score, ``mean_distance`` (the distance to the class means), the classifier's
   settings taken from a protocol-7 results file; no reject-class row.
7. Out of scope with that classifier (5-shot): the rejection score chosen on ``val`` + ``oos_val`` (OOS
   recall under the issue's calibration rule); and, as its own row, CLINC150's ``oos_train`` utterances
   enrolled as a 151st "reject" class (the CLINC paper's oos-train setting), threshold still calibrated on
   ``val`` + ``oos_val`` only.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from oneshot.modalities.text.classifier import (
    MEAN_DISTANCE,
    REJECTION_SCORES,
    TEMPLATE_COSINE,
    ClassifierConfig,
    CosineClassifier,
    fit_cosine_classifier,
)
from oneshot.modalities.text.intents import calibrate_oos_threshold, oos_metrics
from oneshot.modalities.text.lexical import fit_lexical, mix

#: Steps (100 / 300) and lr (0.01 / 0.03) changed val accuracy by <= 0.02 points in a wider sweep: the scale is
#: what matters, with the description's weight.
GRID = {"scale": (7.5, 10.0, 12.5, 15.0), "prior_weight": (1.0, 2.0)}
LEXICAL_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
OOS_RULES = (*REJECTION_SCORES, TEMPLATE_COSINE)
#: Protocol 8's candidates: protocol 7's and the distance to the class means (benchmarks/text_oos_val_levers.py).
OOS_RULES_8 = (*OOS_RULES, MEAN_DISTANCE)


class Levers:
    """The classifier rows; ``b`` is the benchmark's ``Bench`` (embeddings, labels, texts, support draws)."""

    def __init__(self, b: Any, draw: Any, agg: Any) -> None:
        self.b, self.draw, self.agg = b, draw, agg
        self.n = len(b.intents)
        self.desc_texts = b.description_texts

    def support(self, shots: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sup = self.draw(self.b.lab["train"], list(range(self.n)), shots, seed)
        return sup, self.b.emb["train"][sup], self.b.lab["train"][sup]

    def fit(self, sup: np.ndarray, cfg: ClassifierConfig, lexical: bool) -> tuple[CosineClassifier, Any, float]:
        t0 = time.perf_counter()
        clf = fit_cosine_classifier(self.b.emb["train"][sup], self.b.lab["train"][sup], self.n, self.b.descriptions, cfg)
        lex = None
        if lexical:
            texts = [self.b.data["train"].texts[i] for i in sup] + self.desc_texts
            lex = fit_lexical(texts, np.concatenate([self.b.lab["train"][sup], np.arange(self.n)]), self.n)
        return clf, lex, time.perf_counter() - t0

    def proba(self, clf: CosineClassifier, lex: Any, split: str, w: float) -> np.ndarray:
        p = clf.proba(self.b.emb[split])
        return p if lex is None or w == 0 else mix(p, lex.proba(self.b.data[split].texts), w)

    # ------------------------------------------------------------------ selection on val
    def select(self) -> dict:
        seeds, yv = self.b.args.select_seeds, self.b.lab["val"]
        rows = []
        for values in itertools.product(*GRID.values()):
            g = dict(zip(GRID, values, strict=True))
            accs = {}
            for k in (5, 10):
                a = [
                    float(
                        (
                            self.fit(self.support(k, s)[0], ClassifierConfig(**g), False)[0].logits(self.b.emb["val"]).argmax(1)
                            == yv
                        ).mean()
                    )
                    for s in seeds
                ]
                accs[str(k)] = float(np.mean(a))
            rows.append(dict(g, val_accuracy=accs, val_mean=float(np.mean(list(accs.values())))))
        best = max(rows, key=lambda r: r["val_mean"])
        chosen = {k: best[k] for k in GRID}
        print("classifier chosen on val", best, flush=True)
        lex_rows = {str(w): {} for w in LEXICAL_WEIGHTS}
        for k in (5, 10):
            per_w: dict[float, list[float]] = {w: [] for w in LEXICAL_WEIGHTS}
            for s in seeds:
                clf, lex, _ = self.fit(self.support(k, s)[0], ClassifierConfig(**chosen), True)
                pe, pl = clf.proba(self.b.emb["val"]), lex.proba(self.b.data["val"].texts)
                for w in LEXICAL_WEIGHTS:
                    per_w[w].append(float((mix(pe, pl, w).argmax(1) == yv).mean()))
            for w in LEXICAL_WEIGHTS:
                lex_rows[str(w)][str(k)] = float(np.mean(per_w[w]))
        w_best = max(LEXICAL_WEIGHTS, key=lambda w: np.mean(list(lex_rows[str(w)].values())))
        print("lexical weight chosen on val", w_best, lex_rows, flush=True)
        return {
            "protocol": f"150-way 5- and 10-shot, support seeds {seeds} from train, queries: all of val; chosen by the mean of the two",
            "grid": rows,
            "chosen": chosen,
            "lexical_val_accuracy_by_weight": lex_rows,
            "lexical_weight": w_best,
        }

    # ------------------------------------------------------------------ protocol 6
    def protocol6(self, sel: dict) -> dict:
        cfg, w = ClassifierConfig(**sel["chosen"]), sel["lexical_weight"]
        out = []
        for shots in (1, 5, 10):
            clf_acc, mix_acc, secs = [], [], []
            for seed in range(self.b.args.seeds):
                sup, _, _ = self.support(shots, seed)
                clf, lex, s = self.fit(sup, cfg, True)
                clf_acc.append(float((clf.logits(self.b.emb["test"]).argmax(1) == self.b.lab["test"]).mean()))
                mix_acc.append(float((self.proba(clf, lex, "test", w).argmax(1) == self.b.lab["test"]).mean()))
                secs.append(s)
            row = {
                "shots": shots,
                "classifier": self.agg(clf_acc),
                "classifier_lexical": self.agg(mix_acc),
                "fit_seconds_mean": float(np.mean(secs)),
            }
            print("protocol6", row, flush=True)
            out.append(row)
        return {"classifier": sel["chosen"], "lexical_weight": w, "rows": out}

    # ------------------------------------------------------------------ protocol 7
    def oos_models(self, sup: np.ndarray, cfg: ClassifierConfig, w: float, reject_class: bool) -> tuple:
        """The classifier (and lexical view when ``w > 0``) on the support; with ``reject_class`` CLINC150's
        ``oos_train`` utterances are one more class (index ``n``, no description)."""
        xs, ys, prior = self.b.emb["train"][sup], self.b.lab["train"][sup], self.b.descriptions
        texts = [self.b.data["train"].texts[i] for i in sup] + self.desc_texts
        yl = np.concatenate([ys, np.arange(self.n)])
        n = self.n
        if reject_class:
            k = len(self.b.emb["oos_train"])
            xs, ys = np.concatenate([xs, self.b.emb["oos_train"]]), np.concatenate([ys, np.full(k, n)])
            prior = np.concatenate([prior, np.zeros((1, prior.shape[1]), np.float32)])
            texts, yl = texts + list(self.b.data["oos_train"].texts), np.concatenate([yl, np.full(k, n)])
            n += 1
        return fit_cosine_classifier(xs, ys, n, prior, cfg), (fit_lexical(texts, yl, n) if w > 0 else None)

    def oos_scores(self, models: tuple, w: float, rule: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(pred, score) of ``split``'s queries: pred is the best *in-scope* class (so accuracy without rejection
        is the same model's), and a query whose best class is the reject class scores -inf (always rejected)."""
        clf, lex = models
        p = self.proba(clf, lex, split, w)
        pred = p[:, : self.n].argmax(1)
        if rule == "max_probability":
            score = p.max(1)
        elif rule == "margin":
            top = np.sort(p, axis=1)[:, -2:]
            score = top[:, 1] - top[:, 0]
        else:
            score = clf.rejection_scores(self.b.emb[split], rule, predicted=pred if rule == TEMPLATE_COSINE else None)
        return pred, np.where(p.argmax(1) >= self.n, -np.inf, score)

    def calibrate(self, models: tuple, w: float, rule: str) -> Any:
        vp, vs = self.oos_scores(models, w, rule, "val")
        _, os_ = self.oos_scores(models, w, rule, "oos_val")
        return calibrate_oos_threshold(vp, vs, self.b.lab["val"], os_, max_drop=self.b.args.max_drop)

    def protocol7(self, sel: dict, rules: tuple[str, ...] = OOS_RULES, reject_classes: tuple[bool, ...] = (False, True)) -> dict:
        """Protocol 7 (protocol 8: ``rules=OOS_RULES_8``, no reject-class row, the classifier settings of a
        protocol-7 run)."""
        cfg, w = ClassifierConfig(**sel["chosen"]), sel["lexical_weight"]
        out: dict[str, Any] = {}
        for reject_class in reject_classes:
            name = "classifier_lexical" + ("_oos_train_class" if reject_class else "")
            models = [self.oos_models(self.support(5, s)[0], cfg, w, reject_class) for s in self.b.args.select_seeds]
            val = {rule: float(np.mean([self.calibrate(m, w, rule).val_oos_recall for m in models])) for rule in rules}
            rule = max(rules, key=lambda k: val[k])
            print("protocol7 val", name, val, "->", rule, flush=True)
            recs = []
            for seed in range(self.b.args.seeds):
                m = self.oos_models(self.support(5, seed)[0], cfg, w, reject_class)
                th = self.calibrate(m, w, rule)
                tp, ts = self.oos_scores(m, w, rule, "test")
                _, ots = self.oos_scores(m, w, rule, "oos_test")
                r = oos_metrics(tp, ts, self.b.lab["test"], ots, th.threshold)
                r0 = float((tp == self.b.lab["test"]).mean())
                recs.append(dict(r, no_rejection_accuracy=r0, threshold=th.threshold, val_oos_recall=th.val_oos_recall))
            out[name] = {"score": rule, "val_oos_recall_by_score": val, **{k: self.agg([r[k] for r in recs]) for k in recs[0]}}
            print("protocol7", name, {k: v for k, v in out[name].items() if k != "val_oos_recall_by_score"}, flush=True)
        return {"shots": 5, "max_drop": self.b.args.max_drop, "classifier": sel["chosen"], "lexical_weight": w, "results": out}
