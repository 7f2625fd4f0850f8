"""Self-training of the few-shot intent classifier on unlabeled utterances (:mod:`oneshot.modalities.text.selftrain`):
the per-class selection against a brute force, and a real-data gain on confusable CLINC150 intents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oneshot.errors import OneshotError
from oneshot.modalities.text.selftrain import confident_per_class, fit_self_trained


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 1.0])
def test_confident_per_class_keeps_the_most_probable_fraction_of_each_predicted_class(keep):
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(4, 0.5), size=200)
    proba[:, 3] *= 0.1  # class 3 is rarely predicted: its few utterances still get their share
    proba /= proba.sum(1, keepdims=True)
    idx, pseudo = confident_per_class(proba, keep)
    want = []
    for c in range(4):
        members = [i for i in range(200) if int(np.argmax(proba[i])) == c]
        ranked = sorted(members, key=lambda i: (-proba[i, c], i))
        want += ranked[: math.ceil(keep * len(members))]
    assert idx.tolist() == sorted(want)
    assert pseudo.tolist() == [int(np.argmax(proba[i])) for i in idx]
    assert (keep < 1) == (len(idx) < 200)


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5])
def test_keep_outside_zero_one_is_refused(keep):
    with pytest.raises(OneshotError, match="keep"):
        confident_per_class(np.full((3, 2), 0.5), keep)


def test_self_training_on_unlabeled_utterances_beats_the_support_alone_on_confusable_clinc150_intents():
    """One train utterance + the intent name for each of the 10 intents the frozen MiniLM confuses most; the
    unlabeled pool is 80 more train utterances of each (labels unread) plus 20 out-of-scope ones; the held-apart
    queries are 20 val utterances of each. Self-training must beat the support alone, and with no unlabeled
    utterance (or zero rounds) it is the support-only fit exactly."""
    pytest.importorskip("sentence_transformers")
    from conftest import data_dir

    if not (data_dir() / "text" / "clinc150" / "data_full.json").is_file():
        pytest.skip("CLINC150 not found: set ONESHOT_DATA")
    from test_text import CONFUSABLE

    from oneshot.data.clinc150 import intent_description, load_clinc150
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.lexical import fit_mixed

    data = load_clinc150(data_dir())
    enc = load_embedder("text")
    tr, va = data["train"].by_label(), data["val"].by_label()
    n = len(CONFUSABLE)
    texts = [tr[c][0] for c in CONFUSABLE]
    y = np.arange(n)
    desc_texts = [intent_description(c) for c in CONFUSABLE]
    x, desc = enc.embed_texts(texts), enc.embed_texts(desc_texts)
    pool_texts = [t for c in CONFUSABLE for t in tr[c][1:81]] + list(data["oos_train"].texts[:20])
    pool = enc.embed_texts(pool_texts)
    q_texts = [t for c in CONFUSABLE for t in va[c][:20]]
    q, yq = enc.embed_texts(q_texts), np.repeat(np.arange(n), 20)
    alone = fit_mixed(x, texts, y, n, desc, desc_texts)
    tuned = fit_self_trained(x, texts, y, n, pool, pool_texts, desc, desc_texts)
    acc_alone = float((alone.proba(q, q_texts).argmax(1) == yq).mean())
    acc_tuned = float((tuned.proba(q, q_texts).argmax(1) == yq).mean())
    assert acc_tuned >= acc_alone + 0.03, (acc_alone, acc_tuned)  # measured: 65.0 -> 69.5
    for same in (
        fit_self_trained(x, texts, y, n, pool[:0], [], desc, desc_texts),
        fit_self_trained(x, texts, y, n, pool, pool_texts, desc, desc_texts, rounds=0),
    ):
        np.testing.assert_array_equal(same.proba(q, q_texts), alone.proba(q, q_texts))
    with pytest.raises(OneshotError, match="unlabeled"):
        fit_self_trained(x, texts, y, n, pool, pool_texts[:-1], desc, desc_texts)
