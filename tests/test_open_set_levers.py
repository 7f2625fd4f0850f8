"""Open-set levers (issue 16): cohort score normalisation against a loop reference; calibration options."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_util import unit

from oneshot.errors import OneshotError
from oneshot.gallery.calibration import calibrate
from oneshot.gallery.normalise import CohortNorm


def test_snorm_and_cohort_mean_match_a_loop():
    rng = np.random.default_rng(0)
    cohort, q, t = unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(4, 8)))
    k = 7

    def top(v):
        s = sorted((float(v @ c) for c in cohort), reverse=True)[:k]
        return np.mean(s), np.std(s)

    for kind in ("snorm", "cohort_mean"):
        got = CohortNorm(cohort, kind, k).scores(q, t)
        for i in range(5):
            for j in range(4):
                s = float(q[i] @ t[j])
                (mq, sq), (mt, st) = top(q[i]), top(t[j])
                want = 0.5 * ((s - mq) / sq + (s - mt) / st) if kind == "snorm" else s - 0.5 * (mq + mt)
                assert got[i, j] == pytest.approx(want, abs=1e-5)
    assert np.allclose(CohortNorm(cohort, "none").scores(q, t), q @ t.T)
    with pytest.raises(ValueError):
        CohortNorm(cohort, "znorm")


def test_snorm_discounts_a_hub_stranger():
    """A query close to many cohort members (a 'hub') loses more score than an isolated one."""
    rng = np.random.default_rng(1)
    centre = unit(rng.normal(size=(1, 16)))[0]
    cohort = unit(np.vstack([centre + 0.3 * rng.normal(size=(40, 16)), rng.normal(size=(40, 16))]))
    template = unit(rng.normal(size=(1, 16)))
    hub = unit((centre + 0.2 * template[0])[None])
    lone = unit(rng.normal(size=(1, 16)))
    norm = CohortNorm(cohort, "cohort_mean", 10)
    raw_gap = float((hub @ template.T - lone @ template.T)[0, 0])
    assert float((norm.scores(hub, template) - norm.scores(lone, template))[0, 0]) < raw_gap


def test_calibrate_with_score_function_and_identify_method():
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(40, 16)))
    x = unit(np.repeat(centres, 6, 0) + 0.4 * rng.normal(size=(240, 16)))
    y = np.repeat(np.arange(40), 6)
    plain = calibrate(x, y, 0.05, 10)
    same = calibrate(x, y, 0.05, 10, score=lambda a, b: a @ b.T)
    assert plain["identify_threshold"] == same["identify_threshold"] and plain["verify_threshold"] == same["verify_threshold"]
    assert plain["identify_method"] == "simulated"
    ext = calibrate(x, y, 0.05, 10, identify_method="extrapolated")
    assert ext["identify_method"] == "extrapolated" and ext["verify_threshold"] == plain["verify_threshold"]
    assert ext["identify_threshold"] != plain["identify_threshold"]
    with pytest.raises(OneshotError, match="identify calibration"):
        calibrate(x, y, 0.05, 10, identify_method="guess")


def _families(rng, n_fam: int = 4, per_fam: int = 12, per_class: int = 5, d: int = 16):
    """Unit embeddings whose classes sit close to their family's centre: siblings score higher than strangers."""
    fam_c = unit(rng.normal(size=(n_fam, d)))
    cls_c = unit(np.repeat(fam_c, per_fam, 0) + 0.6 * rng.normal(size=(n_fam * per_fam, d)) / np.sqrt(d))
    x = unit(np.repeat(cls_c, per_class, 0) + 0.5 * rng.normal(size=(n_fam * per_fam * per_class, d)) / np.sqrt(d))
    y = np.repeat(np.arange(n_fam * per_fam), per_class)
    return x, y, y // per_fam


def test_family_calibration_draws_impostors_and_strangers_within_families():
    rng = np.random.default_rng(3)
    x, y, fam = _families(rng)
    plain = calibrate(x, y, 0.05, 6)
    within = calibrate(x, y, 0.05, 6, groups=fam)
    assert plain["families"] is None and within["families"] == {"count": 4, "simulated_in": 4}
    # Sibling impostors score higher: thresholds that hold against them are higher.
    assert within["verify_threshold"] > plain["verify_threshold"]
    assert within["identify_threshold"] > plain["identify_threshold"]
    # The verify threshold is the within-family impostor quantile, by brute force over the same templates.
    rng2 = np.random.default_rng(0)
    classes = np.unique(y)
    picks = np.array([rng2.choice(np.flatnonzero(y == c)) for c in classes])
    q = np.setdiff1d(np.arange(len(y)), picks)
    imp = [float(x[i] @ x[picks[c]]) for i in q for c in classes if c != y[i] and fam[picks[c]] == fam[i]]
    from oneshot.gallery.calibration import threshold_for_far

    assert within["verify_threshold"] == pytest.approx(threshold_for_far(np.array(imp), 0.05), abs=1e-6)
    assert within["scores"]["impostor"]["count"] == len(imp)
    # The simulated galleries hold half a family (median 12 classes -> G = 6) and are within one family.
    assert within["simulated_gallery_size"] == 6 and within["identify_method"] == "simulated"
    big = calibrate(x, y, 0.05, 40, groups=fam)
    assert big["identify_method"] == "extrapolated"


def test_family_calibration_refuses_bad_groups():
    rng = np.random.default_rng(4)
    x, y, fam = _families(rng, n_fam=2, per_fam=6)
    with pytest.raises(OneshotError, match="one family per example"):
        calibrate(x, y, 0.05, 4, groups=fam[:-1])
    split = fam.copy()
    split[0] = 1 - split[0]  # class 0's first example in the other family
    with pytest.raises(OneshotError, match="families: give each class one family"):
        calibrate(x, y, 0.05, 4, groups=split)
