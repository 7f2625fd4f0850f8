"""Score normalisation against a cohort of background templates (open-set levers, issue 16).

A stranger that resembles many things scores high against every template; so does a template that resembles
many things. Measuring each side against a fixed *cohort* -- one-shot templates of background classes, never
enrolled and never queried -- and normalising by those statistics puts all scores on one scale before a
single threshold is applied. ``snorm`` is adaptive symmetric normalisation (AS-norm; Sturim & Reynolds 2005,
Matejka et al. 2017): with mu and sigma the mean and standard deviation of a vector's top-``k`` cohort scores,

    s'(q, t) = ((s - mu_q) / sigma_q + (s - mu_t) / sigma_t) / 2;

``cohort_mean`` subtracts only the top-``k`` means, ``s - (mu_q + mu_t) / 2``, keeping cosine units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("none", "snorm", "cohort_mean")


@dataclass
class CohortNorm:
    """Normalise cosine scores by top-``k`` cohort statistics. cohort: (K, D) L2-normalised float32."""

    cohort: np.ndarray
    kind: str = "snorm"
    k: int = 50

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown normalisation {self.kind!r}; choose one of {', '.join(KINDS)}")
        self.cohort = np.ascontiguousarray(self.cohort, dtype=np.float32)
        self.k = max(1, min(int(self.k), len(self.cohort)))

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (each (N,)) of each row of x (N, D)'s top-k cohort scores."""
        s = np.asarray(x, dtype=np.float32) @ self.cohort.T
        top = -np.partition(-s, self.k - 1, axis=1)[:, : self.k]
        return top.mean(1), np.maximum(top.std(1), 1e-6)

    def scores(self, queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """Normalised scores (Q, T) of queries (Q, D) against templates (T, D)."""
        s = np.asarray(queries, dtype=np.float32) @ np.asarray(templates, dtype=np.float32).T
        if self.kind == "none":
            return s
        (mq, sq), (mt, st) = self.stats(queries), self.stats(templates)
        return self.normalise(s, mq[:, None], sq[:, None], mt[None, :], st[None, :])

    def normalise(self, s: np.ndarray, mq: np.ndarray, sq: np.ndarray, mt: np.ndarray, st: np.ndarray) -> np.ndarray:
        """Cosines ``s`` normalised by query statistics (``mq``, ``sq``) and template statistics (``mt``, ``st``),
        all broadcastable to ``s``'s shape (the one place the formula is written)."""
        if self.kind == "none":
            return s
        if self.kind == "cohort_mean":
            return s - 0.5 * (mq + mt)
        return 0.5 * ((s - mq) / sq + (s - mt) / st)
