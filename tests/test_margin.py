"""The margin method (ArcFace / CosFace): the loss against a brute-force reference, and real training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from oneshot.encoders import build_encoder
from oneshot.errors import OneshotError
from oneshot.methods import METHODS, build_method
from oneshot.methods.margin import margin_logits


def reference_loss(cos: torch.Tensor, target: torch.Tensor, kind: str, m: float, s: float) -> float:
    """Row by row with math: -log softmax of the margin-penalised target (ArcFace with its fall-back)."""
    total = 0.0
    for i in range(cos.shape[0]):
        row = [s * float(c) for c in cos[i]]
        y = int(target[i])
        c = float(cos[i, y])
        if kind == "cosface":
            row[y] = s * (c - m)
        else:
            theta = math.acos(max(-1.0, min(1.0, c)))
            row[y] = s * (math.cos(theta + m) if theta + m < math.pi else c - m * math.sin(m))
        top = max(row)
        total += -(row[y] - top - math.log(sum(math.exp(v - top) for v in row)))
    return total / cos.shape[0]


@pytest.mark.parametrize("kind,m", [("arcface", 0.5), ("arcface", 0.3), ("cosface", 0.35)])
def test_margin_loss_matches_brute_force(kind, m):
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    w = F.normalize(torch.randn(12, 16, generator=g), dim=1)
    cos = z @ w.T
    cos[0, 3] = -0.999  # far past pi - m: the fall-back branch
    target = torch.randint(0, 12, (40,), generator=g)
    target[0] = 3
    got = F.cross_entropy(margin_logits(cos, target, kind, m, 30.0), target).item()
    assert got == pytest.approx(reference_loss(cos, target, kind, m, 30.0), rel=1e-5)
    plain = F.cross_entropy(30.0 * cos, target).item()
    assert got > plain  # the margin only ever makes the target harder


def test_zero_margin_is_plain_normalised_softmax():
    cos = torch.tensor([[0.2, 0.9, -0.4], [0.5, 0.1, 0.0]])
    target = torch.tensor([1, 0])
    for kind in ("arcface", "cosface"):
        assert torch.allclose(margin_logits(cos, target, kind, 0.0, 10.0), 10.0 * cos, atol=1e-6)


def test_margin_method_is_registered_and_checks_options():
    assert METHODS["margin"].name == "margin"
    enc = build_encoder("conv4")
    with pytest.raises(OneshotError, match="margin_type"):
        build_method("margin", enc, num_classes=10, margin_type="sphereface")
    with pytest.raises(OneshotError, match="num_classes"):
        build_method("margin", enc)
    with pytest.raises(OneshotError, match="margin"):
        build_method("margin", enc, num_classes=10, margin=2.0)


@pytest.mark.slow
def test_margin_method_learns_on_omniglot(vinyals_train, small_val, tmp_path):
    """60 ArcFace episodes on 50 base classes lift 5-way 1-shot validation well above chance."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.data import ImageSet
    from oneshot.training import TrainConfig, train

    torch.manual_seed(0)
    keep = vinyals_train.labels < 50
    data = ImageSet(vinyals_train.images[keep], vinyals_train.labels[keep], vinyals_train.class_names[:50])
    model = build_method("margin", build_encoder("conv4"), **METHODS["margin"].options_for_data(data), margin_type="arcface")
    cfg = TrainConfig(
        episodes=60,
        ways=10,
        shots=1,
        queries=5,
        lr=1e-3,
        eval_every=60,
        val_ways=5,
        val_shots=1,
        val_queries=5,
        val_episodes=40,
        device="cpu",
    )
    keep = small_val.labels < 60
    val = ImageSet(small_val.images[keep], small_val.labels[keep], small_val.class_names[:60])
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": True},
    }
    res = train(model, data, val, cfg, tmp_path / "margin.safetensors", meta)
    assert res.best_val_accuracy > 0.6, res.history  # 5-way chance is 20%
    ck = load_checkpoint(res.checkpoint)
    assert ck.metadata["method"] == "margin" and ck.method.options() == model.options()
    x = val.images[:4].float()
    z = ck.method.embed(x)
    assert z.shape == (4, 64) and torch.isfinite(z).all()
