"""The intent-recognition protocol functions (:mod:`oneshot.modalities.text.intents`) and the on-disk cache of
text embeddings (:mod:`oneshot.modalities.text.cache`), on small hand-made vectors: no sentence encoder needed."""

from __future__ import annotations

import numpy as np
import pytest

from oneshot.modalities.text.cache import cache_path, cached_embeddings
from oneshot.modalities.text.intents import (
    calibrate_oos_threshold,
    class_templates,
    mean_ci95,
    nearest,
    oos_metrics,
)


def test_description_prior_pulls_the_template_with_weight_one_over_n_plus_one():
    x = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # two examples of class 0
    prior = np.array([[0.0, 1.0]], np.float32)
    t = class_templates(x, np.array([0, 0]), 1, prior=prior, prior_weight=1.0)
    assert np.allclose(t[0], np.array([2.0, 1.0]) / np.sqrt(5), atol=1e-6)  # mean of e0, e0, e1
    t0 = class_templates(x, np.array([0, 0]), 1)
    assert np.allclose(t0[0], [1.0, 0.0])
    best, score = nearest(np.array([[0.0, 1.0]], np.float32), np.concatenate([t0, prior]))
    assert best.tolist() == [1] and score[0] == pytest.approx(1.0)


def test_mean_ci95():
    assert mean_ci95([0.5]) == (0.5, 0.0)
    m, h = mean_ci95([1.0, 0.0, 1.0, 0.0])
    assert m == 0.5 and h == pytest.approx(1.96 * np.std([1, 0, 1, 0], ddof=1) / 2)


def test_oos_threshold_rejects_most_strangers_within_the_allowed_accuracy_drop():
    truth = np.arange(10) % 2
    pred = truth.copy()
    pred[0] = 1 - truth[0]  # 9 of 10 right without rejection
    score = np.linspace(0.5, 0.95, 10)  # the one wrong query has the lowest score
    oos = np.array([0.1, 0.2, 0.52, 0.9])
    r = calibrate_oos_threshold(pred, score, truth, oos, max_drop=0.0)
    assert r.val_accuracy_no_rejection == pytest.approx(0.9)
    assert r.val_accuracy == pytest.approx(0.9)  # no correct query rejected
    assert r.threshold == pytest.approx(score[1])  # the highest threshold keeping every correct query
    assert r.val_oos_recall == pytest.approx(0.75)  # 0.9 stays above it
    loose = calibrate_oos_threshold(pred, score, truth, oos, max_drop=0.5)
    assert loose.threshold > r.threshold and loose.val_accuracy < r.val_accuracy and loose.val_accuracy >= 0.4 - 1e-9

    m = oos_metrics(pred, score, truth, oos, r.threshold)
    assert m == pytest.approx({"in_scope_accuracy": 0.9, "oos_recall": 0.75, "oos_precision": 0.75, "in_scope_rejected": 0.1})
    none = oos_metrics(pred, score, truth, oos, None)
    assert none == {"in_scope_accuracy": 0.9, "oos_recall": 0.0, "oos_precision": 0.0, "in_scope_rejected": 0.0}


class CountingEmbedder:
    """A stand-in text embedder: (B, 3) vectors from the texts' lengths, counting its calls."""

    dim = 3
    fingerprint = {"kind": "test-text", "dim": 3}

    def __init__(self) -> None:
        self.calls = 0

    def embed_texts(self, texts, warn=True):  # noqa: ANN001, ANN201
        self.calls += 1
        return np.array([[len(t), 1.0, 0.0] for t in texts], np.float32)


def test_cached_embeddings_are_reused_and_a_damaged_file_is_embedded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    enc, texts = CountingEmbedder(), ["book a flight", "hi"]
    first = cached_embeddings(enc, texts, "t")  # type: ignore[arg-type]
    path = cache_path(enc, texts, "t")  # type: ignore[arg-type]
    assert path.is_file() and path.parent == tmp_path / "text-embeddings" and enc.calls == 1
    assert np.array_equal(cached_embeddings(enc, texts, "t"), first) and enc.calls == 1  # read back
    assert cache_path(enc, ["other"], "t") != path  # keyed by the texts  # type: ignore[arg-type]
    path.write_bytes(b"not an npy file")
    assert np.array_equal(cached_embeddings(enc, texts, "t"), first) and enc.calls == 2  # type: ignore[arg-type]
    np.save(path, np.zeros((5, 3), np.float32))  # wrong shape: not trusted
    assert np.array_equal(cached_embeddings(enc, texts, "t"), first) and enc.calls == 3  # type: ignore[arg-type]
