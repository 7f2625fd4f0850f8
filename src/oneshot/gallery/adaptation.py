"""Template adaptation (off by default, per class): a confirmed match moves its class's template toward it.

``template <- normalise((1 - rate) * template + rate * query)`` with ``rate <= MAX_ADAPT_RATE``, unless the
result would fall below cosine ``max_drift`` from the prototype of the class's enrolled examples (bounded drift).
Enrolling a new example resets the template to the prototype.
"""

from __future__ import annotations

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery.class_store import ClassRow, ClassStore, from_blob
from oneshot.gallery.examples import label_key, unit
from oneshot.modalities import fingerprint_id
from oneshot.ranges import in_range

MAX_ADAPT_RATE = 0.5


def set_adaptation(
    store: ClassStore,
    label: str,
    rate: float,
    min_score: float | None,
    max_drift: float,
    score_range: tuple[float, float] = (-1.0, 1.0),
) -> None:
    """Record a class's adaptation settings (``rate`` 0 turns adaptation off; ``min_score`` is on the gallery's
    verify score, within ``score_range``)."""
    in_range("adaptation rate (between 0, off, and the maximum)", rate, 0, MAX_ADAPT_RATE)
    in_range("min_score (a verify score)", min_score, *score_range)
    in_range("max_drift", max_drift, -1, 1)
    with store.write() as tx:
        row = store.class_by_label(label_key(label))
        tx.set_adaptation(row.id, float(rate), min_score, dict(row.metadata, adapt_max_drift=float(max_drift)))


def adapt(
    store: ClassStore, class_id: int, query: np.ndarray, max_drift: float, dim: int, now: str, fingerprint: str | None = None
) -> bool:
    """Move a class's template toward a confirmed unit query (D,); False when the class is gone or the step
    would drift too far (nothing is written then). ``fingerprint``: the id of the encoder that embedded the
    query; when the gallery was re-embedded with another one meanwhile, nothing is written (an error)."""
    with store.write() as tx:
        if fingerprint is not None and fingerprint_id(store.get_meta("fingerprint")) != fingerprint:
            raise OneshotError("the gallery was re-embedded with another encoder meanwhile: nothing was adapted; reopen it")
        label = store.labels_of([class_id]).get(class_id)
        if label is None:
            return False
        row = store.class_by_label(label)
        new = unit((1 - row.adapt_rate) * from_blob(row.template, dim) + row.adapt_rate * query)
        proto = unit(store.example_vectors(class_id, dim).mean(0))
        if float(new @ proto) < max_drift:
            return False  # bounded: never drift further than max_drift (cosine) from the enrolled examples
        tx.adapt_template(class_id, new, now)
    return True


def adapt_confirmed(
    store: ClassStore, row: ClassRow, query: np.ndarray, score: float, threshold: float, dim: int, now: str, fingerprint: str
) -> bool:
    """After a confirmed, accepted verification of ``row``'s class with unit ``query`` (D,) scoring ``score``:
    :func:`adapt` when the class adapts and the score reaches its adaptation minimum (at least ``threshold``)."""
    if row.adapt_rate <= 0:
        return False
    floor = threshold if row.adapt_min_score is None else max(threshold, row.adapt_min_score)
    if score < floor:
        return False
    return adapt(store, row.id, query, row.metadata.get("adapt_max_drift", 0.8), dim, now, fingerprint)
