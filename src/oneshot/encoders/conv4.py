"""The Conv-4 encoder of the one-shot literature (Vinyals et al. 2016; Snell et al. 2017).

Four blocks of 3x3 convolution (64 filters), batch norm, ReLU and 2x2 max-pooling. Each block applies the
pooling before the ReLU: ReLU is monotonic, so ``maxpool(relu(x)) == relu(maxpool(x))`` exactly, and the
ReLU then touches a quarter of the values (about 1.3x faster training on CPU, same function). With
``fold_first_batch_norm`` the first block's convolution and training-mode batch norm run as one convolution
(:mod:`oneshot.encoders.batch_norm_fold`; same function, fewer passes over the largest activation).
"""

from __future__ import annotations

import torch
from torch import nn

from oneshot.encoders.batch_norm_fold import foldable, folded_conv_bn


class Conv4(nn.Module):
    """Conv-4: (B, C, H, W) -> (B, D) with D = hidden * (H // 16) * (W // 16) (64 for 28x28 inputs).

    Args:
        in_channels: image channels (1 for Omniglot).
        hidden: filters per block (64 in the papers).
        blocks: number of conv blocks (4).

    Attributes:
        fold_first_batch_norm: run the first block's convolution + batch norm folded when training (not a
            parameter: checkpoints do not change; the training loop sets it, ``--fold-bn``).
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.features[0], self.features[1]
        if self.fold_first_batch_norm and foldable(conv, bn) and not x.requires_grad:
            return self.features[2:](folded_conv_bn(x, conv, bn)).flatten(1)  # type: ignore[arg-type]
        return self.features(x).flatten(1)
