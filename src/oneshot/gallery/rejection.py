"""Which score a gallery's identify threshold is compared with: the template cosine, ``mean_distance`` or ``snorm``.

The setting is stored in the gallery's meta (``rejection_score``), as :mod:`~oneshot.gallery.identify_rule` stores
the rule. A gallery without the key (every gallery made before, and every new one unless asked) rejects on
``template_cosine``: the cosine of the query to its first candidate's stored template, in [-1, 1], so stored
thresholds keep their meaning. ``mean_distance`` (text galleries only; docs/text.md, protocol 8) is minus the
squared Euclidean distance of the unit query to the *nearest class mean* over all classes, in [-4, 0]: a class
mean is the mean of the class's stored unit example embeddings (a description is stored as one more example),
not re-normalised -- :func:`oneshot.modalities.text.classifier.mean_distance` on
:func:`oneshot.modalities.text.intents.class_means`. With it, the first candidate's score is that query-level
number (what the threshold is compared with); every other candidate's is minus its own class mean's distance.

``snorm`` (any modality; :mod:`~oneshot.gallery.cohort`) is adaptive S-norm of the template cosine against the
gallery's stored cohort of background templates; unlike the other two it also changes verification: with
``snorm`` the verify threshold is an S-norm value too.

A threshold records the score it was set on (``identify_score`` in the ``threshold`` meta; absent:
``template_cosine``). Switching the score clears an identify threshold set on the other one, with a warning
(the verify threshold, always a cosine, stays); a threshold whose recorded score is not the gallery's is never
applied.
"""

from __future__ import annotations

import warnings

import numpy as np

from oneshot.choices import check_choice
from oneshot.errors import OneshotError, OneshotWarning
from oneshot.gallery.class_store import ClassStore

TEMPLATE_COSINE, MEAN_DISTANCE, SNORM = "template_cosine", "mean_distance", "snorm"
#: The scores an identify threshold can be compared with.
REJECTION_SCORES = (TEMPLATE_COSINE, MEAN_DISTANCE, SNORM)
#: The meta key holding a gallery's score (absent: ``template_cosine``).
SCORE_KEY = "rejection_score"
#: The range of each score (what a manual threshold is checked against).
SCORE_RANGE = {TEMPLATE_COSINE: (-1.0, 1.0), MEAN_DISTANCE: (-4.0, 0.0), SNORM: (-1000.0, 1000.0)}


def verify_score(score: str) -> str:
    """The score a verify threshold is on when the gallery rejects on ``score``: S-norm for ``snorm``, else the
    template cosine."""
    return SNORM if score == SNORM else TEMPLATE_COSINE


def read_score(store: ClassStore) -> str:
    """The gallery's rejection score (``template_cosine`` when none is recorded)."""
    return str(store.get_meta(SCORE_KEY) or TEMPLATE_COSINE)


def check_score(score: str, modality: str) -> str:
    """``score`` if it is a rejection score that fits the gallery's modality; else a one-line :class:`OneshotError`."""
    check_choice("gallery score", "score", score, REJECTION_SCORES)
    if score == MEAN_DISTANCE and modality != "text":
        raise OneshotError(f"mean_distance is for text galleries; this gallery holds {modality} embeddings: use template_cosine")
    return score


def check_cohort(store: ClassStore, score: str) -> None:
    """A one-line :class:`OneshotError` when ``score`` is ``snorm`` and the gallery has no cohort to normalise by."""
    if score == SNORM and store.get_meta("cohort") is None:  # oneshot.gallery.cohort.INFO_KEY (it imports this module)
        raise OneshotError(
            f"snorm needs a cohort: first run `oneshot gallery cohort {store.path} FOLDER` with examples of classes "
            "that will never be enrolled"
        )


def threshold_score(threshold: dict | None) -> str:
    """The score a stored ``threshold`` meta was set on (``template_cosine`` for thresholds set before the key)."""
    return str((threshold or {}).get("identify_score") or TEMPLATE_COSINE)


def set_score(store: ClassStore, score: str, modality: str) -> str | None:
    """Store ``score`` as the gallery's rejection score, in one transaction; an identify threshold set on another
    score is cleared (the verify threshold stays unless it moves between cosine and S-norm). Returns the warning
    given then, else None."""
    check_score(score, modality)
    check_cohort(store, score)
    said = None
    with store.write() as tx:
        th = store.get_meta("threshold")
        old = threshold_score(th)
        if th and th.get("identify") is not None and old != score:
            said = (
                f"the identify threshold {th['identify']:.4g} was set on {old}, not {score}: it is "
                "cleared; run `oneshot gallery calibrate` again (or set one with `oneshot gallery threshold`)"
            )
            th = dict(th, identify=None, identify_score=score, cleared=f"score changed to {score}")
        if th and th.get("verify") is not None and verify_score(old) != verify_score(score):
            said = (
                (said + "; the verify threshold too")
                if said
                else (
                    f"the verify threshold {th['verify']:.4g} was on {verify_score(old)}, not "
                    f"{verify_score(score)}: it is cleared; run `oneshot gallery calibrate` again"
                )
            )
            th = dict(th, verify=None, identify_score=score, cleared=f"score changed to {score}")
        if th is not None and th != store.get_meta("threshold"):
            tx.set_meta("threshold", th)
        tx.set_meta(SCORE_KEY, score)
    if said:
        warnings.warn(said, OneshotWarning, stacklevel=3)
    return said


def identify_threshold(store: ClassStore, score: str) -> float | None:
    """The identify threshold when it was set on ``score``; None (with a warning) when it was set on another."""
    th = store.get_meta("threshold") or {}
    if th.get("identify") is None:
        return None
    if threshold_score(th) != score:
        warnings.warn(
            f"the identify threshold was set on {threshold_score(th)} but the gallery rejects on {score}: "
            "it is not applied; run `oneshot gallery calibrate` again",
            OneshotWarning,
            stacklevel=3,
        )
        return None
    return float(th["identify"])


def one_shot_mean_distance(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Calibration's score for ``mean_distance``: (Q, D) unit queries x (T, D) one-example class means (the
    simulated galleries of :func:`oneshot.gallery.calibration.calibrate` enrol one example per class) -> (Q, T)
    ``-||q - t||^2``."""
    q64, t64 = q.astype(np.float64), t.astype(np.float64)
    d2 = 1.0 - 2.0 * q64 @ t64.T + (t64 * t64).sum(1)[None, :]
    return (-np.maximum(d2, 0.0)).astype(np.float32)


class MeansCache:
    """The class means of an open gallery, recomputed when the gallery's (epoch, generation) moved on."""

    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.ids = np.zeros(0, np.int64)
        self.means = np.zeros((0, 0), np.float32)

    def current(self, store: ClassStore, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(C,) class ids and (C, D) class means: the mean of each class's stored unit example embeddings; a class
        with no stored example counts its template as its one example (as the classifier rule's fit does)."""
        from oneshot.modalities.text.intents import class_means

        with store.read():
            key = (int(store.get_meta("epoch", 0)), store.generation())
            if self.key == key:
                return self.ids, self.means
            ids, templates = store.all_templates(dim)
            examples = list(store.class_examples(dim))
            found = store.find_labels([lab for lab, _, _ in examples])
        by_id = {found[lab][0]: [e[0] for e in ex] for lab, _, ex in examples}
        rows = [by_id.get(cid) or [templates[c]] for c, cid in enumerate(ids.tolist())]
        x = np.stack([v for r in rows for v in r]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
        y = np.array([c for c, r in enumerate(rows) for _ in r], np.int64)
        self.key, self.ids, self.means = key, ids, class_means(x, y, len(ids))
        return self.ids, self.means


def mean_distance_scores(q: np.ndarray, ids: np.ndarray, all_ids: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Top-k candidates' scores (B, k) under ``mean_distance``: (B, D) unit queries, (B, k) candidate ids (-1 pads),
    every class's ids (C,) and means (C, D). Column 0 is the query's score (nearest mean over all classes, what
    the threshold is compared with), the others minus their own class mean's squared distance."""
    from oneshot.modalities.text.classifier import mean_distance

    q64, m = q.astype(np.float64), means.astype(np.float64)
    per_class = -np.maximum(1.0 - 2.0 * q64 @ m.T + (m * m).sum(1)[None, :], 0.0)  # (B, C)
    col = {int(c): j for j, c in enumerate(all_ids.tolist())}
    cols = np.vectorize(lambda i: col.get(int(i), 0), otypes=[np.int64])(ids) if ids.size else ids
    out = np.take_along_axis(per_class, cols, axis=1).astype(np.float32)
    out[:, 0] = mean_distance(q, means)
    return out
