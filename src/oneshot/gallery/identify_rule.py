"""How a gallery answers ``identify``: the nearest template, or -- text galleries -- the few-shot intent classifier.

The rule is stored in the gallery's meta (``identify_rule``). A text gallery created from issue 13's wiring on
is made with ``classifier``; a gallery without the key (every gallery made before) answers with
``nearest_template`` until its owner switches (``oneshot gallery rule PATH classifier``), so an existing
gallery's answers never change under it.

``classifier`` is :func:`oneshot.modalities.text.lexical.fit_mixed` (docs/text.md: cosine-softmax weights
started at the templates and tuned on the support, mixed 0.8 / 0.2 with a TF-IDF view) fitted on the
gallery's *own* stored examples: their embeddings (always stored) and, when every example's text is stored
(``--store inputs``, the default), their texts for the lexical view. A description is stored as one more
example of its class, so the fit sees it exactly as ``oneshot predict`` does. The fit is cached on the open
gallery, keyed by the gallery's (epoch, generation): every enrolment, removal, adaptation, import or
re-embedding -- by this process or another -- appends to the change log and so forces a refit before the
next answer; a stale fit is never used.

The score an identification carries (and the identify threshold is compared with) is, by default, the cosine
of the query to its predicted class's *stored template*, the score the gallery's calibration is set on. It is
at most the best template cosine, so a threshold calibrated on the nearest-template rule accepts no more
strangers under the classifier. A text gallery may reject on ``mean_distance`` instead
(:mod:`~oneshot.gallery.rejection`); :func:`answer` then rescores the candidates either rule chose.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneshot.choices import check_choice
from oneshot.errors import OneshotError, OneshotWarning
from oneshot.gallery import cohort, rejection
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.examples import as_list, embed_examples
from oneshot.gallery.results import Identification, identifications
from oneshot.modalities import Example

#: The rules ``identify`` can answer with.
IDENTIFY_RULES = ("classifier", "nearest_template")
#: The meta key holding a gallery's rule (absent: ``nearest_template``, the rule of every older gallery).
RULE_KEY = "identify_rule"
#: Above this many classes the classifier rule answers with the nearest template (with a warning): the fit
#: (100 full-batch steps over every example x every class, and a multinomial logistic regression over TF-IDF
#: features) grows with classes x examples, and the rule was validated on CLINC150's 150 intents.
MAX_CLASSIFIER_CLASSES = 1000


def default_rule(modality: str) -> str:
    """The rule a new gallery of ``modality`` is created with: the classifier for text, else the nearest template."""
    return "classifier" if modality == "text" else "nearest_template"


def read_rule(store: ClassStore) -> str:
    """The gallery's rule (``nearest_template`` when it has none recorded)."""
    return str(store.get_meta(RULE_KEY) or "nearest_template")


def check_rule(rule: str, modality: str) -> str:
    """``rule`` if it is a rule and fits the gallery's modality; else a one-line :class:`OneshotError`."""
    check_choice("gallery identify", "rule", rule, IDENTIFY_RULES)
    if rule == "classifier" and modality != "text":
        raise OneshotError(
            f"the classifier rule is for text galleries; this gallery holds {modality} embeddings: use nearest_template"
        )
    return rule


def embed_with_texts(g: Any, queries: Sequence[Example] | np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Queries -> unit embeddings (B, D) and each query's text (None for a given embedding or a gallery of
    another modality)."""
    if isinstance(queries, np.ndarray) and queries.dtype != object:
        q = g.embed(queries)
        return q, [None] * len(q)
    items = as_list(queries, "no queries given")
    q, raw = embed_examples(items, g.dim, lambda: g.encoder, lambda i: f"query {i}", "the encoder's embedding")
    if g.modality != "text":  # (snorm on images, molecules ...): no text to keep
        return q, [None] * len(q)
    return q, [None if r is None else r.data.decode("utf-8") for r in raw]


def answer(g: Any, queries: Sequence[Example] | np.ndarray, k: int) -> list[Identification]:
    """``Gallery.identify``: top-k candidates of each query by the gallery's rule, scored by its rejection score,
    "unknown" when the first candidate's score is below the identify threshold set on that score."""
    score = rejection.read_score(g.store)
    if g.identify_rule != "classifier" and score == rejection.TEMPLATE_COSINE:
        scores, ids = g.search(queries, k)
    else:
        q, texts = embed_with_texts(g, queries)
        if g._index().live == 0:
            raise OneshotError(f"gallery {g.path} is empty: enrol a class first")
        fit = g.classifier_cache.current(g.store, g.dim) if g.identify_rule == "classifier" else None
        if score == rejection.SNORM and fit is not None:
            raise OneshotError("snorm ranks nearest templates: set the identify rule to nearest_template first")
        if score == rejection.SNORM:
            scores, ids = cohort.identify(g, q, k)
        else:
            scores, ids = g.search(q, k) if fit is None or fit.model is None else fit.answer(q, texts, k)
        if score == rejection.MEAN_DISTANCE:
            scores = rejection.mean_distance_scores(q, ids, *g.means_cache.current(g.store, g.dim))

    threshold = rejection.identify_threshold(g.store, score)
    kind = score if g.modality == "text" or score == rejection.SNORM else None
    return identifications(scores, ids, g.store.labels_of(ids.ravel()), threshold, kind)


@dataclass
class FittedRule:
    """The classifier fitted on one state of a gallery.

    Attributes:
        key: the gallery's (epoch, generation) when its examples were read.
        ids: (C,) class ids, in the classifier's class order.
        templates: (C, D) the classes' stored templates (what the score is measured against).
        model: the fitted ``MixedClassifier``, or None above :data:`MAX_CLASSIFIER_CLASSES` classes.
    """

    key: tuple[int, int]
    ids: np.ndarray
    templates: np.ndarray
    model: Any

    def answer(self, q: np.ndarray, texts: list[str | None], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) unit queries -> top-k (B, k) template cosines and class ids, in the classifier's order.

        The lexical view mixes in for queries given as text; a query given as an embedding has only the
        cosine classifier's probabilities."""
        p = self.model.embedding.proba(q)
        has = [i for i, t in enumerate(texts) if t is not None]
        if self.model.lexical is not None and has:
            from oneshot.modalities.text.lexical import mix

            p[has] = mix(p[has], self.model.lexical.proba([texts[i] for i in has]), self.model.weight)
        order = np.argsort(-p, axis=1, kind="stable")[:, : max(1, min(k, len(self.ids)))]
        cos = q @ self.templates.T
        return np.take_along_axis(cos, order, axis=1), self.ids[order]


class ClassifierCache:
    """The classifier fitted on an open gallery, refitted when the gallery's state moved on."""

    def __init__(self) -> None:
        self.fitted: FittedRule | None = None
        self.fits = 0  # how many fits this cache has made (tests check that a refit happened)

    def current(self, store: ClassStore, dim: int) -> FittedRule:
        """The fit for the gallery's current state: the cached one, or a new fit on the examples read in the
        same snapshot as the (epoch, generation) it is keyed by."""
        with store.read():
            key = (int(store.get_meta("epoch", 0)), store.generation())
            if self.fitted is not None and self.fitted.key == key:
                return self.fitted
            n = store.count()
            if n > MAX_CLASSIFIER_CLASSES:  # nothing read: the caller searches the index
                warnings.warn(
                    f"the gallery holds {n} classes, more than the classifier rule's {MAX_CLASSIFIER_CLASSES}: "
                    "identify answers with the nearest template",
                    OneshotWarning,
                    stacklevel=3,
                )
                self.fitted = FittedRule(key, np.zeros(0, np.int64), np.zeros((0, dim), np.float32), None)
                return self.fitted
            ids, templates = store.all_templates(dim)
            examples = list(store.class_examples(dim))
            found = store.find_labels([lab for lab, _, _ in examples])
        model = _fit(ids, templates, {found[lab][0]: ex for lab, _, ex in examples})
        self.fitted = FittedRule(key, ids, templates, model)
        self.fits += 1
        return self.fitted


def _fit(ids: np.ndarray, templates: np.ndarray, examples: dict[int, list[tuple]]) -> Any:
    """``fit_mixed`` on every class's stored examples ((embedding (D,), input, path, source) each); a class
    with no stored example contributes its template as its one example. The lexical view only when every
    example's text is stored."""
    from oneshot.modalities.text.lexical import fit_mixed

    vectors, texts, labels = [], [], []
    for c, cid in enumerate(ids.tolist()):
        rows = examples.get(cid) or [(templates[c], None, None, None)]
        for vec, data, _, _ in rows:
            vectors.append(vec)
            texts.append(data.decode("utf-8", "replace") if isinstance(data, bytes) else None)
            labels.append(c)
    y = np.asarray(labels, np.int64)
    x = np.stack(vectors).astype(np.float32)
    if any(t is None for t in texts):
        return fit_mixed(x, [], y, len(ids), weight=0.0)
    return fit_mixed(x, [str(t) for t in texts], y, len(ids))
