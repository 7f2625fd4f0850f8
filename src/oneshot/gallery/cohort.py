"""A gallery's score-normalisation cohort and its ``snorm`` scores (issue 16's cohort lever, in the product).

A *cohort* is a set of templates of classes that will never be enrolled nor queried -- for Omniglot, one drawing
of each background character; for faces, photos of people who are not users. With the rejection score ``snorm``
(:mod:`~oneshot.gallery.rejection`), every query-template score is adaptive S-norm
(:class:`~oneshot.gallery.normalise.CohortNorm`): the cosine measured against how much each side resembles the
cohort, so one threshold fits strangers that look like many things and templates that do. Identification ranks
the index's top :data:`RERANK` cosine candidates by S-norm; verification compares the S-norm of the query and
the claimed class's template. Both thresholds are then S-norm values (z-score units, about 0 to 10).

The cohort is stored in the gallery (meta ``cohort``: size, ``k``, the encoder fingerprint it was embedded
with, source, date; meta ``cohort_vectors``: the (K, D) float32 embeddings, base64), so it survives reopening,
export and import, and is covered by the gallery's integrity digests. Setting a new cohort clears S-norm
thresholds (their units moved); re-embedding the gallery drops the cohort (it belongs to the old encoder).
"""

from __future__ import annotations

import base64
import warnings
from typing import Any

import numpy as np

from oneshot.errors import OneshotError, OneshotWarning
from oneshot.gallery import rejection
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.normalise import CohortNorm
from oneshot.modalities import fingerprint_id

INFO_KEY, VECTORS_KEY = "cohort", "cohort_vectors"
#: Top-k cohort scores each side's statistics use: k = 200 was kept on validation for the Omniglot encoders
#: (``python benchmarks/gallery_open_set.py --levers``; k = 50 was not).
DEFAULT_K = 200
#: The fewest cohort templates accepted (statistics of fewer are noise).
MIN_COHORT = 20
#: Cosine candidates re-ranked by S-norm in identification (the best S-norm match is almost always among them).
RERANK = 32


def set_cohort(
    store: ClassStore, vectors: np.ndarray, *, k: int | None, fingerprint: dict, source: str, now: str
) -> dict[str, Any]:
    """Store unit cohort ``vectors`` (K, D) embedded by the encoder of ``fingerprint``, with top-``k``
    statistics (None: :data:`DEFAULT_K` or the cohort's size when smaller), in one transaction; returns the
    info record. When the gallery rejects on ``snorm``, thresholds
    set on the old cohort are cleared (with a warning): S-norm values are measured against the cohort."""
    if fingerprint.get("similarity", "cosine") != "cosine":
        raise OneshotError("snorm normalises cosine scores; this gallery scores Tanimoto similarity: keep template_cosine")
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2 or len(v) < MIN_COHORT:
        raise OneshotError(
            f"a cohort needs at least {MIN_COHORT} examples of classes that will never be enrolled, got {len(v)}: "
            "give more (one example of each of many background classes)"
        )
    k = min(DEFAULT_K, len(v)) if k is None else k
    if not 1 <= int(k) <= len(v):
        raise OneshotError(f"cohort k {k} must be between 1 and the cohort's size {len(v)}")
    fp = fingerprint_id(fingerprint)
    info = {"size": int(len(v)), "dim": int(v.shape[1]), "k": int(k), "fingerprint": fp, "source": source, "set": now}
    said = None
    with store.write() as tx:
        th = store.get_meta("threshold") or {}
        if rejection.read_score(store) == rejection.SNORM and (th.get("identify") is not None or th.get("verify") is not None):
            said = "the gallery's S-norm thresholds were measured against the old cohort: they are cleared; run calibrate again"
            tx.set_meta("threshold", dict(th, identify=None, verify=None, cleared="cohort changed"))
        tx.set_meta(VECTORS_KEY, base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"))
        tx.set_meta(INFO_KEY, info)
    if said:
        warnings.warn(said, OneshotWarning, stacklevel=3)
    return info


def clear_cohort(tx: Any) -> None:
    """Drop the cohort inside an open write transaction ``tx`` (re-embedding: it belongs to the old encoder)."""
    tx.set_meta(INFO_KEY, None)
    tx.set_meta(VECTORS_KEY, None)


def read_info(store: ClassStore) -> dict[str, Any] | None:
    """The stored cohort's info record (size, dim, k, fingerprint, source, set), or None."""
    return store.get_meta(INFO_KEY)


class CohortCache:
    """The gallery's :class:`CohortNorm`, decoded once and kept until the stored cohort changes."""

    def __init__(self) -> None:
        self.info: dict[str, Any] | None = None
        self.norm: CohortNorm | None = None

    def current(self, store: ClassStore, fingerprint: str) -> CohortNorm:
        """The cohort normaliser; a one-line :class:`OneshotError` when there is none or it fits another encoder."""
        info = read_info(store)
        if info is None:
            raise OneshotError(
                f"gallery {store.path} rejects on snorm but has no cohort: set one with `oneshot gallery cohort "
                f"{store.path} FOLDER` (examples of classes that will never be enrolled)"
            )
        if info.get("fingerprint") != fingerprint:
            raise OneshotError(
                f"the cohort of gallery {store.path} was embedded with another encoder: set it again with "
                "`oneshot gallery cohort`"
            )
        if self.info != info or self.norm is None:
            raw = base64.b64decode(store.get_meta(VECTORS_KEY) or "")
            if len(raw) != 4 * info["size"] * info["dim"]:
                raise OneshotError(f"the cohort of gallery {store.path} is damaged: set it again with `oneshot gallery cohort`")
            vectors = np.frombuffer(raw, "<f4").reshape(info["size"], info["dim"]).astype(np.float32)
            self.info, self.norm = info, CohortNorm(vectors, kind="snorm", k=int(info["k"]))
        return self.norm


def identify(g: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``Gallery.identify`` under ``snorm``: the index's top :data:`RERANK` cosine candidates of each unit query
    (B, D), re-ranked by S-norm on their stored templates -> (B, k) scores, best first (-inf pads), and class ids
    (-1 pads). Each distinct template's cohort statistics are computed once."""
    norm = g.cohort_norm()
    _, cand = g.search(q, max(k, RERANK))  # (B, R)
    found, tmpl = g.store.templates_of(np.unique(cand[cand >= 0]).tolist(), g.dim)  # (U,), (U, D)
    if len(found) == 0:  # every candidate was forgotten meanwhile
        return np.full((len(q), 1), -np.inf, np.float32), np.full((len(q), 1), -1, np.int64)
    order = np.argsort(found)
    found, tmpl = found[order], tmpl[order]
    col = np.minimum(np.searchsorted(found, cand), len(found) - 1)
    live = (cand >= 0) & (found[col] == cand)  # a class forgotten since the search is dropped
    (mq, sq), (mt, st) = norm.stats(q), norm.stats(tmpl)
    cos = np.einsum("bd,brd->br", q, tmpl[col])
    s = norm.normalise(cos, mq[:, None], sq[:, None], mt[col], st[col])
    s = np.where(live, s, -np.inf).astype(np.float32)
    best = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, best, 1), np.take_along_axis(np.where(live, cand, -1), best, 1)


def pair_scores(g: Any, q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``Gallery.verify``'s scores (Q, T) of unit queries (Q, D) against templates (T, D): S-norm under ``snorm``,
    else the gallery's pair similarity (cosine, or Tanimoto)."""
    if g.rejection_score == rejection.SNORM:
        return g.cohort_norm().scores(q, t)
    from oneshot.gallery.index import pair_similarities

    return pair_similarities(g.fingerprint, q, t)


def pair_score(g: Any, q: np.ndarray, t: np.ndarray) -> float:
    """``Gallery.verify``'s score of one unit query (D,) and one template (D,) (:func:`pair_scores`)."""
    return float(pair_scores(g, q[None], t[None])[0, 0])
