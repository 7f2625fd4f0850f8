"""The fused first-block CPU kernel (oneshot.encoders.first_block_kernel) against PyTorch's own operators."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

from oneshot.encoders import Conv4, first_block_kernel
from oneshot.encoders.batch_norm_fold import patch_moments
from oneshot.encoders.first_block_kernel import FirstBlock
from oneshot.errors import OneshotError
from oneshot.runtime import resolve_fused_kernel, set_batch_norm_folding

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.relu(F.max_pool2d(F.conv2d(x, weight, bias, padding=1), 2))


def test_kernel_builds_here() -> None:
    assert first_block_kernel.available(), first_block_kernel.unavailable_reason()


@pytest.mark.parametrize(("channels", "height", "width"), [(64, 28, 28), (8, 9, 11)])
@pytest.mark.parametrize("binary", [True, False])
def test_forward_and_gradients_equal_conv_pool_relu(channels: int, height: int, width: int, binary: bool) -> None:
    """Values and weight / bias gradients equal relu(maxpool(conv)) in float64, odd sizes (floor pooling) and
    binary images (many equal values in a window: the first position wins, as nn.MaxPool2d) included."""
    torch.manual_seed(channels + height)
    x = torch.rand(5, 1, height, width)
    if binary:
        x = (x > 0.7).float()
    weight = torch.randn(channels, 1, 3, 3, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)
    out = FirstBlock.apply(x, weight, bias)
    assert out.shape == (5, channels, height // 2, width // 2) and out.dtype == torch.float32
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    ref = _reference(x.double(), w64, b64)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    (out * g.float()).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(weight.grad.double(), w64.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(bias.grad.double(), b64.grad, atol=1e-4, rtol=1e-5)
    assert bool((out >= 0).all()) and bool((out == 0).any())  # the ReLU cut some outputs


def test_bf16_autocast_output_is_the_float32_output_rounded() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    weight, bias = torch.randn(64, 1, 3, 3), torch.randn(64)
    exact = FirstBlock.apply(x, weight, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = FirstBlock.apply(x, weight, bias)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, exact.to(torch.bfloat16))
    w = weight.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = FirstBlock.apply(x, w, bias)
    g = torch.randn(y.shape).to(torch.bfloat16)
    (y * g).float().sum().backward()  # a bf16 gradient reaches the kernel
    w64 = weight.double().requires_grad_()
    (_reference(x.double(), w64, bias.double()) * g.double()).sum().backward()
    assert float((w.grad.double() - w64.grad).norm() / w64.grad.norm()) < 1e-2  # bf16 forward values, same choices


def test_moments_equal_the_unfused_ones() -> None:
    x = torch.rand(7, 1, 13, 10)
    mean, cov, n = first_block_kernel.patch_moments(x)
    ref_mean, ref_cov, ref_n = patch_moments(x, (3, 3), (1, 1), torch.float64)
    assert n == ref_n == 7 * 13 * 10
    torch.testing.assert_close(mean, ref_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(cov, ref_cov, atol=1e-6, rtol=0)


def test_conv4_fused_training_step_matches_unfolded() -> None:
    """A Conv-4 training forward + backward with the fused first block gives the plain network's embeddings,
    gradients and running statistics (float32, CPU)."""
    torch.manual_seed(0)
    plain = Conv4()
    fused = copy.deepcopy(plain)
    set_batch_norm_folding(fused, True, True)
    assert fused.fuse_first_block and not plain.fuse_first_block
    x = torch.rand(24, 1, 28, 28)
    assert fused._fusable(x)
    outs = []
    for net in (plain, fused):
        net.train()
        y = net(x)
        y.square().sum().backward()
        outs.append(y.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters(), strict=True):
        if name == "features.0.bias":  # batch norm cancels it: 0 exactly fused, rounding noise unfused
            assert float(a.grad.abs().max()) == 0.0 and float(b.grad.abs().max()) < 1e-3
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-3, rtol=1e-3, msg=name)
    for (name, a), b in zip(fused.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_unavailable_kernel_falls_back_or_says_why(monkeypatch) -> None:
    monkeypatch.setattr(first_block_kernel, "_library", None)
    monkeypatch.setattr(first_block_kernel, "_reason", "no C compiler found (set CC, or install gcc)")
    cpu = torch.device("cpu")
    assert not resolve_fused_kernel("auto", cpu)
    with pytest.raises(OneshotError, match="cannot be built here .no C compiler"):
        resolve_fused_kernel("on", cpu)
    assert not resolve_fused_kernel("off", cpu)
    with pytest.raises(OneshotError, match="CPU kernel"):
        resolve_fused_kernel("on", torch.device("cuda"))


def test_a_failing_compiler_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CC", "false")  # exists, fails
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="false failed"):
        first_block_kernel._build()
    assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-written left in the cache


def test_gradients_are_bit_identical_from_call_to_call() -> None:
    """Partial sums are added in thread order, not as threads finish: the same inputs give the same bits (exact
    resume depends on it)."""
    torch.manual_seed(3)
    x = torch.rand(37, 1, 28, 28)
    weight = torch.randn(64, 1, 3, 3, requires_grad=True)
    bias = torch.randn(64, requires_grad=True)
    g = torch.randn(37, 64, 14, 14)
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # with more than 2 threads, finishing order would change a sum's rounding
    try:
        grads = [torch.autograd.grad(FirstBlock.apply(x, weight, bias), (weight, bias), g) for _ in range(5)]
        moments = [first_block_kernel.patch_moments(x) for _ in range(5)]
    finally:
        torch.set_num_threads(before)
    for gw, gb in grads[1:]:
        assert torch.equal(gw, grads[0][0]) and torch.equal(gb, grads[0][1])
    for mean, cov, _ in moments[1:]:
        assert torch.equal(mean, moments[0][0]) and torch.equal(cov, moments[0][1])


def test_a_float64_network_keeps_pytorch_operators() -> None:
    """The kernel is float32: a float64 Conv-4 with folding and fusing on runs the folded PyTorch path instead."""
    net = Conv4().double()
    set_batch_norm_folding(net, True, True)
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    assert not net._fusable(x)
    assert net(x).dtype == torch.float64


def test_auto_runs_the_kernel_only_where_it_was_measured_faster(monkeypatch) -> None:
    """``auto`` keys on the vector unit: AVX-512 (1.11x faster on a Zen 4 EPYC) yes, AVX2 (0.86x on a Zen 3 EPYC) no;
    ``on`` still runs it there (the same function)."""
    import oneshot.runtime as runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(first_block_kernel, "_library", object())  # as if built
    monkeypatch.setattr(first_block_kernel, "_reason", None)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx", "avx2", "fma"})
    assert not resolve_fused_kernel("auto", cpu) and resolve_fused_kernel("on", cpu)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    assert resolve_fused_kernel("auto", cpu)
