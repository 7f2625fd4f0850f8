"""A verification threshold from the gallery's own enrolments (issue 16's calibration lever).

Validation classes are a stand-in for the people a gallery will meet: when they are more alike than the
deployed gallery's strangers (one family of siblings against a varied crowd), a threshold set on them is
stricter than it needs to be, and the owners it turns away are lost for nothing. A gallery already holds a
sample of the population it serves: its enrolled classes, each a different identity. Every enrolled example
scored against every *other* class's template is an impostor comparison drawn from that population, scored
exactly as :meth:`~oneshot.gallery.Gallery.verify` scores a query (the template cosine, its S-norm under
``snorm``, or Tanimoto). With ``verify_from="enrolments"`` calibration sets the verify threshold to accept at
most ``target_far`` of these comparisons; the identify threshold still comes from the validation classes (a
stranger's best match over the whole gallery cannot be sampled from the gallery itself).

The assumption, recorded with the threshold: strangers resemble the enrolled classes as much as those
resemble each other. A gallery of one family (siblings) then gets a stricter threshold than validation
classes of many families would give, and a varied gallery a looser one. The rate rests on the number of
impostor comparisons above the threshold: at least :data:`MIN_EXCEEDANCES` are required (with 100
one-example classes, 9,900 comparisons resolve a FAR of 1e-2 but not 1e-3), and the threshold belongs to the
gallery it was measured on -- enrol or forget many classes and :meth:`~oneshot.gallery.Gallery.info` asks for
a new calibration, like any other.

Measured on ``benchmarks/gallery_open_set.py --verify-from enrolments`` (100 characters enrolled, 500
strangers, README "Gallery: open-set Omniglot").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery.calibration import allowed_exceedances, threshold_for_far
from oneshot.gallery.class_store import ClassStore
from oneshot.ranges import in_range

#: Where a verify threshold can come from: the validation classes, or the gallery's own enrolments.
VERIFY_SOURCES = ("validation", "enrolments")
#: The fewest impostor comparisons that may score above the threshold (the FAR's relative error is about
#: 1 / sqrt(this): 22% at 20).
MIN_EXCEEDANCES = 20
#: Examples scored against all templates at once.
CHUNK = 512


def impostor_scores(
    store: ClassStore, dim: int, score: Callable[[np.ndarray, np.ndarray], np.ndarray], keep: int, chunk: int = CHUNK
) -> tuple[np.ndarray, int, int, int]:
    """The ``keep`` largest impostor scores of the gallery's enrolments, largest first, and the counts they
    rest on: every stored example of each class against every other class's template (C - 1), scored by
    ``score(examples (n, D), templates (C, D)) -> (n, C)`` on about ``chunk`` examples at a time (so a score with
    per-template statistics, S-norm, computes them once per chunk). Returns ``(scores, comparisons, classes,
    examples)``."""
    ids, templates = store.all_templates(dim)  # (C,), (C, D)
    top = np.zeros(0, np.float64)
    comparisons = examples = 0
    rows: list[np.ndarray] = []  # example vectors waiting to be scored
    cols: list[int] = []  # each one's own class column

    def flush() -> None:
        nonlocal top, comparisons
        s = np.asarray(score(np.concatenate(rows), templates), np.float64)  # (n, C)
        own = np.zeros(s.shape, bool)
        own[np.arange(len(cols)), cols] = True
        s = s[~own]
        comparisons += s.size
        both = np.concatenate([top, s])
        top = -np.partition(-both, keep - 1)[:keep] if len(both) > keep else both
        rows.clear()
        cols.clear()

    for j, cid in enumerate(ids):
        ex = store.example_vectors(int(cid), dim)  # (n, D)
        rows.append(ex)
        cols.extend([j] * len(ex))
        examples += len(ex)
        if len(cols) >= chunk:
            flush()
    if cols:
        flush()
    return np.sort(top)[::-1], comparisons, len(ids), examples


def verify_from_enrolments(
    store: ClassStore,
    dim: int,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    target_far: float,
    confidence: float | None = None,
) -> dict[str, Any]:
    """The verify threshold that accepts at most ``target_far`` of the gallery's own impostor comparisons (with
    ``confidence``, at most that rate with that confidence: :func:`~oneshot.gallery.calibration.allowed_exceedances`),
    with the counts it rests on; a one-line :class:`OneshotError` when the gallery is too small for that rate."""
    in_range("target_far", target_far, 0, 1, low_open=True, high_open=True)
    n_classes, n_examples = store.count(), store.count_examples()  # counts only: the templates are read once, below
    comparisons = n_examples * max(0, n_classes - 1)
    allowed = int(math.floor(target_far * comparisons))
    if allowed < MIN_EXCEEDANCES:
        # Classes of one example each that would be enough: C (C - 1) * far >= MIN_EXCEEDANCES.
        needed = math.ceil((1 + math.sqrt(1 + 4 * MIN_EXCEEDANCES / target_far)) / 2)
        raise OneshotError(
            f"the gallery's {n_classes} classes give {comparisons} impostor comparisons, {allowed} of them at a "
            f"false-accept rate of {target_far:g}; a threshold needs {MIN_EXCEEDANCES} (about {needed} classes of one "
            "example): enrol more, aim at a larger rate, or calibrate the verify threshold on validation classes"
        )
    allowed = allowed_exceedances(comparisons, target_far, confidence)
    top, comparisons, classes, examples = impostor_scores(store, dim, score, allowed + 1)
    threshold = threshold_for_far(top, target_far, total=comparisons, confidence=confidence)
    return {
        "source": "enrolments",
        "threshold": threshold,
        "comparisons": int(comparisons),
        "classes": int(classes),
        "examples": int(examples),
        "measured_far": float(np.sum(top >= threshold) / comparisons),
        "assumes": "strangers resemble the enrolled classes as much as those resemble each other",
    }


def for_source(
    source: str,
    store: ClassStore,
    dim: int,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    target_far: float,
    confidence: float | None = None,
) -> dict[str, Any] | None:
    """:func:`verify_from_enrolments` when ``source`` is ``enrolments``, None for ``validation``."""
    if source not in VERIFY_SOURCES:
        raise OneshotError(f"unknown verify threshold source {source!r}: choose {' or '.join(VERIFY_SOURCES)}")
    return verify_from_enrolments(store, dim, score, target_far, confidence) if source == "enrolments" else None
