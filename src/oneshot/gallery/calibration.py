"""Thresholds you can trust: choose them on validation classes for a target false-accept rate.

Scores are cosine similarities of L2-normalised embeddings. From labelled validation embeddings (classes the
gallery has never seen) we measure:

* **verification** (one query against one claimed class): genuine scores (a query against its own class's
  one-shot template) and impostor scores (against every other class's template); the verify threshold is
  the smallest score that accepts at most ``target_far`` of the impostor scores.
* **open-set identification** (one query against a whole gallery of G classes): in each trial, G validation
  classes are enrolled from one random example each and the remaining classes are strangers; an impostor
  score is a stranger's *best* score over the gallery, a genuine query is accepted when its best match is its
  own class and scores above the threshold. When the gallery is larger than half the validation classes, the
  identify threshold is extrapolated from the pairwise impostor distribution at the per-comparison rate
  ``1 - (1 - target)^(1/G)`` (independence assumption, recorded as such).

A gallery whose classes were enrolled from K examples compares queries with the mean of K embeddings, which
scores every query -- strangers included -- higher than one example does; so ``shots = K`` builds each simulated
template from K random examples of its class (the raw mean; the default cosine score normalises it, a custom
score such as ``mean_distance`` gets it as it is), and a threshold calibrated for one-example templates is not
offered for a K-example gallery (``Gallery.calibrate`` takes K from the gallery).

**Strangers who are siblings.** Validation strangers drawn from all validation classes are mostly unlike the
enrolled ones; a real gallery's strangers may be the *rest of its family* (the other characters of the alphabet
a user enrolled from, the other defects of one product line), which score higher. With ``groups`` (each
example's family), verification impostors are only pairs within a family, and each identification trial
enrols G classes of one family and takes the rest of that family as strangers: thresholds that hold for
sibling strangers, at a cost in true accepts (``benchmarks/gallery_sibling_strangers.py``).

**With confidence.** The threshold that accepts ``floor(target * n)`` of n measured impostor scores gives a rate
that is ``target`` on those scores and, on the next n, above it about half the time. ``confidence`` (e.g.
0.95) asks instead for the rate to be at most ``target`` with that confidence: the threshold admits the largest
number k of the measured impostors at which the one-sided Clopper-Pearson (1934) upper bound of the rate is
still at most ``target`` -- were the true rate ``target``, k or fewer exceedances would be seen with probability
at most ``1 - confidence``. The comparisons are treated as independent (pairs sharing a template are not quite),
so the bound is a guide, and it costs true accepts; too few comparisons for the asked confidence is an error.

Every number is stored with the counts it rests on, so a threshold is never a magic number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from oneshot.errors import OneshotError


def allowed_exceedances(n: int, target: float, confidence: float | None = None) -> int:
    """How many of ``n`` impostor scores a threshold for the false-accept rate ``target`` may leave at or above it.

    Without ``confidence``: ``floor(target * n)``. With it: the largest k with ``P(X <= k) <= 1 - confidence`` for
    X ~ Binomial(n, target), i.e. the one-sided Clopper-Pearson upper bound of the rate at k exceedances in n is
    at most ``target``; a one-line :class:`OneshotError` when not even k = 0 reaches that confidence."""
    plain = int(math.floor(target * n))
    if confidence is None:
        return plain
    if not 0.5 <= confidence < 1.0:
        raise OneshotError(f"confidence {confidence} must be at least 0.5 and below 1 (e.g. 0.95)")
    # log P(X = i) for i = 0..plain, by the ratio P(i + 1) / P(i) = (n - i) / (i + 1) * p / (1 - p).
    i = np.arange(plain + 1, dtype=np.float64)
    steps = np.log(np.maximum(n - i[:-1], 1.0)) - np.log(i[:-1] + 1.0) + math.log(target) - math.log1p(-target)
    log_pmf = n * math.log1p(-target) + np.concatenate([[0.0], np.cumsum(steps)])
    log_cdf = np.logaddexp.accumulate(log_pmf)
    ok = np.flatnonzero(log_cdf <= math.log1p(-confidence))
    if len(ok) == 0:
        needed = math.ceil(math.log1p(-confidence) / math.log1p(-target))
        raise OneshotError(
            f"{n} impostor comparisons cannot show a false-accept rate of at most {target:g} with confidence "
            f"{confidence:g}: that needs at least {needed}; give more validation data, aim at a larger rate or lower "
            "the confidence"
        )
    return int(ok[-1])


def threshold_for_far(impostor: np.ndarray, target: float, total: int | None = None, confidence: float | None = None) -> float:
    """Smallest threshold t (accept when score >= t) with at most ``allowed_exceedances(n, target, confidence)``
    impostor scores >= t (``floor(target * n)`` without ``confidence``).

    ``total``: n, when ``impostor`` holds only the largest of n scores (at least that many + 1 of them)."""
    s = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = allowed_exceedances(len(s) if total is None else int(total), target, confidence)
    if allowed >= len(s):
        return float(s[-1])
    return float(np.nextafter(np.float32(s[allowed]), np.float32(np.inf)))


def class_families(labels: np.ndarray, classes: np.ndarray, groups: np.ndarray | None) -> np.ndarray | None:
    """(C,) family index (0..F-1) of each of ``classes`` from per-example ``groups`` (N,), or None without groups;
    a one-line :class:`OneshotError` when a class spans families or too few families have 4+ classes."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise OneshotError(f"groups must give one family per example: {groups.shape} for {labels.shape} labels")
    names, per_example = np.unique(groups, return_inverse=True)
    family = np.empty(len(classes), np.int64)
    for j, c in enumerate(classes):
        found = np.unique(per_example[labels == c])
        if len(found) != 1:
            raise OneshotError(f"validation class {c} has examples in {len(found)} families: give each class one family")
        family[j] = found[0]
    if np.sum(np.bincount(family, minlength=len(names)) >= 4) < 1:
        raise OneshotError("calibrating within families needs a family with at least 4 validation classes")
    return family


def _summary(scores: np.ndarray) -> dict[str, Any]:
    q = np.quantile(scores, [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]) if len(scores) else []
    return {
        "count": int(len(scores)),
        "mean": float(np.mean(scores)) if len(scores) else None,
        "quantiles": {p: float(v) for p, v in zip(["0.1%", "1%", "10%", "50%", "90%", "99%", "99.9%"], q, strict=False)},
    }


def calibrate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    target_far: float,
    gallery_size: int,
    trials: int = 20,
    seed: int = 0,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    identify_method: str = "auto",
    shots: int = 1,
    groups: np.ndarray | None = None,
    verify_threshold: float | None = None,
    confidence: float | None = None,
) -> dict[str, Any]:
    """Thresholds for ``target_far`` and the rates they give on the validation data.

    Args:
        embeddings: (N, D) L2-normalised validation embeddings.
        labels: (N,) int class of each embedding; at least 4 classes with 2+ examples each.
        target_far: the false-accept rate to aim for, in (0, 1).
        gallery_size: G, the number of classes the identification threshold is for.
        trials: random gallery/stranger splits for the identification simulation.
        seed: seed of the template and split choices.
        score: ``score(queries (Q, D), templates (T, D)) -> (Q, T)``; default cosine (inner product). A
            cohort normalisation (:class:`oneshot.gallery.normalise.CohortNorm`) plugs in here.
        identify_method: ``auto`` (simulate, extrapolate when the gallery is over half the validation
            classes), ``simulated`` (always simulate with at most half the classes enrolled) or
            ``extrapolated`` (always from pairwise impostor scores).
        shots: K, examples averaged into each simulated template (the gallery's examples per class); only
            classes with K + 1 or more examples take part.
        groups: (N,) the family of each example (one per class), or None: with it, impostors and strangers are
            only ever of the genuine class's own family (simulated galleries of G = min(gallery_size, half the
            median family) classes, in the families with at least 2G classes).
        verify_threshold: a verify threshold set elsewhere (the gallery's own enrolments,
            :mod:`~oneshot.gallery.enrolment_impostors`): used instead of the validation one, which is recorded
            as ``validation_verify_threshold``; the measured verify rates are the validation data's at it.
        confidence: None (the measured rate is ``target_far``) or e.g. 0.95: both thresholds keep the rate at
            most ``target_far`` with that confidence (:func:`allowed_exceedances`; the module's "With confidence").

    Returns:
        A JSON-ready record: ``verify_threshold``, ``identify_threshold``, measured rates, score summaries.
    """
    if not 0 < target_far < 1:
        raise OneshotError(f"target false-accept rate {target_far} must be between 0 and 1 (e.g. 1e-3)")
    if int(shots) != shots or shots < 1:
        raise OneshotError(f"shots {shots} must be a whole number >= 1 (examples per enrolled class)")
    shots = int(shots)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    classes = classes[counts >= shots + 1]
    if len(classes) < 4:
        raise OneshotError(
            f"calibration needs at least 4 validation classes with {shots + 1}+ examples each, got {len(classes)}: "
            "give more validation classes"
        )
    if identify_method not in ("auto", "simulated", "extrapolated"):
        raise OneshotError(f"unknown identify calibration {identify_method!r}: choose auto, simulated or extrapolated")
    if score is None:

        def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            if shots == 1:
                return a @ b.T
            return a @ (b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)).T

    family = class_families(labels, classes, groups)  # (C,) family index of each class, or None
    rng = np.random.default_rng(seed)
    members = {int(c): np.flatnonzero(labels == c) for c in classes}
    x = np.asarray(embeddings, dtype=np.float32)

    def pick(c: int) -> np.ndarray:
        """``shots`` distinct random examples of class c (one draw of ``rng.choice`` when shots == 1, as before)."""
        if shots == 1:
            return np.array([rng.choice(members[c])])
        return rng.choice(members[c], size=shots, replace=False)

    # Verification: one random template (of ``shots`` examples) per class, every other example is a query.
    picks = [pick(int(c)) for c in classes]
    tmpl_idx = np.concatenate(picks)
    templates_v = np.stack([x[p].mean(0) for p in picks])
    keep = np.isin(labels, classes) & ~np.isin(np.arange(len(labels)), tmpl_idx)
    q_idx = np.flatnonzero(keep)
    s = score(x[q_idx], templates_v)  # (Q, C)
    own = np.searchsorted(classes, labels[q_idx])
    genuine = s[np.arange(len(q_idx)), own]
    mask = np.ones_like(s, dtype=bool)
    mask[np.arange(len(q_idx)), own] = False
    if family is not None:
        mask &= family[own][:, None] == family[None, :]
    impostor = s[mask]
    t_validation = threshold_for_far(impostor, target_far, confidence=confidence)
    t_verify = t_validation if verify_threshold is None else float(verify_threshold)

    # Open-set identification.
    C = len(classes)
    G = max(1, min(gallery_size, C // 2))
    pools = [np.arange(C)]
    if family is not None:
        sizes = np.bincount(family)
        G = max(1, min(gallery_size, int(np.median(sizes[sizes > 0])) // 2))
        pools = [np.flatnonzero(family == f) for f in np.flatnonzero(sizes >= 2 * G)]
    imp_best, gen_best, gen_correct = [], [], []
    for t in range(trials):
        pool = pools[t % len(pools)]
        perm = pool[rng.permutation(len(pool))]
        enrolled, strangers = perm[:G], perm[G:]
        e_picks = [pick(int(classes[c])) for c in enrolled]
        t_idx = np.concatenate(e_picks)
        templates = np.stack([x[p].mean(0) for p in e_picks])
        stranger_idx = np.concatenate([members[int(classes[c])] for c in strangers])
        imp_best.append(score(x[stranger_idx], templates).max(1))
        g_idx = np.concatenate([np.setdiff1d(members[int(classes[c])], t_idx) for c in enrolled])
        gs = score(x[g_idx], templates)
        truth = np.searchsorted(np.sort(enrolled), np.searchsorted(classes, labels[g_idx]))
        order = np.argsort(enrolled)
        gs = gs[:, order]
        gen_best.append(gs.max(1))
        gen_correct.append(gs.argmax(1) == truth)
    imp_best_a, gen_best_a, gen_correct_a = map(np.concatenate, (imp_best, gen_best, gen_correct))
    extrapolated = identify_method == "extrapolated" or (identify_method == "auto" and gallery_size > G)
    try:
        if extrapolated:
            per_pair = 1.0 - (1.0 - target_far) ** (1.0 / gallery_size)
            t_identify = threshold_for_far(impostor, per_pair, confidence=confidence)
        else:
            t_identify = threshold_for_far(imp_best_a, target_far, confidence=confidence)
    except OneshotError as exc:  # only with a confidence: say which threshold could not be set
        how = f"extrapolated to a per-comparison rate of {per_pair:.3g}" if extrapolated else "simulated"
        raise OneshotError(f"identify threshold for a gallery of {gallery_size} classes ({how}): {exc}") from None

    notes = []
    if len(impostor) * target_far < 10:
        notes.append(
            f"only {len(impostor)} impostor pairs: a verify FAR of {target_far:g} is barely resolved; use more validation data"
        )
    if not extrapolated and len(imp_best_a) * target_far < 10:
        notes.append(f"only {len(imp_best_a)} stranger queries: an identify FAR of {target_far:g} is barely resolved")
    if extrapolated:
        notes.append(
            f"gallery of {gallery_size} classes > half the {C} validation classes: identify threshold "
            "extrapolated from pairwise impostor scores assuming independent comparisons"
        )
    return {
        "target_far": float(target_far),
        "confidence": confidence,
        "verify_threshold": t_verify,
        "validation_verify_threshold": t_validation,
        "identify_threshold": t_identify,
        "gallery_size": int(gallery_size),
        "simulated_gallery_size": int(G),
        "identify_method": "extrapolated" if extrapolated else "simulated",
        "validation_classes": int(C),
        "validation_examples": int(keep.sum() + len(tmpl_idx)),
        "trials": int(trials),
        "seed": int(seed),
        "shots": shots,
        "families": None if family is None else {"count": int(family.max() + 1), "simulated_in": len(pools)},
        "measured": {
            "verify_far": float(np.mean(impostor >= t_verify)),
            "verify_tar": float(np.mean(genuine >= t_verify)),
            "identify_far": float(np.mean(imp_best_a >= t_identify)),
            "identify_tar": float(np.mean(gen_correct_a & (gen_best_a >= t_identify))),
            "closed_set_accuracy": float(np.mean(gen_correct_a)),
        },
        "scores": {
            "genuine": _summary(genuine),
            "impostor": _summary(impostor),
            "stranger_best": _summary(imp_best_a),
            "genuine_best": _summary(gen_best_a),
        },
        "notes": notes,
    }
