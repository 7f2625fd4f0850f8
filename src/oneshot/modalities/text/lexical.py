"""A lexical view of the few labelled texts, mixed with the embedding classifier's probabilities.

Sentence embeddings blur the words that tell close intents apart ("todo list" vs "update my todo list");
a TF-IDF bag of word 1-2-grams and character 2-5-grams (within word boundaries) with a multinomial logistic
regression fitted on the same support (and descriptions) sees them. Its probabilities are mixed linearly
with the embedding classifier's: ``p = (1 - w) p_embedding + w p_lexical`` (``w`` chosen on CLINC150's
``val``, docs/text.md). Needs scikit-learn (part of the ``text`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneshot.errors import OneshotError

#: Mixing weight of the lexical probabilities (chosen on CLINC150 val, 150-way 5- and 10-shot).
LEXICAL_WEIGHT = 0.2


@dataclass
class LexicalClassifier:
    """The fitted word and character TF-IDF vectorisers and the logistic regression over their features."""

    words: Any
    chars: Any
    model: Any
    n_classes: int

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, C) class probabilities (classes absent from the training texts get 0)."""
        from scipy.sparse import hstack

        x = hstack([self.words.transform(texts), self.chars.transform(texts)]).tocsr()
        p = np.zeros((len(texts), self.n_classes), np.float32)
        p[:, self.model.classes_] = self.model.predict_proba(x)
        return p


def fit_lexical(texts: Sequence[str], labels: np.ndarray, n_classes: int, c: float = 10.0) -> LexicalClassifier:
    """Fit TF-IDF (sublinear tf; word 1-2-grams + char_wb 2-5-grams) and an L2 logistic regression (inverse
    regularisation ``c``) on ``texts`` with ``labels`` (N,) in [0, n_classes); deterministic (lbfgs)."""
    try:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:  # pragma: no cover - the text extra installs scikit-learn
        raise OneshotError("the lexical intent view needs scikit-learn: pip install 'oneshot-learn[text]'") from e
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise OneshotError("the lexical intent view needs texts of at least 2 classes")
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    x = hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    model = LogisticRegression(C=c, max_iter=500).fit(x, labels)
    return LexicalClassifier(words, chars, model, n_classes)


def mix(p_embedding: np.ndarray, p_lexical: np.ndarray, weight: float = LEXICAL_WEIGHT) -> np.ndarray:
    """``(1 - weight) * p_embedding + weight * p_lexical``, both (N, C) probabilities."""
    if not 0.0 <= weight <= 1.0:
        raise OneshotError(f"lexical weight {weight} must be between 0 and 1")
    return ((1.0 - weight) * p_embedding + weight * p_lexical).astype(np.float32)


@dataclass
class MixedClassifier:
    """The embedding classifier and the lexical view fitted on the same support, mixed with ``weight``."""

    embedding: Any  # CosineClassifier
    lexical: LexicalClassifier | None
    weight: float

    def proba(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings (N, D) and their texts -> (N, C) mixed probabilities."""
        p = self.embedding.proba(vectors)
        return p if self.lexical is None else mix(p, self.lexical.proba(texts), self.weight)


def fit_mixed(
    vectors: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray,
    n_classes: int,
    prior: np.ndarray | None = None,
    prior_texts: Sequence[str | None] | None = None,
    weight: float = LEXICAL_WEIGHT,
) -> MixedClassifier:
    """Fit the cosine classifier on the support's unit embeddings (N, D) (+ descriptions ``prior`` (C, D), zero
    rows for none) and the lexical view on its ``texts`` (+ ``prior_texts``, None for none); one class: no
    lexical view (nothing to separate)."""
    from oneshot.modalities.text.classifier import fit_cosine_classifier

    emb = fit_cosine_classifier(vectors, labels, n_classes, prior)
    if n_classes < 2 or weight == 0:
        return MixedClassifier(emb, None, 0.0)
    extra = [(t, c) for c, t in enumerate(prior_texts or []) if t]
    all_texts = list(texts) + [t for t, _ in extra]
    all_labels = np.concatenate([np.asarray(labels), np.array([c for _, c in extra], np.int64)])
    return MixedClassifier(emb, fit_lexical(all_texts, all_labels, n_classes), weight)
