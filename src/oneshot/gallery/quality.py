"""The enrolment quality report: does each new example look like its class and unlike the others?

For every new example: its score against the prototype of the class's *other* examples (``self_scores``),
``uncharacteristic`` when that is below the verify threshold (or, without one and with 3+ other examples, more
than three standard deviations below the others' leave-one-out scores), and ``ambiguous`` when its nearest
other class scores at least the threshold, or more than its own class. Computed before the enrolment is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.enrolment import Prepared
from oneshot.gallery.examples import unit
from oneshot.gallery.index import TemplateIndex
from oneshot.gallery.results import EnrolReport, Match


def _self_scores(report: EnrolReport, vectors: np.ndarray, previous: np.ndarray, threshold: float | None) -> None:
    """Scores of new examples (n, D) against the prototype of the class's other examples, previous (m, D) included."""
    allv = np.concatenate([previous, vectors])
    n_prev = len(previous)
    for j in range(len(vectors)):
        others = np.delete(allv, n_prev + j, axis=0)
        if len(others) == 0:
            report.self_scores.append(None)
            continue
        s_self = float(vectors[j] @ unit(others.mean(0)))
        report.self_scores.append(s_self)
        if threshold is not None and s_self < threshold:
            report.warnings.append(
                f"uncharacteristic: example {j} scores {s_self:.3f} against the class's other "
                f"examples, below the acceptance threshold {threshold:.3f}; check it is really {report.label!r}"
            )
        elif len(others) >= 3:
            loo = np.array([float(others[i] @ unit(np.delete(others, i, 0).mean(0))) for i in range(len(others))])
            floor = float(loo.mean() - 3 * loo.std())
            if s_self < floor:
                report.warnings.append(
                    f"uncharacteristic: example {j} scores {s_self:.3f} against the class's other "
                    f"examples, far below theirs ({loo.mean():.3f} +- {loo.std():.3f})"
                )


def fill_report(
    report: EnrolReport,
    vectors: np.ndarray,
    previous: np.ndarray,
    own_id: int | None,
    threshold: float | None,
    index: TemplateIndex,
    labels_of: Callable[[Iterable[int]], dict[int, str]],
) -> None:
    """Fill ``report``'s self scores, nearest other class, warnings and notes.

    Args:
        vectors: the new examples' unit embeddings (n, D); previous: the class's stored ones (m, D).
        own_id: the class's id when it exists (its own template is not "another class").
        threshold: the verify threshold, or None before calibration.
        index: the gallery's index, caught up; labels_of: class id -> label for the given ids.
    """
    if threshold is None:
        report.notes.append("no threshold yet: run calibrate for ambiguity warnings")
    _self_scores(report, vectors, previous, threshold)
    if index.live == 0:
        return
    scores, ids = index.search(vectors, min(3, index.live))
    nearest = [
        next(((float(s), int(i)) for s, i in zip(scores[j], ids[j], strict=False) if i >= 0 and i != own_id), None)
        for j in range(len(vectors))
    ]
    found = [n for n in nearest if n is not None]
    if not found:
        return
    best = max(found, key=lambda n: n[0])  # the first of equal scores, as a strict ">" scan finds it
    names = labels_of(i for _, i in found)
    if best[1] not in names:
        return
    report.nearest_other = Match(names[best[1]], best[0])
    for j, n in enumerate(nearest):
        if n is None:
            continue
        s, i = n
        name = names.get(i, f"#{i}")
        s_self = report.self_scores[j]
        if threshold is not None and s >= threshold:
            report.warnings.append(
                f"ambiguous: example {j} scores {s:.3f} against {name!r}, above the acceptance "
                f"threshold {threshold:.3f}; it may be confused with that class"
            )
        elif s_self is not None and s > s_self:
            report.warnings.append(f"ambiguous: example {j} is closer to {name!r} ({s:.3f}) than to its own class ({s_self:.3f})")


def reports_before(
    preps: Sequence[Prepared],
    store: ClassStore,
    dim: int,
    threshold: float | None,
    index: Callable[[], TemplateIndex],
    check: bool,
) -> list[EnrolReport]:
    """The quality report of each prepared enrolment against the gallery as it is before they are written
    (``index()``: the gallery's index, caught up; only called with ``check``, which computes the warnings)."""
    reports = []
    for prep in preps:
        own = store.class_id(prep.label)
        previous = store.example_vectors(own, dim) if own is not None else np.zeros((0, dim), np.float32)
        report = EnrolReport(prep.label, own is None, len(prep.vectors), len(previous) + len(prep.vectors))
        if check:
            fill_report(report, prep.vectors, previous, own, threshold, index(), store.labels_of)
        reports.append(report)
    return reports
