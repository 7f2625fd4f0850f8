"""Intent recognition on embeddings: templates, zero-shot descriptions, the description prior, out-of-scope rejection.

Everything here works on unit embeddings (N, D) float32 -- from the frozen encoder, a tuned one, or a gallery --
so the benchmark, ``oneshot evaluate --domain text`` and the tests share one definition of each protocol.

- **Template**: the L2-normalised mean of a class's unit embeddings (a prototype, Snell et al. 2017), exactly the
  gallery's template; a query goes to the class of highest cosine.
- **Zero-shot**: a class's template is the embedding of its description (for CLINC150 the intent name with
  underscores as spaces, ``book_flight`` -> ``book flight``: :func:`oneshot.data.clinc150.intent_description`).
- **Description as a prior**: the description counts as ``prior_weight`` examples in the class mean (default 1:
  the description is one more example, which is also what ``oneshot gallery enrol --description`` stores), so
  each real example pulls the template further from the description: with n examples its weight is 1/(n+1).
- **Out of scope** (Larson et al. 2019): a query whose in-scope score (the best cosine, or the few-shot
  classifier's ``mean_distance``: :mod:`oneshot.modalities.text.classifier`) is below a threshold is rejected;
  :func:`calibrate_oos_threshold` picks that threshold on validation data only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of (N, D)."""
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def class_templates(
    vectors: np.ndarray, labels: np.ndarray, n_classes: int, prior: np.ndarray | None = None, prior_weight: float = 1.0
) -> np.ndarray:
    """Unit templates (C, D): the mean of each class's unit embeddings (N, D) with labels (N,) in [0, C), plus
    ``prior_weight`` times the class's description embedding (``prior`` (C, D)) when given."""
    d = vectors.shape[1]
    sums = np.zeros((n_classes, d), np.float64)
    np.add.at(sums, labels, unit(vectors))
    if prior is not None:
        sums += prior_weight * unit(prior)
    return unit(sums)


def class_means(
    vectors: np.ndarray, labels: np.ndarray, n_classes: int, prior: np.ndarray | None = None, prior_weight: float = 1.0
) -> np.ndarray:
    """Class means (C, D), *not* renormalised: the weighted mean of each class's unit embeddings (N, D) and its
    unit description (``prior`` (C, D), zero row: none) counted ``prior_weight`` times. Their direction is the
    template's (:func:`class_templates`); their length shrinks with the spread of the class (1 when every
    example is the same). A class with neither example nor description gets a zero row."""
    d = vectors.shape[1]
    sums = np.zeros((n_classes, d), np.float64)
    np.add.at(sums, labels, unit(vectors))
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if prior is not None:
        sums += prior_weight * unit(prior)
        counts += prior_weight * (np.linalg.norm(prior, axis=1) > 0)
    return (sums / np.maximum(counts, 1e-12)[:, None]).astype(np.float32)


def nearest(queries: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) x (C, D) -> best class (Q,) and its cosine (Q,)."""
    s = queries @ templates.T
    best = s.argmax(1)
    return best, s[np.arange(len(s)), best]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval (normal approximation; 0 for one value)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


@dataclass
class OosThreshold:
    """A rejection threshold and what it did on the validation data it was chosen on."""

    threshold: float
    val_accuracy_no_rejection: float
    val_accuracy: float
    val_oos_recall: float
    max_drop: float


def calibrate_oos_threshold(
    val_pred: np.ndarray, val_score: np.ndarray, val_truth: np.ndarray, oos_score: np.ndarray, max_drop: float = 0.02
) -> OosThreshold:
    """The threshold rejecting the most validation out-of-scope queries while in-scope validation accuracy
    (a rejected in-scope query counts as wrong) stays within ``max_drop`` of its no-rejection value.

    Args:
        val_pred / val_score / val_truth: (V,) predicted class, best cosine and true class of in-scope val queries.
        oos_score: (O,) best cosine of out-of-scope val queries.
    """
    correct = val_pred == val_truth
    base = float(correct.mean())
    floor = base - max_drop
    cands = np.unique(np.concatenate([val_score, oos_score, [-1.0]]))
    best_t, best_recall, best_acc = -1.0, 0.0, base
    for t in cands:  # ascending: accuracy only falls, recall only rises as t grows
        acc = float((correct & (val_score >= t)).mean())
        if acc < floor - 1e-12:
            break
        best_t, best_acc, best_recall = float(t), acc, float((oos_score < t).mean())
    return OosThreshold(best_t, base, best_acc, best_recall, max_drop)


def oos_metrics(
    pred: np.ndarray, score: np.ndarray, truth: np.ndarray, oos_score: np.ndarray, threshold: float | None
) -> dict[str, float]:
    """In-scope accuracy, OOS recall and OOS precision on in-scope (pred, score, truth) + out-of-scope queries."""
    t = -np.inf if threshold is None else threshold
    in_acc = float(((pred == truth) & (score >= t)).mean())
    rej_oos = int((oos_score < t).sum())
    rej_in = int((score < t).sum())
    recall = rej_oos / max(1, len(oos_score))
    precision = rej_oos / (rej_oos + rej_in) if rej_oos + rej_in else 0.0
    return {
        "in_scope_accuracy": in_acc,
        "oos_recall": recall,
        "oos_precision": precision,
        "in_scope_rejected": rej_in / max(1, len(score)),
    }
