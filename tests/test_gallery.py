"""Gallery behaviour: enrol / identify / verify / forget / rename, index cache, HNSW, adaptation, calibration,
fingerprints, re-embedding, export / import, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gallery_util import make_checkpoint, snapshot, unit, write_pngs
from typer.testing import CliRunner

from oneshot import Gallery
from oneshot.errors import OneshotError
from oneshot.gallery.calibration import calibrate, threshold_for_far

D = 16


def brute_top1(templates: dict[str, np.ndarray], q: np.ndarray) -> list[str]:
    labels = list(templates)
    t = np.stack([templates[k] for k in labels])
    return [labels[i] for i in (unit(q) @ t.T).argmax(1)]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_enrol_identify_verify_forget_rename(tmp_path, rng):
    x = rng.normal(size=(50, D))
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        for i in range(50):
            r = g.enrol(f"c{i}", x[i])
            assert r.created and r.n_examples == 1
        assert len(g) == 50
        res = g.identify(x + 0.01 * rng.normal(size=x.shape), k=3)
        assert [r.label for r in res] == [f"c{i}" for i in range(50)]
        assert all(len(r.candidates) == 3 and r.candidates[0].score >= r.candidates[1].score for r in res)
        # Scores are cosine similarities against the templates.
        assert res[7].candidates[0].score == pytest.approx(float(unit(x[7] + 0) @ unit(x[7] + 0)), abs=0.05)
        g.set_threshold(identify=0.9, verify=0.8)
        stranger = rng.normal(size=D)
        assert g.identify(stranger[None])[0].label is None  # "unknown"
        assert g.verify(x[3], "c3").accepted
        assert not g.verify(x[4], "c3").accepted
        assert g.forget("c3") == 1
        assert all(r.label != "c3" for r in g.identify(x[3][None], k=50)[0].candidates)
        with pytest.raises(OneshotError, match="no class 'c3'"):
            g.verify(x[3], "c3")
        g.rename("c4", "four")
        assert g.identify(x[4][None])[0].label == "four"
        with pytest.raises(OneshotError, match="already exists"):
            g.rename("c5", "four")
        assert [c.label for c in g.list()][:4] == ["c0", "c1", "c2", "four"]


def test_more_examples_refine_the_prototype_not_a_duplicate(tmp_path, rng):
    a, b, c = rng.normal(size=(3, D))
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol("p", a)
        r = g.enrol("p", [b, c])
        assert not r.created and r.n_examples == 3 and len(g) == 1
        t = np.frombuffer(g.store.conn.execute("SELECT template FROM classes").fetchone()[0], np.float32)
        np.testing.assert_allclose(t, unit(unit(a) + unit(b) + unit(c)), atol=1e-6)
        s = g.identify(a[None])[0].score
        assert s == pytest.approx(float(unit(a) @ t), abs=1e-5)


def test_quality_report_warns_ambiguous_and_uncharacteristic(tmp_path, rng):
    base = unit(rng.normal(size=(2, D)))
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.set_threshold(identify=0.8, verify=0.7)
        r = g.enrol("alice", base[0])
        assert r.warnings == [] and r.self_scores == [None]
        near = base[0] + 0.05 * rng.normal(size=D)  # a new class that looks like alice
        r = g.enrol("bob", near)
        assert any(w.startswith("ambiguous") and "'alice'" in w for w in r.warnings)
        assert r.nearest_other.label == "alice" and r.nearest_other.score > 0.7
        r = g.enrol("carol", base[1])
        assert not any(w.startswith("ambiguous") for w in r.warnings)
        r = g.enrol("carol", -base[1])  # nothing like carol's other example
        assert any(w.startswith("uncharacteristic") for w in r.warnings)
        r = g.enrol("carol", base[1] + 0.01 * rng.normal(size=D))
        assert not any(w.startswith("uncharacteristic: example 0 scores 0.9") for w in r.warnings)


def test_index_cache_catches_up_and_rebuilds(tmp_path, rng):
    path = tmp_path / "g.db"
    x = unit(rng.normal(size=(40, D)))
    with Gallery.open(path, dim=D) as g:
        g.enrol_vectors([f"c{i}" for i in range(30)], x[:30])
        g.identify(x[:1])
    assert g.index_path.is_file()
    g1 = Gallery.open(path)
    g1.identify(x[:1])  # loads the saved index
    with Gallery.open(path) as g2:  # another handle changes the gallery meanwhile
        g2.enrol_vectors([f"c{i}" for i in range(30, 40)], x[30:])
        g2.forget("c0")
        g2.enrol("c1", x[2])  # refine: c1's template moves halfway to c2
    res = g1.identify(x, k=1)
    assert res[0].label != "c0"
    assert res[1].score == pytest.approx(float(x[1] @ unit(x[1] + x[2])), abs=1e-5)
    assert [r.label for r in res[2:]] == [f"c{i}" for i in range(2, 40)]
    assert g1.index_cache.index.live == 39
    g1.close()
    # A damaged index file is ignored and rebuilt; a missing one too.
    idx = g1.index_path
    idx.write_bytes(idx.read_bytes()[:100])
    with Gallery.open(path) as g:
        assert [r.label for r in g.identify(x[2:], k=1)] == [f"c{i}" for i in range(2, 40)]
    idx.unlink()
    with Gallery.open(path) as g:
        assert g.identify(x[5:6])[0].label == "c5"


def test_hnsw_above_threshold_with_forget_and_refine(tmp_path, rng):
    path = tmp_path / "g.db"
    n = 400
    x = unit(rng.normal(size=(n, D)))
    labels = [f"c{i}" for i in range(n)]
    with Gallery.open(path, dim=D, approx_above=100) as g:
        g.enrol_vectors(labels, x)
        assert g.info()["index"]["kind"] == "hnsw"
        top = [r.label for r in g.identify(x, k=1)]
        assert np.mean([a == b for a, b in zip(top, labels)]) >= 0.99
        for i in range(0, 20):
            g.forget(f"c{i}")
        new = unit(rng.normal(size=(10, D)))
        for j in range(10):  # refine: template = mean of old and new example
            g.enrol(f"c{100 + j}", new[j], check=False)
        templates = {lab: x[i] for i, lab in enumerate(labels) if i >= 20}
        for j in range(10):
            templates[f"c{100 + j}"] = unit(x[100 + j] + new[j])
        q = unit(rng.normal(size=(200, D)))
        got = [r.label for r in g.identify(q, k=1)]
        want = brute_top1(templates, q)
        assert g.index_cache.index.tombstones and g.index_cache.index.delta.ntotal == 10  # HNSW cannot delete: tombstones + delta
        assert np.mean([a == b for a, b in zip(got, want)]) >= 0.97
        assert not any(lab in {f"c{i}" for i in range(20)} for lab in got)
    with Gallery.open(path) as g:  # the saved index keeps its tombstones
        assert [r.label for r in g.identify(q, k=1)] == got


def test_adaptation_is_off_by_default_and_bounded(tmp_path, rng):
    a = unit(rng.normal(size=D))
    drift = unit(a + 0.6 * unit(rng.normal(size=D)))
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol("a", a)
        g.set_threshold(identify=0.5, verify=0.5)
        assert not g.verify(drift, "a", confirm=True).adapted  # off by default
        with pytest.raises(OneshotError, match="between 0"):
            g.set_adaptation("a", 0.9)
        g.set_adaptation("a", 0.5, max_drift=0.9)
        first = g.verify(drift, "a", confirm=True)
        assert first.adapted
        after = g.verify(drift, "a")
        assert after.score > first.score  # the template moved toward the new look
        for _ in range(20):
            g.verify(drift, "a", confirm=True)
        t = np.frombuffer(g.store.conn.execute("SELECT template FROM classes").fetchone()[0], np.float32)
        assert float(t @ a) >= 0.9 - 1e-6  # never further than max_drift from the enrolled examples
        assert g.list()[0].adaptations >= 1 and g.list()[0].adapt_rate == 0.5
        assert not g.verify(drift, "a").adapted  # no confirmation, no adaptation


def test_threshold_for_far_is_exact():
    imp = np.arange(1000, dtype=np.float64) / 1000
    t = threshold_for_far(imp, 0.01)
    assert np.sum(imp >= t) == 10 and np.sum(imp >= np.nextafter(np.float32(imp[-11]), -1)) > 10
    assert np.sum(imp >= threshold_for_far(imp, 1e-6)) == 0


def test_calibration_meets_target_on_its_data_and_is_stored(tmp_path, rng):
    centres = unit(rng.normal(size=(60, D)))
    labels = np.repeat(np.arange(60), 10)
    emb = unit(centres[labels] + 0.15 * rng.normal(size=(600, D)))
    rec = calibrate(emb, labels, 0.01, gallery_size=20)
    m = rec["measured"]
    assert m["verify_far"] <= 0.01 and m["identify_far"] <= 0.01
    assert m["verify_tar"] > 0.5 and rec["identify_method"] == "simulated"
    assert rec["scores"]["impostor"]["count"] == 540 * 59
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol_vectors([f"c{i}" for i in range(20)], rng.normal(size=(20, D)))
        rec = g.calibrate(emb, labels, target_far=0.01)
        assert rec["gallery_size"] == 20
        assert g.thresholds() == {"identify": rec["identify_threshold"], "verify": rec["verify_threshold"]}
        assert g.info()["calibration"]["measured"] == rec["measured"]
    with pytest.raises(OneshotError, match="between 0 and 1"):
        calibrate(emb, labels, 0.0, 10)
    with pytest.raises(OneshotError, match="at least 4"):
        calibrate(emb[:30], labels[:30], 0.01, 10)


def test_calibration_with_k_example_templates(tmp_path, rng):
    """``shots=K`` averages K examples into each simulated template: counts follow, one-example calibration is
    unchanged, and a gallery's calibration defaults to its own examples per class (capped by the data)."""
    centres = unit(rng.normal(size=(60, D)))
    labels = np.repeat(np.arange(60), 10)
    emb = unit(centres[labels] + 0.15 * rng.normal(size=(600, D)))
    one = calibrate(emb, labels, 0.01, gallery_size=20)
    assert one["shots"] == 1 and calibrate(emb, labels, 0.01, gallery_size=20, shots=1) == one
    five = calibrate(emb, labels, 0.01, gallery_size=20, shots=5)
    assert five["shots"] == 5 and five["scores"]["impostor"]["count"] == (600 - 60 * 5) * 59
    assert five["scores"]["genuine"]["count"] == 600 - 60 * 5
    # Averaging five noisy examples moves templates to the class centres: genuine queries score higher.
    assert five["scores"]["genuine"]["mean"] > one["scores"]["genuine"]["mean"] + 0.01
    with pytest.raises(OneshotError, match="11\\+ examples"):
        calibrate(emb, labels, 0.01, gallery_size=20, shots=10)
    with pytest.raises(OneshotError, match="whole number >= 1"):
        calibrate(emb, labels, 0.01, gallery_size=20, shots=0)
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        for i in range(6):
            g.enrol(f"c{i}", unit(rng.normal(size=(3, D))), check=False)
        rec = g.calibrate(emb, labels, target_far=0.01)
        assert rec["shots"] == 3 and not rec["notes"]
        assert g.info()["calibration"]["shots"] == 3
        assert "warning" not in g.info()  # templates of 3, classes of 3 examples
        assert g.calibrate(emb, labels, target_far=0.01, shots=1)["shots"] == 1
        assert "templates of 1 example, the gallery's classes now have 3.0" in g.info()["warning"]
    with Gallery.open(tmp_path / "g12.db", dim=D) as g:
        for i in range(6):
            g.enrol(f"c{i}", unit(rng.normal(size=(12, D))), check=False)
        rec = g.calibrate(emb, labels, target_far=0.01)  # validation classes have 10 examples: templates of 9
        assert rec["shots"] == 9 and rec["shots_wanted"] == 12 and any("allow templates of 9" in n for n in rec["notes"])


def test_images_fingerprint_refusal_and_reembed(tmp_path, rng):
    enc_a = make_checkpoint(tmp_path / "a.safetensors", 0)
    enc_b = make_checkpoint(tmp_path / "b.safetensors", 1)
    imgs = (rng.random((4, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    files = write_pngs(tmp_path / "img", imgs)
    path = tmp_path / "g.db"
    with Gallery.open(path, encoder=enc_a) as g:
        g.enrol("x", files[:2])
        g.enrol("y", [files[2]])
        before = g.identify([files[3]], k=2)[0].candidates
    with pytest.raises(OneshotError, match="reembed"):
        Gallery.open(path, encoder=enc_b)
    with Gallery.open(path) as g:  # the recorded encoder is used for files
        assert g.identify([files[3]], k=2)[0].candidates == before
        g.set_threshold(identify=0.5, verify=0.5)
        assert g.reembed(enc_b) == 3
        assert g.thresholds() == {"identify": None, "verify": None}
    from oneshot.gallery import ImageEmbedder

    enc = ImageEmbedder(enc_b)
    with Gallery.open(path, encoder=enc_b) as g:
        want = unit(unit(enc.embed([files[0].read_bytes(), files[1].read_bytes()], ["0", "1"])).mean(0))
        t = np.frombuffer(g.store.conn.execute("SELECT template FROM classes WHERE label = 'x'").fetchone()[0], np.float32)
        np.testing.assert_allclose(t, want, atol=1e-5)
        assert g.identify([files[0]])[0].label == "x"
    with pytest.raises(OneshotError, match="reembed"):
        Gallery.open(path, encoder=enc_a)


def test_paths_mode_and_vector_galleries_cannot_reembed_without_inputs(tmp_path, rng):
    enc_a = make_checkpoint(tmp_path / "a.safetensors", 0)
    files = write_pngs(tmp_path / "img", (rng.random((2, 1, 28, 28)) * 255).astype(np.uint8))
    with Gallery.open(tmp_path / "p.db", encoder=enc_a, store="paths") as g:
        g.enrol("x", [files[0]])
        row = g.store.conn.execute("SELECT input, input_path FROM examples").fetchone()
        assert row[0] is None and row[1] == str(files[0].resolve())
        g.enrol("v", rng.normal(size=(1, g.dim)))  # a raw vector has no input to re-embed
        with pytest.raises(OneshotError, match="neither a stored input nor a path"):
            g.reembed(make_checkpoint(tmp_path / "b.safetensors", 1))
    with Gallery.open(tmp_path / "v.db", dim=D) as g:
        g.enrol("v", rng.normal(size=D))
        with pytest.raises(OneshotError, match="precomputed vectors"):
            g.identify([files[0]])


def test_export_import(tmp_path, rng):
    x = rng.normal(size=(6, D))
    with Gallery.open(tmp_path / "a.db", dim=D) as g:
        g.enrol_vectors(["a", "b", "c"], x[:3])
        g.export(tmp_path / "copy.db")
        with pytest.raises(OneshotError, match="already exists"):
            g.export(tmp_path / "copy.db")
    assert snapshot(tmp_path / "copy.db")["classes"] == snapshot(tmp_path / "a.db")["classes"]
    with Gallery.open(tmp_path / "b.db", dim=D) as g:
        g.enrol_vectors(["c", "d"], x[3:5])
        before = snapshot(tmp_path / "b.db")
        with pytest.raises(OneshotError, match="exist in both"):
            g.import_from(tmp_path / "copy.db")
    assert snapshot(tmp_path / "b.db") == before  # all or nothing
    with Gallery.open(tmp_path / "b.db") as g:
        assert g.import_from(tmp_path / "copy.db", on_conflict="merge") == 3
        assert {c.label: c.n_examples for c in g.list()} == {"a": 1, "b": 1, "c": 2, "d": 1}
        assert g.identify(x[1][None])[0].label == "b"
    with Gallery.open(tmp_path / "other.db", dim=D + 1) as g:
        with pytest.raises(OneshotError, match="encoder"):
            g.import_from(tmp_path / "copy.db")


def test_cli_round_trip(tmp_path, rng):
    from oneshot.cli import app

    enc = make_checkpoint(tmp_path / "a.safetensors", 0)
    files = write_pngs(tmp_path / "img", (rng.random((3, 1, 28, 28)) * 255).astype(np.uint8))
    gal = str(tmp_path / "g.db")
    run = CliRunner().invoke
    assert run(app, ["gallery", "create", gal, "--encoder", str(enc)]).exit_code == 0
    r = run(app, ["gallery", "enrol", gal, "x", str(files[0]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["enrolments"][0]["created"]
    assert run(app, ["gallery", "enrol", gal, "y", str(files[1])]).exit_code == 0
    r = run(app, ["gallery", "identify", gal, str(files[0]), "--json"])
    assert json.loads(r.stdout)["results"][0]["label"] == "x"
    r = run(app, ["gallery", "verify", gal, str(files[0]), "--label", "x"])
    assert r.exit_code == 2 and "calibrate" in r.output
    assert run(app, ["gallery", "threshold", gal, "--identify", "0.999", "--verify", "0.999"]).exit_code == 0
    r = run(app, ["gallery", "identify", gal, str(files[2]), "--json"])
    assert json.loads(r.stdout)["results"][0]["label"] in ("unknown", "x", "y")
    assert run(app, ["gallery", "verify", gal, str(files[0]), "--label", "x"]).exit_code == 0
    r = run(app, ["gallery", "forget", gal, "nobody"])
    assert r.exit_code == 2 and "error: no class 'nobody'" in r.output
    assert run(app, ["gallery", "forget", gal, "y"]).exit_code == 0
    r = run(app, ["gallery", "list", gal, "--json"])
    assert [c["label"] for c in json.loads(r.stdout)["class_list"]] == ["x"]
    assert run(app, ["gallery", "export", gal, str(tmp_path / "e.db")]).exit_code == 0
    r = run(app, ["gallery", "import", gal, str(tmp_path / "e.db"), "--on-conflict", "skip"])
    assert r.exit_code == 0 and "imported 0" in r.output
    r = run(app, ["gallery", "reembed", gal, "--encoder", str(make_checkpoint(tmp_path / "b.safetensors", 1))])
    assert r.exit_code == 0 and "re-embedded 1" in r.output
    r = run(app, ["gallery", "create", gal, "--encoder", str(enc)])
    assert r.exit_code == 2 and "already exists" in r.output
