"""Self-training of the few-shot intent classifier on unlabeled utterances (semi-supervised few-shot intents).

A deployment of an intent classifier usually has far more *unlabeled* utterances (yesterday's logs) than labelled
ones. Self-training (Scudder 1965; Yarowsky 1995; as "pseudo-labelling", Lee 2013) fits the classifier on the
labelled few, labels the unlabeled utterances with it, keeps the ones it is most sure of and fits again on both.
Here the selection is per predicted class -- of the utterances predicted as class c, the ``keep`` fraction with
the highest probability -- so a class the first fit favours cannot swallow the pseudo-labels, and every class
whose utterances are in the pool gets new examples. The pseudo-labelled utterances count as ordinary examples of
their class: they move the templates, the tuned weights, the lexical view and the class means the
``mean_distance`` out-of-scope score uses.

On CLINC150 the unlabeled pool is the ``train`` split's utterances other than the support (their labels never
read) plus the 100 ``oos_train`` utterances; ``keep`` was chosen on ``val`` (docs/text.md,
``benchmarks/text_clinc150_semisupervised.py``). CPFT (Zhang et al. 2021), one of the published anchors, also
learns from unlabeled utterances of the intent datasets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities.text.lexical import LEXICAL_WEIGHT, MixedClassifier, fit_mixed

#: Fraction of each predicted class's unlabeled utterances kept as pseudo-labels (chosen on CLINC150 val).
KEEP = 0.95


def confident_per_class(proba: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """The pseudo-labels of unlabeled utterances from their class probabilities ``proba`` (U, C).

    Each utterance is predicted as its most probable class; of the ``n_c`` utterances predicted as class c, the
    ``ceil(keep * n_c)`` most probable ones are kept (ties by index). Returns (indices (M,) into the U utterances,
    ascending; their predicted classes (M,)).
    """
    if not 0.0 < keep <= 1.0:
        raise OneshotError(f"keep must be in (0, 1] (the fraction of each class's pseudo-labels kept), got {keep}")
    proba = np.asarray(proba)
    if proba.ndim != 2:
        raise OneshotError(f"class probabilities must be (utterances, classes), got shape {proba.shape}")
    pred = proba.argmax(1)
    conf = proba[np.arange(len(proba)), pred]
    chosen = []
    for c in np.unique(pred):
        members = np.flatnonzero(pred == c)
        order = members[np.argsort(-conf[members], kind="stable")]
        chosen.append(order[: int(np.ceil(keep * len(members)))])
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return idx, pred[idx]


def fit_self_trained(
    vectors: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray,
    n_classes: int,
    unlabeled_vectors: np.ndarray,
    unlabeled_texts: Sequence[str],
    prior: np.ndarray | None = None,
    prior_texts: Sequence[str | None] | None = None,
    keep: float = KEEP,
    rounds: int = 1,
    weight: float = LEXICAL_WEIGHT,
) -> MixedClassifier:
    """:func:`~oneshot.modalities.text.lexical.fit_mixed` on the labelled support (N, D) / texts / labels (N,), then
    ``rounds`` times: pseudo-label the unlabeled utterances (U, D) / texts with the current fit
    (:func:`confident_per_class`) and refit on the support plus them. ``rounds=0`` (or no unlabeled utterance) is
    :func:`fit_mixed` itself. Deterministic."""
    if len(unlabeled_vectors) != len(unlabeled_texts):
        raise OneshotError(f"{len(unlabeled_vectors)} unlabeled embeddings for {len(unlabeled_texts)} texts")
    model = fit_mixed(vectors, texts, labels, n_classes, prior, prior_texts, weight)
    if len(unlabeled_texts) == 0:
        return model
    labels = np.asarray(labels, np.int64)
    for _ in range(max(0, int(rounds))):
        idx, pseudo = confident_per_class(model.proba(unlabeled_vectors, unlabeled_texts), keep)
        model = fit_mixed(
            np.concatenate([np.asarray(vectors, np.float32), np.asarray(unlabeled_vectors, np.float32)[idx]]),
            list(texts) + [unlabeled_texts[i] for i in idx],
            np.concatenate([labels, pseudo]),
            n_classes,
            prior,
            prior_texts,
            weight,
        )
    return model
