"""Thresholds with confidence (``calibrate(confidence=...)``): the exceedance count against an exact binomial
sum, the thresholds it gives, the refusal when too few comparisons, and the CLI."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from test_gallery_enrolment_impostors import clustered, enrol_clusters
from typer.testing import CliRunner

from oneshot.errors import OneshotError
from oneshot.gallery import Gallery
from oneshot.gallery.calibration import allowed_exceedances, calibrate, threshold_for_far

D = 16


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    """P(X <= k) for X ~ Binomial(n, p), in exact rational arithmetic."""
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


@pytest.mark.parametrize(
    ("n", "target", "confidence"), [(400, 0.05, 0.95), (1000, 0.02, 0.9), (250, 0.1, 0.99), (3000, 0.01, 0.5)]
)
def test_allowed_exceedances_is_the_largest_count_the_bound_allows(n, target, confidence):
    k = allowed_exceedances(n, target, confidence)
    p, alpha = Fraction(target), 1 - Fraction(confidence)
    assert exact_cdf(k, n, p) <= alpha < exact_cdf(k + 1, n, p)
    assert k < math.floor(target * n) or confidence == 0.5  # stricter than the plain count
    assert allowed_exceedances(n, target) == math.floor(target * n)


def test_too_few_comparisons_for_the_confidence_is_refused():
    # 0 exceedances in n: (1 - 0.01)^n <= 0.05 needs n >= 299
    assert allowed_exceedances(299, 0.01, 0.95) == 0
    with pytest.raises(OneshotError, match=r"298 impostor comparisons cannot show .* at least 299"):
        allowed_exceedances(298, 0.01, 0.95)
    with pytest.raises(OneshotError, match="confidence 1.0 must be"):
        allowed_exceedances(1000, 0.01, 1.0)


def test_threshold_with_confidence_admits_that_many_impostors(rng=np.random.default_rng(5)):
    imp = rng.normal(size=5000)
    k = allowed_exceedances(5000, 0.02, 0.95)
    t = threshold_for_far(imp, 0.02, confidence=0.95)
    assert np.sum(imp >= t) == k < np.sum(imp >= threshold_for_far(imp, 0.02)) == 100
    # only the largest scores given, with the total: the same threshold
    assert threshold_for_far(np.sort(imp)[::-1][: k + 1], 0.02, total=5000, confidence=0.95) == t


def test_calibrate_with_confidence_is_stricter_and_recorded(tmp_path):
    rng = np.random.default_rng(3)
    x, y = clustered(rng, 60, 5)
    plain, sure = calibrate(x, y, 0.02, 20), calibrate(x, y, 0.02, 20, confidence=0.95)
    assert plain["confidence"] is None and sure["confidence"] == 0.95
    assert sure["verify_threshold"] > plain["verify_threshold"] and sure["identify_threshold"] >= plain["identify_threshold"]
    assert sure["measured"]["verify_far"] < plain["measured"]["verify_far"] <= 0.02
    with Gallery.open(tmp_path / "g.db", dim=D) as g:
        enrol_clusters(g, rng, 40)  # 3081 impostor comparisons among the enrolments
        rec = g.calibrate(x, y, target_far=0.02, verify_from="enrolments", confidence=0.95)
        assert rec["confidence"] == 0.95 and g.info()["calibration"]["confidence"] == 0.95
        own = rec["verify_source"]
        assert own["measured_far"] * own["comparisons"] == pytest.approx(allowed_exceedances(3081, 0.02, 0.95))
        before = g.thresholds()
        with pytest.raises(OneshotError, match="cannot show a false-accept rate"):
            g.calibrate(x, y, target_far=1e-4, verify_from="validation", confidence=0.99)
        assert g.thresholds() == before  # a refused calibration changes nothing


def test_cli_calibrate_with_confidence(tmp_path):
    from gallery_util import make_checkpoint, write_pngs

    from oneshot.cli import app

    rng = np.random.default_rng(4)
    enc = make_checkpoint(tmp_path / "a.safetensors", 0)
    imgs = (rng.random((60, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    val = tmp_path / "val"
    for c in range(20):
        write_pngs(val / f"v{c}", imgs[3 * c : 3 * c + 3])
    gal = str(tmp_path / "g.db")
    runner = CliRunner()
    assert runner.invoke(app, ["gallery", "create", gal, "--encoder", str(enc)]).exit_code == 0
    args = ["gallery", "calibrate", gal, "--folder", str(val), "--far", "0.1", "--gallery-size", "5"]
    out = runner.invoke(app, [*args, "--confidence", "0.9"])
    assert out.exit_code == 0, out.output
    assert "at most 0.1 with confidence 0.9" in out.output
    rec = json.loads(runner.invoke(app, [*args, "--confidence", "0.9", "--json"]).stdout)
    assert rec["confidence"] == 0.9 and rec["measured"]["verify_far"] <= 0.1
    listed = runner.invoke(app, ["gallery", "list", gal])
    assert listed.exit_code == 0 and "calibrated for FAR 0.1 with confidence 0.9 on 20 validation classes" in listed.output
    out = runner.invoke(app, [*args, "--confidence", "1.5"])
    assert out.exit_code == 2 and "--confidence" in out.output, out.output


def test_an_identify_threshold_out_of_reach_names_itself():
    rng = np.random.default_rng(6)
    x, y = clustered(rng, 30, 4)  # 30 x 3 x 29 = 2610 impostor pairs
    calibrate(x, y, 0.05, 1000, identify_method="extrapolated")  # a plain calibration still sets it
    # a 1000-class gallery at 5%: 5.1e-5 per comparison, beyond 2610 pairs at 95% confidence
    with pytest.raises(
        OneshotError, match=r"identify threshold for a gallery of 1000 classes \(extrapolated to a per-comparison"
    ):
        calibrate(x, y, 0.05, 1000, identify_method="extrapolated", confidence=0.95)
