"""The ``snorm`` rejection score in the gallery (issue 16's cohort lever): identify, verify and calibrate by
S-norm against a stored cohort, checked against :class:`CohortNorm` on the full score matrix."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from gallery_util import make_checkpoint, unit, write_pngs
from typer.testing import CliRunner

from oneshot.errors import OneshotError, OneshotWarning
from oneshot.gallery import Gallery
from oneshot.gallery.calibration import calibrate
from oneshot.gallery.cohort import RERANK
from oneshot.gallery.normalise import CohortNorm
from oneshot.gallery.thresholds import snorm_score

D = 16


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def clustered(rng: np.random.Generator, classes: int, per: int, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (classes * per, D) around random class centres, and their labels."""
    centres = unit(rng.normal(size=(classes, D)))
    x = unit(np.repeat(centres, per, 0) + spread * rng.normal(size=(classes * per, D)) / np.sqrt(D))
    return x, np.repeat(np.arange(classes), per)


def snorm_gallery(path, rng, classes: int, k: int = 10):
    """A vector gallery of ``classes`` one-vector classes, a 60-vector cohort and the ``snorm`` score."""
    g = Gallery.open(path, dim=D)
    templates = unit(rng.normal(size=(classes, D)))
    g.enrol_vectors([f"c{i}" for i in range(classes)], templates)
    cohort = unit(rng.normal(size=(60, D)))
    g.set_cohort(cohort, k=k, source="test cohort")
    g.set_rejection_score("snorm")
    return g, templates, CohortNorm(cohort, "snorm", k)


def test_snorm_identify_is_the_full_s_norm_ranking(tmp_path, rng):
    g, templates, norm = snorm_gallery(tmp_path / "g.db", rng, classes=RERANK - 2)
    q = unit(rng.normal(size=(25, D)))
    full = norm.scores(q, templates)  # (25, C): every candidate is re-ranked when C <= RERANK
    with g:
        got = g.identify(q, k=3)
    for i, r in enumerate(got):
        best = np.argsort(-full[i], kind="stable")[:3]
        assert [c.label for c in r.candidates] == [f"c{j}" for j in best]
        np.testing.assert_allclose([c.score for c in r.candidates], full[i, best], rtol=1e-5, atol=1e-5)
        assert r.score_kind == "snorm" and r.label == f"c{best[0]}"  # no threshold yet: the best is named


def test_snorm_identify_beyond_the_rerank_depth_scores_what_it_returns(tmp_path, rng):
    g, templates, norm = snorm_gallery(tmp_path / "g.db", rng, classes=4 * RERANK)
    q = unit(templates[:20] + 0.3 * rng.normal(size=(20, D)) / np.sqrt(D))
    with g:
        got = g.identify(q, k=5)
    for i, r in enumerate(got):
        ids = [int(c.label[1:]) for c in r.candidates]
        scores = [c.score for c in r.candidates]
        np.testing.assert_allclose(scores, norm.scores(q[i : i + 1], templates[ids])[0], rtol=1e-5, atol=1e-5)
        assert scores == sorted(scores, reverse=True)
        assert r.label == f"c{i}"  # each query is a noisy copy of its own class's template


def test_snorm_calibration_verify_and_thresholds(tmp_path, rng):
    g, templates, norm = snorm_gallery(tmp_path / "g.db", rng, classes=20)
    x, y = clustered(rng, 30, 5)
    with g:
        rec = g.calibrate(x, y, target_far=0.05, gallery_size=20)
        want = calibrate(x, y, 0.05, 20, score=snorm_score(norm))
        assert rec["identify_score"] == "snorm" and rec["cohort"] == {"size": 60, "k": 10}
        # (the gallery re-normalises the given embeddings: equal to float32 rounding)
        assert rec["verify_threshold"] == pytest.approx(want["verify_threshold"], rel=1e-5)
        assert rec["identify_threshold"] == pytest.approx(want["identify_threshold"], rel=1e-5)
        assert g.thresholds() == {"identify": rec["identify_threshold"], "verify": rec["verify_threshold"]}
        q = unit(templates[3] + 0.4 * rng.normal(size=D) / np.sqrt(D))
        v = g.verify(q, "c3")
        assert v.score == pytest.approx(float(norm.scores(q[None], templates[3:4])[0, 0]), abs=1e-5)
        assert v.accepted == (v.score >= rec["verify_threshold"])
        far = g.identify(unit(rng.normal(size=(200, D))), k=1)
        r = g.identify(q[None], k=1)[0]
        assert r.threshold == rec["identify_threshold"]
        assert all((res.label is None) == (res.score < res.threshold) for res in [*far, r])


def test_snorm_needs_a_cohort_and_refuses_bad_ones(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol_vectors(["a", "b"], unit(rng.normal(size=(2, D))))
        with pytest.raises(OneshotError, match="gallery cohort"):
            g.set_rejection_score("snorm")
        assert g.rejection_score == "template_cosine"
        with pytest.raises(OneshotError, match="at least 20"):
            g.set_cohort(unit(rng.normal(size=(5, D))))
        with pytest.raises(OneshotError, match="between 1 and the cohort's size 30"):
            g.set_cohort(unit(rng.normal(size=(30, D))), k=31)
        with pytest.raises(OneshotError, match="16"):
            g.set_cohort(unit(rng.normal(size=(30, D + 1))))
        assert g.info()["cohort"] is None


def test_switching_to_snorm_clears_cosine_thresholds_and_back(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol_vectors(["a", "b"], unit(rng.normal(size=(2, D))))
        g.set_threshold(identify=0.5, verify=0.6)
        g.set_cohort(unit(rng.normal(size=(40, D))), k=20)  # a cohort alone changes nothing on cosine
        assert g.thresholds() == {"identify": 0.5, "verify": 0.6}
        with pytest.warns(OneshotWarning, match="verify threshold too"):
            g.set_rejection_score("snorm")
        assert g.thresholds() == {"identify": None, "verify": None}
        with pytest.raises(OneshotError, match="no verify threshold"):
            g.verify(unit(rng.normal(size=D)), "a")
        g.set_threshold(identify=4.0, verify=2.5)  # S-norm values: outside the cosine range, accepted
        with pytest.warns(OneshotWarning, match="measured against the old cohort"):
            g.set_cohort(unit(rng.normal(size=(40, D))), k=20)
        assert g.thresholds() == {"identify": None, "verify": None}
        g.set_threshold(identify=4.0, verify=2.5)
        with pytest.warns(OneshotWarning, match="cleared"):
            g.set_rejection_score("template_cosine")
        assert g.thresholds() == {"identify": None, "verify": None}
        with pytest.raises(OneshotError, match="verify threshold"):
            g.set_threshold(verify=2.5)  # a cosine again


def test_cohort_survives_reopen_and_export_and_is_dropped_by_reembed(tmp_path, rng):
    enc_a = make_checkpoint(tmp_path / "a.safetensors", 0)
    imgs = (rng.random((26, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    files = write_pngs(tmp_path / "img", imgs)
    path = tmp_path / "g.db"
    with Gallery.open(path, encoder=enc_a) as g:
        g.enrol("x", files[:1])
        g.enrol("y", files[1:2])
        info = g.set_cohort(files[2:24], k=5, source="imgs")
        assert info["size"] == 22 and info["k"] == 5 and g.info()["cohort"] == info
        g.set_rejection_score("snorm")
        before = g.identify(files[24:], k=2)
    with Gallery.open(path) as g:
        assert g.identify(files[24:], k=2) == before
        g.export(tmp_path / "copy.db")
    with Gallery.open(tmp_path / "copy.db") as g:
        assert g.identify(files[24:], k=2) == before
        assert g.reembed(make_checkpoint(tmp_path / "b.safetensors", 1)) == 2
        assert g.info()["cohort"] is None and g.rejection_score == "snorm"
        with pytest.raises(OneshotError, match="no cohort"):
            g.identify(files[24:])
        g.set_cohort(files[2:24], k=5)
        assert g.identify(files[24:], k=2)[0].score_kind == "snorm"


def test_a_cohort_from_another_encoder_is_refused(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol_vectors(["a"], unit(rng.normal(size=(1, D))))
        g.set_cohort(unit(rng.normal(size=(30, D))), k=5)
        g.set_rejection_score("snorm")
        info = dict(g.store.get_meta("cohort"), fingerprint="0000000000000000")
        with g.store.write() as tx:
            tx.set_meta("cohort", info)
        with pytest.raises(OneshotError, match="another encoder"):
            g.identify(unit(rng.normal(size=(1, D))))


def test_cli_cohort_score_calibrate_identify(tmp_path, rng):
    from oneshot.cli import app

    enc = make_checkpoint(tmp_path / "a.safetensors", 0)
    imgs = (rng.random((40, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    cohort_dir = tmp_path / "cohort"
    write_pngs(cohort_dir / "one", imgs[:12])
    write_pngs(cohort_dir / "two", imgs[12:24])
    val = tmp_path / "val"
    for c in range(6):
        write_pngs(val / f"v{c}", imgs[24 + 2 * c : 26 + 2 * c])
    people = write_pngs(tmp_path / "people", imgs[36:])
    g = str(tmp_path / "g.db")
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runner.invoke(app, ["gallery", "create", g, "--encoder", str(enc), "--score", "snorm"])
        assert out.exit_code == 2 and "no cohort for snorm yet" in out.output and not (tmp_path / "g.db").exists()
        out = runner.invoke(app, ["gallery", "create", g, "--encoder", str(enc)])
        assert out.exit_code == 0, out.output
        for i, f in enumerate(people[:3]):
            assert runner.invoke(app, ["gallery", "enrol", g, f"p{i}", str(f)]).exit_code == 0
        out = runner.invoke(app, ["gallery", "score", g, "snorm"])
        assert out.exit_code != 0 and "gallery cohort" in out.output
        out = runner.invoke(app, ["gallery", "cohort", g, str(cohort_dir), "--k", "8"])
        assert out.exit_code == 0, out.output
        assert "24 examples" in out.output and "k = 8" in out.output
        assert runner.invoke(app, ["gallery", "score", g, "snorm"]).exit_code == 0
        out = runner.invoke(app, ["gallery", "calibrate", g, "--folder", str(val), "--far", "0.1"])
        assert out.exit_code == 0, out.output
        assert "snorm" in out.output
        out = runner.invoke(app, ["gallery", "identify", g, str(people[0]), "--json"])
        assert out.exit_code == 0, out.output
        assert '"score_kind": "snorm"' in out.output
        fam = tmp_path / "val_families"
        for c in range(8):
            write_pngs(fam / f"family{c // 4}" / f"class{c}", imgs[2 * c : 2 * c + 2])
        out = runner.invoke(app, ["gallery", "calibrate", g, "--folder", str(fam), "--far", "0.1", "--families", "--json"])
        assert out.exit_code == 0, out.output
        rec = json.loads(out.stdout)
        assert rec["families"]["count"] == 2 and rec["validation_classes"] == 8
        out = runner.invoke(app, ["gallery", "list", g])
        assert "cohort: 24 examples, k = 8" in out.output and "strangers within 2 families" in out.output, out.output
        out = runner.invoke(app, ["gallery", "calibrate", g, "--folder", str(val), "--far", "0.1", "--families"])
        assert out.exit_code == 2 and "holds no class folders" in out.output


def test_snorm_on_real_omniglot_with_the_background_cohort(tmp_path, omniglot_dir, vinyals_test):
    """The shipped encoder, a cohort of the 761 Lake training characters (CLI), S-norm identification of unseen
    characters against the brute-force S-norm ranking, and strangers mostly refused after calibration."""
    from oneshot.cli import app
    from oneshot.weights import LAKE_DEFAULT

    gal = str(tmp_path / "g.db")
    runner = CliRunner()
    assert runner.invoke(app, ["gallery", "create", gal, "--encoder", LAKE_DEFAULT]).exit_code == 0
    classes = np.arange(0, 1600, 40)  # unrotated test characters of many alphabets: 30 enrolled, 10 strangers
    members = [np.flatnonzero(vinyals_test.labels.numpy() == c) for c in classes]
    images = vinyals_test.images.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Gallery.open(gal) as g:
            for c, m in zip(classes[:30], members[:30], strict=True):
                g.enrol(f"char{c}", write_pngs(tmp_path / f"e{c}", images[m[:1]]), check=False)
        out = runner.invoke(app, ["gallery", "cohort", gal, "--omniglot", "lake-background", "--data-dir", str(omniglot_dir)])
        assert out.exit_code == 0, out.output
        assert "761 examples, k = 200" in out.output
        assert runner.invoke(app, ["gallery", "score", gal, "snorm"]).exit_code == 0
        args = ["gallery", "calibrate", gal, "--omniglot", "lake-val", "--data-dir", str(omniglot_dir), "--far", "0.05"]
        out = runner.invoke(app, [*args, "--trials", "3", "--families", "--json"])
        assert out.exit_code == 0, out.output
        within = json.loads(out.stdout)
        assert within["families"] == {"count": 5, "simulated_in": 3}  # G = 21 (half the median 43): 3 alphabets have 42+
        out = runner.invoke(app, [*args, "--trials", "3", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["identify_threshold"] < within["identify_threshold"]
        with Gallery.open(gal) as g:
            genuine = g.embed(write_pngs(tmp_path / "q", images[np.concatenate([m[1:4] for m in members[:30]])]))
            strangers = g.embed(write_pngs(tmp_path / "s", images[np.concatenate(members[30:])]))
            got = g.identify(genuine, k=1)
            _, templates = g.store.all_templates(g.dim)
            full = g.cohort_norm().scores(genuine, templates)  # classes in enrolment order
            assert [r.candidates[0].label for r in got] == [f"char{classes[j]}" for j in full.argmax(1)]
            truth = np.repeat(classes[:30], 3)
            assert np.mean([r.candidates[0].label == f"char{t}" for r, t in zip(got, truth, strict=True)]) >= 0.8
            accepted = np.mean([r.label == f"char{t}" for r, t in zip(got, truth, strict=True)])
            let_in = np.mean([r.label is not None for r in g.identify(strangers, k=1)])
            assert let_in <= 0.2 and accepted > let_in + 0.2, (accepted, let_in)
