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
