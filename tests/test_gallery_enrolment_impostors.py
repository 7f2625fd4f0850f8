"""The verify threshold from the gallery's own enrolments (``calibrate(verify_from="enrolments")``): against a
brute-force loop over ``Gallery.verify``, its refusal for galleries too small for the rate, S-norm, the CLI,
and on real Omniglot with the shipped encoder."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from gallery_util import make_checkpoint, unit, write_pngs
from typer.testing import CliRunner

from oneshot.data import load_omniglot
from oneshot.errors import OneshotError
from oneshot.gallery import Gallery
from oneshot.gallery.calibration import calibrate
from oneshot.gallery.enrolment_impostors import MIN_EXCEEDANCES, impostor_scores
from oneshot.gallery.normalise import CohortNorm

D = 16


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def clustered(rng: np.random.Generator, classes: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (classes * per, D) around random class centres, and their labels (classes * per,)."""
    centres = unit(rng.normal(size=(classes, D)))
    return unit(np.repeat(centres, per, 0) + 0.5 * rng.normal(size=(classes * per, D)) / np.sqrt(D)), np.repeat(
        np.arange(classes), per
    )


def enrol_clusters(g: Gallery, rng: np.random.Generator, classes: int) -> dict[str, np.ndarray]:
    """Enrol ``classes`` classes of 1 to 3 examples each; returns each label's examples (n, D)."""
    x, y = clustered(rng, classes, 3)
    enrolled = {f"c{c}": x[y == c][: 1 + c % 3] for c in range(classes)}
    for label, ex in enrolled.items():
        g.enrol(label, ex, check=False)
    return enrolled


def brute_force_impostors(g: Gallery, enrolled: dict[str, np.ndarray]) -> np.ndarray:
    """Every enrolled example verified as every other class, one ``Gallery.verify`` call each."""
    g.set_threshold(verify=0.0)  # verify needs a threshold to answer; the scores do not depend on it
    return np.array(
        [g.verify(e, other).score for label, ex in enrolled.items() for e in ex for other in enrolled if other != label]
    )


def test_enrolment_threshold_equals_the_brute_force_rate(tmp_path, rng):
    far = 0.02
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        enrolled = enrol_clusters(g, rng, 40)  # 79 examples x 39 other classes = 3081 comparisons: 61 allowed
        impostors = brute_force_impostors(g, enrolled)
        x, y = clustered(rng, 30, 5)
        rec = g.calibrate(x, y, target_far=far, gallery_size=40, verify_from="enrolments")
        t = rec["verify_threshold"]
        allowed = math.floor(far * len(impostors))
        assert rec["verify_source"]["comparisons"] == len(impostors) == 79 * 39
        assert rec["verify_source"]["classes"] == 40 and rec["verify_source"]["examples"] == 79
        assert np.sum(impostors >= t) <= allowed < np.sum(impostors >= np.nextafter(np.float32(t), np.float32(-1)))
        assert rec["verify_source"]["measured_far"] == pytest.approx(np.mean(impostors >= t))
        assert g.thresholds()["verify"] == t
        # the identify threshold and the validation rates: validation's, measured at the threshold in use
        want = calibrate(x, y, far, 40, shots=rec["shots"], verify_threshold=t)  # the gallery's median 2 examples
        assert rec["identify_threshold"] == pytest.approx(want["identify_threshold"], rel=1e-5)
        assert rec["measured"]["verify_far"] == pytest.approx(want["measured"]["verify_far"], abs=1e-6)
        assert rec["validation_verify_threshold"] == pytest.approx(
            calibrate(x, y, far, 40, shots=2)["verify_threshold"], rel=1e-5
        )
        assert any("own 3081 impostor comparisons" in n for n in rec["notes"])
        assert g.info()["calibration"]["verify_source"]["source"] == "enrolments"
        # scored a few examples at a time (classes split across chunks): the same scores and counts
        cosine = lambda a, b: a @ b.T  # noqa: E731
        whole, small = impostor_scores(g.store, D, cosine, 100), impostor_scores(g.store, D, cosine, 100, chunk=7)
        np.testing.assert_allclose(whole[0], small[0], rtol=1e-6)
        np.testing.assert_allclose(whole[0], np.sort(impostors)[::-1][:100], rtol=1e-5)
        assert whole[1:] == small[1:] == (3081, 40, 79)


def test_validation_stays_the_default_and_is_recorded(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        enrol_clusters(g, rng, 40)
        x, y = clustered(rng, 30, 5)
        rec = g.calibrate(x, y, target_far=0.02)
        assert rec["verify_source"] == {"source": "validation"}
        assert rec["verify_threshold"] == rec["validation_verify_threshold"]
        with pytest.raises(OneshotError, match="unknown verify threshold source 'gallery'"):
            g.calibrate(x, y, target_far=0.02, verify_from="gallery")


def test_a_gallery_too_small_for_the_rate_is_refused_and_keeps_its_thresholds(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        g.enrol_vectors([f"c{i}" for i in range(20)], unit(rng.normal(size=(20, D))))  # 380 comparisons
        x, y = clustered(rng, 30, 5)
        before = g.calibrate(x, y, target_far=0.05)  # 19 allowed at 0.05: one short of MIN_EXCEEDANCES
        assert math.floor(0.05 * 380) < MIN_EXCEEDANCES
        with pytest.raises(OneshotError, match=r"380 impostor comparisons.*needs 20 \(about 21 classes"):
            g.calibrate(x, y, target_far=0.05, verify_from="enrolments")
        assert g.thresholds() == {"identify": before["identify_threshold"], "verify": before["verify_threshold"]}
        g.enrol_vectors(["c20"], unit(rng.normal(size=(1, D))))  # 21 classes: 420 comparisons, 21 allowed
        assert g.calibrate(x, y, target_far=0.05, verify_from="enrolments")["verify_source"]["comparisons"] == 420


def test_enrolment_threshold_under_snorm_is_on_s_norm(tmp_path, rng):
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        enrolled = enrol_clusters(g, rng, 40)
        cohort = unit(rng.normal(size=(60, D)))
        g.set_cohort(cohort, k=10)
        g.set_rejection_score("snorm")
        impostors = brute_force_impostors(g, enrolled)
        _, templates = g.store.all_templates(D)
        norm = CohortNorm(cohort, "snorm", 10)
        first = enrolled["c0"][:1]  # one brute-force score checked against S-norm by hand
        np.testing.assert_allclose(impostors[0], norm.scores(first, templates[1:2])[0, 0], rtol=1e-5)
        x, y = clustered(rng, 30, 5)
        rec = g.calibrate(x, y, target_far=0.02, verify_from="enrolments")
        # (one query at a time and a batch round S-norm differently in float32: a tie at the threshold may fall either way)
        assert np.sum(impostors >= rec["verify_threshold"] + 1e-5) <= math.floor(0.02 * len(impostors))
        assert np.sum(impostors >= rec["verify_threshold"] - 1e-5) > math.floor(0.02 * len(impostors))
        assert rec["verify_threshold"] > 1.0  # S-norm units (a cosine threshold would be below 1)


def test_cli_verify_from_enrolments(tmp_path, rng):
    from oneshot.cli import app

    enc = make_checkpoint(tmp_path / "a.safetensors", 0)
    imgs = (rng.random((37, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    val = tmp_path / "val"
    for c in range(6):
        write_pngs(val / f"v{c}", imgs[2 * c : 2 * c + 2])
    gal = str(tmp_path / "g.db")
    runner = CliRunner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert runner.invoke(app, ["gallery", "create", gal, "--encoder", str(enc)]).exit_code == 0
        with Gallery.open(gal) as g:
            for i, f in enumerate(write_pngs(tmp_path / "people", imgs[12:])):
                g.enrol(f"p{i}", [f], check=False)  # 25 classes: 600 comparisons
        args = ["gallery", "calibrate", gal, "--folder", str(val)]
        out = runner.invoke(app, [*args, "--far", "0.05", "--verify-from", "enrolments"])
        assert out.exit_code == 0, out.output
        assert "from the gallery's 600 impostor comparisons" in out.output and "measured on validation" in out.output
        out = runner.invoke(app, ["gallery", "list", gal])
        assert "verify threshold from the gallery's own enrolments" in out.output, out.output
        before = runner.invoke(app, ["gallery", "list", gal, "--json"]).stdout
        out = runner.invoke(app, [*args, "--far", "0.01", "--verify-from", "enrolments"])  # 6 allowed
        assert out.exit_code == 2 and "600 impostor comparisons, 6 of them" in out.output, out.output
        out = runner.invoke(app, [*args, "--far", "0.05", "--verify-from", "nowhere"])
        assert out.exit_code == 2 and "unknown verify threshold source 'nowhere'" in out.output, out.output
        assert runner.invoke(app, ["gallery", "list", gal, "--json"]).stdout == before  # nothing changed


def test_on_real_omniglot_the_enrolment_threshold_holds_for_strangers(tmp_path, rng, omniglot_dir):
    """100 unseen characters enrolled from one drawing each with the shipped Lake encoder, the verify threshold
    set from their 9,900 comparisons at FAR 2e-2: 100 other characters' drawings, verified as each enrolled one,
    are let in near that rate, and it admits more owners than the validation-only threshold does."""
    from oneshot.cli import app
    from oneshot.weights import LAKE_DEFAULT

    gal = str(tmp_path / "g.db")
    runner = CliRunner()
    assert runner.invoke(app, ["gallery", "create", gal, "--encoder", LAKE_DEFAULT]).exit_code == 0
    with Gallery.open(gal) as g:  # the drawings decoded at the encoder's own input size
        test = load_omniglot("vinyals", "test", g.encoder.preprocessing.size, omniglot_dir)  # type: ignore[attr-defined]
    labels = test.labels.numpy()
    chars = np.arange(0, 1600, 8)  # 200 unrotated test characters of every test alphabet
    rng.shuffle(chars)
    members = [np.flatnonzero(labels == c) for c in chars]
    images = test.images.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Gallery.open(gal) as g:
            z = {c: unit(g.encoder.embed_images(images[m])) for c, m in zip(chars, members, strict=True)}  # type: ignore[attr-defined]
            for c in chars[:100]:
                g.enrol(f"char{c}", z[c][:1], check=False)
        args = ["gallery", "calibrate", gal, "--omniglot", "lake-val", "--data-dir", str(omniglot_dir), "--far", "0.02"]
        out = runner.invoke(app, [*args, "--trials", "2", "--verify-from", "enrolments"])
        assert out.exit_code == 0, out.output
        assert "from the gallery's 9900 impostor comparisons" in out.output, out.output
        out = runner.invoke(app, [*args, "--trials", "2", "--verify-from", "enrolments", "--json"])
        rec = json.loads(out.stdout)
        with Gallery.open(gal) as g:
            _, templates = g.store.all_templates(g.dim)  # enrolment order = chars[:100]
        strangers = np.concatenate([z[c] for c in chars[100:]]) @ templates.T  # (2000, 100) impostor pairs
        genuine = np.array([z[c][1:] @ templates[j] for j, c in enumerate(chars[:100])]).ravel()
        t, t_val = rec["verify_threshold"], rec["validation_verify_threshold"]
        far = float(np.mean(strangers >= t))
        assert 0.01 <= far <= 0.035, (far, t, t_val)  # the target is 0.02: the gallery's own pairs predict the strangers'
        # validation's alphabets hold more siblings than this varied gallery: its threshold turns owners away
        assert t < t_val and np.mean(genuine >= t) > np.mean(genuine >= t_val)
