"""What the gallery's verbs return: matches, identifications, verifications, enrolment reports, class listings.

Each has ``to_dict()`` (or is a plain dataclass) for JSON; the command line and the service print these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Match:
    """One candidate class and its cosine similarity to the query."""

    label: str
    score: float


@dataclass
class Identification:
    """The answer for one query: ``label`` is the best class, or None ("unknown") when its score is below
    ``threshold``; without a threshold (not calibrated) the best class is returned and ``calibrated`` is False.
    ``score_kind`` (text galleries) names the score ``score`` and ``threshold`` are: ``template_cosine`` or
    ``mean_distance`` (:mod:`oneshot.gallery.rejection`); None for other galleries (a cosine, or Tanimoto)."""

    label: str | None
    score: float
    candidates: list[Match]
    threshold: float | None
    score_kind: str | None = None

    @property
    def known(self) -> bool:
        return self.label is not None

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "label": self.label if self.label is not None else "unknown",
            "known": self.known,
            "score": self.score,
            "threshold": self.threshold,
            "candidates": [asdict(m) for m in self.candidates],
        }
        if self.score_kind is not None:
            out["score_kind"] = self.score_kind
        return out


@dataclass
class Verification:
    """Accept or reject a claimed class: ``score`` >= ``threshold``; ``adapted`` when the template moved."""

    label: str
    score: float
    accepted: bool
    threshold: float
    adapted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnrolReport:
    """What an enrolment did and whether its examples look trustworthy.

    Attributes:
        label: the class.
        created: True when the class is new (else its template was refined).
        examples_added / n_examples: examples added now / held in total.
        self_scores: for each new example, its score against the class's *other* examples' prototype
            (None when it is the class's only example).
        nearest_other: the closest other class to the new examples and its score.
        warnings: ``ambiguous: ...`` (an example is as close to another class as the acceptance threshold, or
            closer than to its own class) and ``uncharacteristic: ...`` (far from the class's other examples).
        notes: what could not be checked (e.g. no threshold yet).
    """

    label: str
    created: bool
    examples_added: int
    n_examples: int
    self_scores: list[float | None] = field(default_factory=list)
    nearest_other: Match | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClassInfo:
    """One enrolled class as listed."""

    id: int
    label: str
    n_examples: int
    adapt_rate: float
    adaptations: int
    created: str
    updated: str
    metadata: dict[str, Any]


def identifications(
    scores: np.ndarray, ids: np.ndarray, names: dict[int, str], threshold: float | None, score_kind: str | None = None
) -> list[Identification]:
    """One :class:`Identification` per query from top-k scores (B, k) and class ids (B, k) (-1 pads, ids
    missing from ``names`` skipped): the best class, or "unknown" when its score is below ``threshold``."""
    out = []
    for srow, irow in zip(scores, ids, strict=False):
        cands = [Match(names[int(i)], float(s)) for s, i in zip(srow, irow, strict=False) if int(i) in names]
        best = cands[0] if cands else None
        known = best is not None and (threshold is None or best.score >= threshold)
        label = best.label if best is not None and known else None
        out.append(Identification(label, best.score if best else float("-inf"), cands, threshold, score_kind))
    return out
