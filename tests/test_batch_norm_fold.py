"""Folding the first convolution + training-mode batch norm (oneshot.encoders.batch_norm_fold) against the pair."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from oneshot.encoders import Conv4
from oneshot.encoders.batch_norm_fold import foldable, folded_conv_bn, patch_moments
from oneshot.methods import build_method
from oneshot.runtime import resolve_fold_batch_norm, set_batch_norm_folding


def _pair(in_channels: int, momentum: float | None, seed: int = 0) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_channels, 8, kernel_size=3, padding=1).double()
    bn = nn.BatchNorm2d(8, momentum=momentum).double()
    with torch.no_grad():  # away from the initial gamma = 1, beta = 0; one gamma negative
        bn.weight.uniform_(0.5, 2.0)
        bn.weight[0] = -0.7
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return conv, bn


def test_patch_moments_match_unfold() -> None:
    """Mean and covariance of the patches against torch's own im2col (``nn.functional.unfold``)."""
    x = torch.rand(5, 2, 7, 6)
    mean, cov, n = patch_moments(x, (3, 3), (1, 1))
    cols = nn.functional.unfold(x.double(), 3, padding=1)  # (B, C*9, H*W), weight.flatten(1)'s order
    p = cols.transpose(1, 2).reshape(-1, 18)
    assert n == p.shape[0] == 5 * 7 * 6
    torch.testing.assert_close(mean.double(), p.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(cov.double(), torch.cov(p.T, correction=0), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("in_channels", "momentum"), [(1, 0.1), (3, None)])
def test_folded_equals_conv_then_batch_norm(in_channels: int, momentum: float | None) -> None:
    """Outputs, every parameter's gradient and the running statistics (two steps) equal bn(conv(x)) in float64."""
    conv, bn = _pair(in_channels, momentum)
    conv_ref, bn_ref = copy.deepcopy(conv), copy.deepcopy(bn)
    assert foldable(conv, bn)
    for step in range(2):
        x = torch.rand(6, in_channels, 9, 10, dtype=torch.float64)
        g = torch.randn(6, 8, 9, 10, dtype=torch.float64)
        out = folded_conv_bn(x, conv, bn)
        ref = bn_ref(conv_ref(x))
        torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)
        for m in (conv, bn, conv_ref, bn_ref):
            m.zero_grad()
        (out * g).sum().backward()
        (ref * g).sum().backward()
        for a, b in ((conv, conv_ref), (bn, bn_ref)):
            for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
                torch.testing.assert_close(pa.grad, pb.grad, atol=1e-8, rtol=1e-8, msg=f"step {step}: {name}")
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(bn, name), getattr(bn_ref, name), atol=1e-12, rtol=1e-12)
        with torch.no_grad():  # a different function on the next step
            for p, q in zip(
                list(conv.parameters()) + list(bn.parameters()),
                list(conv_ref.parameters()) + list(bn_ref.parameters()),
                strict=True,
            ):
                p.sub_(0.1 * p.grad)
                q.sub_(0.1 * q.grad)
    assert conv.bias.grad is not None and float(conv.bias.grad.abs().max()) == 0.0  # b cancels exactly


def test_not_foldable_in_eval_mode_or_without_running_statistics() -> None:
    conv, bn = _pair(1, 0.1)
    bn.eval()
    assert not foldable(conv, bn)
    bn.train()
    assert not foldable(nn.Conv2d(1, 8, 3, stride=2, padding=1), bn)
    free = nn.BatchNorm2d(8, track_running_stats=False)
    assert not foldable(conv, free)


def test_conv4_training_step_folded_matches_unfolded() -> None:
    """A ProtoNet on Conv-4: the same loss, gradients and running statistics with the first block folded, and the
    same eval-mode embedding (folding is a training-time path only)."""
    torch.manual_seed(0)
    plain = build_method("protonet", Conv4()).double()
    folded = copy.deepcopy(plain)
    set_batch_norm_folding(folded, True)
    assert folded.encoder.fold_first_batch_norm and not plain.encoder.fold_first_batch_norm
    x = torch.rand(20, 1, 28, 28, dtype=torch.float64)
    for method in (plain, folded):
        method.train()
        method.encoder(x).square().sum().backward()
    for (name, a), b in zip(folded.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-6, msg=name)
    for (name, a), b in zip(folded.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)
    plain.eval()
    folded.eval()
    torch.testing.assert_close(folded.encoder(x), plain.encoder(x))


def test_fold_rule_and_choices() -> None:
    from oneshot.errors import OneshotError

    assert resolve_fold_batch_norm("auto", torch.device("cpu"))
    assert not resolve_fold_batch_norm("auto", torch.device("cuda"))
    assert resolve_fold_batch_norm("on", torch.device("cuda"))
    assert not resolve_fold_batch_norm("off", torch.device("cpu"))
    with pytest.raises(OneshotError, match="fold-bn"):
        resolve_fold_batch_norm("maybe", torch.device("cpu"))


@pytest.mark.parametrize("choice", ["auto", "off"])
def test_train_folds_on_cpu_by_default_and_keeps_the_losses(vinyals_train, small_val, tmp_path, choice: str) -> None:
    """``train`` switches the fold per ``fold_batch_norm`` (auto = on for CPU); the first steps' losses on real
    Omniglot episodes match an unfolded run's up to bf16 rounding."""
    from oneshot.training import TrainConfig, train

    meta = {"encoder": "conv4", "encoder_options": {"in_channels": 1}}
    losses: dict[str, list[float]] = {}
    for run in (choice, "off"):
        torch.manual_seed(0)
        method = build_method("protonet", Conv4())
        cfg = TrainConfig(episodes=3, ways=10, eval_every=3, val_ways=5, val_episodes=5, seed=0, fold_batch_norm=run)
        seen: list[float] = []
        train(
            method,
            vinyals_train,
            small_val,
            cfg,
            tmp_path / f"{run}.safetensors",
            meta,
            on_progress=lambda p, seen=seen: seen.append(p.loss),
        )
        losses.setdefault(run, seen)
        assert method.encoder.fold_first_batch_norm is (run == "auto")
    torch.testing.assert_close(torch.tensor(losses[choice]), torch.tensor(losses["off"]), atol=0.05, rtol=0.02)
