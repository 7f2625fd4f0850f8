"""The Conv-4 encoder of the one-shot literature (Vinyals et al. 2016; Snell et al. 2017).

Four blocks of 3x3 convolution (64 filters), batch norm, ReLU and 2x2 max-pooling. Each block applies the
pooling before the ReLU: ReLU is monotonic, so ``maxpool(relu(x)) == relu(maxpool(x))`` exactly, and the
ReLU then touches a quarter of the values (about 1.3x faster training on CPU, same function). With
``fold_first_batch_norm`` the first block's convolution and training-mode batch norm run as one convolution
(:mod:`oneshot.encoders.batch_norm_fold`; same function, fewer passes over the largest activation), and with
``fuse_first_block`` as well, that convolution, the pooling and the ReLU run as one CPU kernel
(:mod:`oneshot.encoders.first_block_kernel`; same function, the 28 x 28 map never stored).
"""

from __future__ import annotations

import torch
from torch import nn

from oneshot.encoders import first_block_kernel
from oneshot.encoders.batch_norm_fold import fold_batch_norm, foldable, folded_conv_bn


class Conv4(nn.Module):
    """Conv-4: (B, C, H, W) -> (B, D) with D = hidden * (H // 16) * (W // 16) (64 for 28x28 inputs).

    Args:
        in_channels: image channels (1 for Omniglot).
        hidden: filters per block (64 in the papers).
        blocks: number of conv blocks (4).

    Attributes:
        fold_first_batch_norm: run the first block's convolution + batch norm folded when training (not a
            parameter: checkpoints do not change; the training loop sets it, ``--fold-bn``).
        fuse_first_block: when folded, run convolution + pooling + ReLU as the fused CPU kernel where it applies
            (1-channel CPU input; ``--fused-kernel``).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for b in range(blocks):
            layers += [
                nn.Conv2d(in_channels if b == 0 else hidden, hidden, kernel_size=3, padding=1),
                nn.BatchNorm2d(hidden),
                nn.MaxPool2d(2),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.fold_first_batch_norm = False
        self.fuse_first_block = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.features[0], self.features[1]
        if self.fold_first_batch_norm and foldable(conv, bn) and not x.requires_grad:
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # foldable says so
            if self.fuse_first_block and self._fusable(x):
                weight, bias = fold_batch_norm(x, conv, bn, first_block_kernel.patch_moments(x))
                first = first_block_kernel.FirstBlock.apply(x, weight, bias)
            else:
                first = self.features[3](self.features[2](folded_conv_bn(x, conv, bn)))
            return self.features[4:](first).flatten(1)
        return self.features(x).flatten(1)

    def _fusable(self, x: torch.Tensor) -> bool:
        pool, relu = self.features[2], self.features[3]
        plain_pool = (
            isinstance(pool, nn.MaxPool2d)
            and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode
        )
        return plain_pool and isinstance(relu, nn.ReLU) and first_block_kernel.fits(x, self.features[0])
