"""Verification metrics against hand-computed ROC points, and the verification path on a synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oneshot.data import ImageSet
from oneshot.encoders import Conv4
from oneshot.errors import OneshotError
from oneshot.methods import MatchingNet, ProtoNet, Siamese
from oneshot.verification import (
    auc,
    equal_error_rate,
    evaluate_verification,
    metrics,
    plot_det,
    plot_roc,
    roc_curve,
    sample_pairs,
    tar_at_far,
)


def test_roc_points_by_hand():
    # Sorted by score: same, same, diff, same, diff, diff (3 same, 3 different pairs).
    scores = np.array([0.6, 0.9, 0.4, 0.7, 0.8, 0.5])
    same = np.array([True, True, False, False, True, False])
    far, tar, thr = roc_curve(scores, same)
    # Accept score >= t for t = inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4:
    assert np.allclose(far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert np.allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert np.allclose(thr[1:], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) and thr[0] == np.inf
    # Area: 2/3 * 1/3 + 1 * 2/3 = 8/9 = P(score of a same pair > score of a different pair).
    assert auc(far, tar) == pytest.approx(8 / 9)
    # At t = 0.7 one of 3 different pairs is accepted and one of 3 same pairs rejected: EER = 1/3.
    assert equal_error_rate(far, tar) == pytest.approx(1 / 3)
    assert tar_at_far(far, tar, 0.0) == pytest.approx(2 / 3)
    assert tar_at_far(far, tar, 0.01) == pytest.approx(2 / 3)
    assert tar_at_far(far, tar, 0.34) == pytest.approx(1.0)


def test_ties_make_one_point_and_eer_interpolates():
    far, tar, _ = roc_curve(np.array([1.0, 1.0, 0.0, 0.0]), np.array([True, False, True, False]))
    assert np.allclose(far, [0, 0.5, 1]) and np.allclose(tar, [0, 0.5, 1])
    assert auc(far, tar) == pytest.approx(0.5)
    assert equal_error_rate(far, tar) == pytest.approx(0.5)
    # Points (FAR, FRR): (0, 1), (0, .5), (1, .5), (1, 0): FAR - FRR crosses 0 halfway along the middle segment.
    far, tar, _ = roc_curve(np.array([3.0, 2.0, 1.0]), np.array([True, False, True]))
    assert np.allclose(far, [0, 0, 1, 1]) and np.allclose(tar, [0, 0.5, 0.5, 1])
    assert equal_error_rate(far, tar) == pytest.approx(0.5)
    # Perfect separation: EER 0, AUC 1, TAR 1 at any FAR.
    res = metrics(np.array([5.0, 4.0, 1.0, 0.0]), np.array([True, True, False, False]))
    assert (res.eer, res.auc, res.tar_at_far_1e3) == (0.0, 1.0, 1.0)


def test_auc_equals_mann_whitney_on_random_scores():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)  # rounding makes ties
    same = rng.random(300) < 0.4
    far, tar, _ = roc_curve(scores, same)
    pos, neg = scores[same], scores[~same]
    u = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auc(far, tar) == pytest.approx(u)
    # TAR at FAR: the best true-accept rate among thresholds with few enough false accepts, by brute force.
    for target in (0.01, 0.1, 0.5):
        best = max(float((pos >= t).mean()) for t in np.r_[np.inf, scores] if (neg >= t).mean() <= target)
        assert tar_at_far(far, tar, target) == pytest.approx(best)


def test_sample_pairs_are_balanced_seeded_and_correct():
    labels = np.repeat(np.arange(10), 4)
    class_indices = [np.flatnonzero(labels == c) for c in range(10)]
    a, b, same = sample_pairs(class_indices, 501, seed=3)
    assert same.sum() == 250 and (~same).sum() == 251
    assert np.array_equal(labels[a] == labels[b], same) and (a != b).all()
    a2, b2, _ = sample_pairs(class_indices, 501, seed=3)
    a3, _, _ = sample_pairs(class_indices, 501, seed=4)
    assert np.array_equal(a, a2) and np.array_equal(b, b2) and not np.array_equal(a, a3)
    with pytest.raises(OneshotError):
        roc_curve(np.array([1.0, 2.0]), np.array([True, True]))


def synthetic_set(n_classes=8, per_class=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 40, (n_classes * per_class, 1, 28, 28), generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    for i, c in enumerate(labels.tolist()):
        r, k = divmod(c, 4)
        imgs[i, 0, 7 * r : 7 * r + 7, 7 * k : 7 * k + 7] = 255
    return ImageSet(imgs.to(torch.uint8), labels, [f"c{c}" for c in range(n_classes)])


def test_verification_of_models_and_plots(tmp_path):
    torch.manual_seed(0)
    data = synthetic_set()
    proto = ProtoNet(Conv4())
    res = evaluate_verification(proto, data, pairs=400, seed=1)
    assert res.similarity == "auto" and res.pairs == 400
    assert res.auc > 0.9 and res.eer < 0.2  # an untrained Conv-4 already separates these classes
    again = evaluate_verification(proto, data, pairs=400, seed=1)
    assert again.summary() == res.summary()
    cos = evaluate_verification(proto, data, pairs=400, seed=1, similarity="cosine")
    assert cos.similarity == "cosine"
    # Siamese uses its own learned pair score; matching networks cosine.
    siamese = Siamese(Conv4())
    z = torch.randn(6, 64)
    assert torch.allclose(siamese.pair_score(z[:3], z[3:]), siamese.pair_logits(z[:3], z[3:]))
    assert torch.allclose(MatchingNet(Conv4()).pair_score(z[:3], z[3:]), torch.nn.functional.cosine_similarity(z[:3], z[3:]))
    with pytest.raises(OneshotError, match="similarity"):
        evaluate_verification(proto, data, pairs=10, similarity="euclid")
    roc, det = plot_roc(res, tmp_path / "roc.png"), plot_det(res, tmp_path / "det.png")
    assert roc.stat().st_size > 1000 and det.stat().st_size > 1000


def test_cli_evaluate_reports_verification_and_writes_curves(tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from oneshot.checkpoint import save_checkpoint
    from oneshot.cli import app

    data = synthetic_set(n_classes=6, per_class=4)
    root = tmp_path / "classes"
    for i, (img, label) in enumerate(zip(data.images, data.labels.tolist())):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(root / f"c{label}" / f"{i}.png")
    torch.manual_seed(0)
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": False},
        "data": {"dataset": f"folder:{root}", "split": "folder"},
    }
    ck = save_checkpoint(tmp_path / "siamese.safetensors", Siamese(Conv4()), meta)
    roc, det = tmp_path / "roc.png", tmp_path / "det.png"

    def evaluate(episodes: int, *extra: str):
        args = ["evaluate", "--checkpoint", str(ck), "--ways", "3", "--queries", "2", "--episodes", str(episodes)]
        return CliRunner().invoke(app, [*args, "--device", "cpu", *extra])

    out = evaluate(5, "--pairs", "200", "--roc-png", str(roc), "--det-png", str(det), "--json")
    assert out.exit_code == 0, out.output
    obj = json.loads(out.stdout.strip().splitlines()[-1])
    v = obj["verification"]
    assert v["pairs"] == 200 and 0 <= v["eer"] <= 1 and 0 <= v["auc"] <= 1 and "tar_at_far_1e-3" in v
    assert roc.is_file() and det.is_file()
    bad = evaluate(2, "--verification", "--similarity", "l1")
    assert bad.exit_code == 2 and "unknown similarity 'l1'" in bad.output
