"""The cosine-softmax intent classifier and the rejection scores (:mod:`oneshot.modalities.text.classifier`):
brute-force references on small vectors, and a real-data check on confusable CLINC150 intents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oneshot.errors import OneshotError
from oneshot.modalities.text.classifier import (
    REJECTION_SCORES,
    ClassifierConfig,
    fit_cosine_classifier,
    rejection_scores,
    softmax,
)
from oneshot.modalities.text.intents import class_templates, nearest


def test_rejection_scores_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 5)).astype(np.float32) * 4
    for rule in REJECTION_SCORES:
        got = rejection_scores(logits, rule, scale=4.0)
        for i, row in enumerate(logits.tolist()):
            exps = [math.exp(v) for v in row]
            probs = sorted(e / sum(exps) for e in exps)
            want = {
                "max_cosine": max(row) / 4.0,
                "max_probability": probs[-1],
                "margin": probs[-1] - probs[-2],
                "energy": math.log(sum(exps)),
            }[rule]
            assert got[i] == pytest.approx(want, rel=1e-4, abs=1e-5), rule
    with pytest.raises(OneshotError, match="unknown rejection score"):
        rejection_scores(logits, "entropy")


def test_zero_steps_is_the_nearest_template_rule_and_training_separates_close_classes():
    rng = np.random.default_rng(1)
    centres = np.array([[1.0, 0.0, 0.0], [0.9, 0.3, 0.0], [0.0, 0.0, 1.0]], np.float32)
    x = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.2, size=(12, 3)).astype(np.float32)
    y = np.repeat(np.arange(3), 4)
    prior = np.eye(3, dtype=np.float32)
    clf = fit_cosine_classifier(x, y, 3, prior=prior, cfg=ClassifierConfig(steps=0))
    assert np.allclose(clf.weights, class_templates(x, y, 3, prior=prior), atol=1e-6)
    q = rng.normal(size=(9, 3)).astype(np.float32)
    assert (clf.proba(q).argmax(1) == nearest(q, clf.weights)[0]).all()
    qu = q / np.linalg.norm(q, axis=1, keepdims=True)
    assert np.allclose(clf.proba(q), softmax(clf.scale * qu @ clf.weights.T), atol=1e-6)
    tuned = fit_cosine_classifier(x, y, 3, cfg=ClassifierConfig(steps=200))
    assert (tuned.proba(x).argmax(1) == y).mean() >= (clf.proba(x).argmax(1) == y).mean()
    assert np.allclose(np.linalg.norm(tuned.weights, axis=1), 1.0, atol=1e-5)
    with pytest.raises(OneshotError, match="every class needs"):
        fit_cosine_classifier(x[:4], y[:4], 3)  # classes 1 and 2 have neither example nor description


@pytest.fixture(scope="module")
def confusable_clinc():
    """Real CLINC150 and the frozen MiniLM: the 10 intents it confuses most, their first 5 train utterances
    embedded (``xs``, labels ``ys``) with the intent-name descriptions (``desc``); ``va`` maps each to its val
    utterances. Shared by the real-data tests below, so the support is embedded once."""
    pytest.importorskip("sentence_transformers")
    from conftest import data_dir

    if not (data_dir() / "text" / "clinc150" / "data_full.json").is_file():
        pytest.skip("CLINC150 not found: set ONESHOT_DATA")
    from test_text import CONFUSABLE

    from oneshot.data.clinc150 import intent_description, load_clinc150
    from oneshot.modalities import load_embedder

    data = load_clinc150(data_dir())
    enc = load_embedder("text")
    tr = data["train"].by_label()
    xs = enc.embed_texts([t for n in CONFUSABLE for t in tr[n][:5]])
    desc = enc.embed_texts([intent_description(n) for n in CONFUSABLE])
    ys = np.repeat(np.arange(len(CONFUSABLE)), 5)
    return {"data": data, "enc": enc, "va": data["val"].by_label(), "xs": xs, "ys": ys, "desc": desc, "intents": CONFUSABLE}


def test_cosine_classifier_beats_the_nearest_template_on_confusable_clinc150_intents(confusable_clinc):
    """5 train examples of 10 intents the frozen MiniLM confuses most; the held-apart queries are their val
    utterances. The classifier (with the intent-name descriptions, as in the benchmark) must beat the
    nearest template of the same examples."""
    c = confusable_clinc
    intents, va, xs, ys, desc = c["intents"], c["va"], c["xs"], c["ys"], c["desc"]
    xq = c["enc"].embed_texts([t for n in intents for t in va[n][:20]])
    yq = np.repeat(np.arange(len(intents)), 20)
    frozen = float((nearest(xq, class_templates(xs, ys, len(intents)))[0] == yq).mean())
    clf = fit_cosine_classifier(xs, ys, len(intents), prior=desc)
    tuned = float((clf.proba(xq).argmax(1) == yq).mean())
    assert tuned > frozen + 0.03, (frozen, tuned)


def test_lexical_view_separates_by_words_and_mixes_linearly():
    pytest.importorskip("sklearn")
    from oneshot.modalities.text.lexical import fit_lexical, mix

    texts = ["update my todo list", "add milk to my todo list", "what is on my todo list", "read my todo list"]
    lex = fit_lexical(texts, np.array([0, 0, 2, 2]), 3)  # class 1 has no text: probability 0
    p = lex.proba(["please update the todo list", "tell me what is on the list"])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5) and (p[:, 1] == 0).all()
    assert p.argmax(1).tolist() == [0, 2]
    a, b = np.array([[0.8, 0.2]], np.float32), np.array([[0.0, 1.0]], np.float32)
    assert np.allclose(mix(a, b, 0.25), [[0.6, 0.4]])
    with pytest.raises(OneshotError, match="between 0 and 1"):
        mix(a, b, 1.5)
    with pytest.raises(OneshotError, match="at least 2 classes"):
        fit_lexical(texts[:2], np.array([0, 0]), 3)


def test_mean_distance_matches_a_brute_force_reference_on_clinc150(confusable_clinc):
    """The out-of-scope score ``mean_distance`` (docs/text.md) on real MiniLM embeddings: 5 train examples +
    the description of 10 CLINC150 intents, queries = 20 of their val utterances and 20 ``oos_val`` ones;
    against plain loops over classes and dimensions; deterministic across two fits."""
    from oneshot.modalities.text.classifier import MEAN_DISTANCE, mean_distance

    c = confusable_clinc
    CONFUSABLE, va, xs, desc, enc, data = c["intents"], c["va"], c["xs"], c["desc"], c["enc"], c["data"]
    xq = enc.embed_texts([va[n][0] for n in CONFUSABLE] + [va[n][1] for n in CONFUSABLE] + data["oos_val"].texts[:20])
    ys = c["ys"]
    clf = fit_cosine_classifier(xs, ys, len(CONFUSABLE), prior=desc)
    got = clf.rejection_scores(xq, MEAN_DISTANCE)
    xs64, d64, q64 = (v.astype(np.float64) for v in (xs, desc, xq))
    for i, q in enumerate(q64):
        q = q / math.sqrt(sum(v * v for v in q))
        best = math.inf
        for c in range(len(CONFUSABLE)):
            members = [x / np.linalg.norm(x) for x in xs64[ys == c]] + [d64[c] / np.linalg.norm(d64[c])]
            mean = sum(members) / len(members)
            best = min(best, sum((a - b) ** 2 for a, b in zip(q.tolist(), mean.tolist(), strict=True)))
        assert got[i] == pytest.approx(-best, abs=1e-5)
    again = fit_cosine_classifier(xs, ys, len(CONFUSABLE), prior=desc)
    assert np.array_equal(again.rejection_scores(xq, MEAN_DISTANCE), got)
    assert np.array_equal(mean_distance(xq, clf.means), got)
    assert got[:20].mean() > got[20:].mean()  # in-scope queries lie closer to a class mean than out-of-scope ones
    with pytest.raises(OneshotError, match="no class means"):
        type(clf)(clf.weights, clf.scale, clf.templates).rejection_scores(xq, MEAN_DISTANCE)
