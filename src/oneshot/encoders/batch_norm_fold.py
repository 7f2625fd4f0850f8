"""Batch norm folded into the convolution before it, in training mode, for a network's first layer.

A training-mode ``bn(conv(x))`` normalises each output channel by its mean and variance over the batch and every
position. When ``x`` is the input (no gradient flows to it) and has few channels, those statistics follow from
the input's patches alone: the convolution is linear in the k x k patch ``p`` (F = C k^2 values), output channel
o is ``w_o . p + b_o``, so with the patches' mean ``mu`` (F,) and biased covariance ``S`` (F, F) over all B H W
positions (zero padding included)::

    mean_o = w_o . mu + b_o        var_o = w_o^T S w_o

and ``bn(conv(x)) = conv(x; w_o * s_o, beta_o + s_o (b_o - mean_o))`` with ``s_o = gamma_o / sqrt(var_o + eps)``.
One convolution with folded weights replaces convolution + batch norm: the (B, O, H, W) activation is written once,
by the convolution, and read only by the next layer, where the unfolded pair also reads it for the statistics and
the normalisation and writes it a second time in the forward pass, and makes three more passes over it in the
backward pass. Gradients reach ``w``, ``b``, ``gamma`` and
``beta`` through the small (O,) and (O, F) tensors above by ordinary autograd (``b`` cancels: its gradient is
exactly 0, as it is in exact arithmetic for the unfolded pair). The running statistics are updated as
``nn.BatchNorm2d`` updates them (unbiased variance, ``momentum`` or a cumulative average when it is None).

Same function as the pair up to floating-point rounding (``tests/test_batch_norm_fold.py`` checks outputs,
gradients and running statistics against ``bn(conv(x))`` in float64). On Omniglot's first Conv-4 block
(1 -> 64 channels at 28 x 28) the pair was about a fifth of a ProtoNet training step on a 2-core CPU; folding
made the raw step 1.09-1.11x faster (``benchmarks/throughput.py --levers``, AMD EPYC), and the fused kernel of
:mod:`oneshot.encoders.first_block_kernel` on top of it 1.28x in all.

The idea of folding batch norm into a convolution is the usual inference-time fold (running statistics);
computing the training-mode statistics analytically from the input's patch covariance is what makes it exact
during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """Whether ``bn(conv(x))`` can run folded now: a plain stride-1, zero-padded, ungrouped 2-D convolution followed
    by a batch norm in training mode that keeps running statistics (meta-learners' batch norms, which keep none and
    run under ``torch.func`` transforms, are left alone)."""
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.training
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_batches_tracked is not None
        and bn.affine
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


@torch.no_grad()
def patch_moments(
    x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int], dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean (F,), biased covariance (F, F) and count of the stride-1 ``kernel`` patches of ``x`` (B, C, H, W) with
    zero ``padding``, in ``dtype``; F = C kh kw in ``conv.weight.flatten(1)``'s order (channel, row, column)."""
    kh, kw = kernel
    ph, pw = padding
    b, c, h, w = x.shape
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    padded = F.pad(x.to(dtype), (pw, pw, ph, ph))
    shift = padded.mean()  # centring first keeps E[p p^T] - mu mu^T free of cancellation
    padded = padded - shift
    taps = [padded[:, :, i : i + ho, j : j + wo] for i in range(kh) for j in range(kw)]
    patches = torch.stack(taps, dim=2).permute(1, 2, 0, 3, 4).reshape(c * kh * kw, b * ho * wo)  # (F, N)
    n = patches.shape[1]
    mean = patches.sum(1) / n
    cov = patches @ patches.T / n - torch.outer(mean, mean)
    return mean + shift, cov, n


def fold_batch_norm(
    x: torch.Tensor,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    moments: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights (O, C, kh, kw) and bias (O,) of the one convolution equal to training-mode ``bn(conv(x))``;
    updates ``bn``'s running statistics as its forward pass would. Differentiable in ``conv``'s and ``bn``'s
    parameters (``x`` needs no gradient). ``moments``: the patches' (mean, covariance, count) when already
    computed (the fused kernel's one-pass version), else :func:`patch_moments`."""
    kernel = (int(conv.kernel_size[0]), int(conv.kernel_size[1]))
    padding = (int(conv.padding[0]), int(conv.padding[1]))  # type: ignore[index]  # foldable: a tuple of ints
    dtype = torch.promote_types(conv.weight.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):  # the statistics and the folding in float32 (or float64)
        mu, cov, n = moments if moments is not None else patch_moments(x, kernel, padding, dtype)
        mu, cov = mu.to(dtype), cov.to(dtype)
        weight = conv.weight.to(dtype).flatten(1)  # (O, F)
        bias = conv.bias.to(dtype) if conv.bias is not None else torch.zeros_like(weight[:, 0])
        mean = weight @ mu + bias  # (O,)
        var = ((weight @ cov) * weight).sum(1).clamp_min(0)  # (O,), biased
        scale = bn.weight / torch.sqrt(var + bn.eps)
        folded_weight = (conv.weight * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
        folded_bias = (bn.bias + scale * (bias - mean)).to(conv.weight.dtype)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]  # foldable: present
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)  # type: ignore[arg-type]
        bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.dtype), alpha=momentum)  # type: ignore[union-attr]
        unbiased = var * (n / max(n - 1, 1))
        bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)  # type: ignore[union-attr]
    return folded_weight, folded_bias


def folded_conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` in training mode as one convolution with folded weights; updates ``bn``'s running statistics.

    Args:
        x: (B, C, H, W) input that needs no gradient (a network's images); C small (the patch covariance is
            (C k^2)^2).
        conv, bn: modules for which :func:`foldable` holds.

    Returns:
        (B, O, H', W'), the same values as ``bn(conv(x))`` up to rounding.
    """
    weight, bias = fold_batch_norm(x, conv, bn)
    return F.conv2d(x, weight, bias, padding=conv.padding)
