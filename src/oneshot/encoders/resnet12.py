"""ResNet-12, the few-shot literature's standard encoder for photographs (Oreshkin et al. 2018, TADAM;
Lee et al. 2019, MetaOptNet), and a narrower variant for CPU budgets.

Four residual blocks; each is three 3x3 convolutions with batch norm and leaky ReLU (slope 0.1), a 1x1
convolution + batch norm shortcut, and 2x2 max-pooling. Widths (64, 160, 320, 640) are the standard ResNet-12;
``resnet12_small`` uses (32, 64, 128, 256), about 1/8 of the multiply-adds, which is what a 2-core CPU can train
in minutes (docs/images.md gives the measured cost). The feature map is averaged over space: (B, width[-1]).

Input standardisation is part of the encoder (``mean``, ``std`` over the [0, 1] pixels, stored in the
checkpoint's encoder options and shown by ``oneshot info``), so training, evaluation and the gallery apply it
identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H // 2, W // 2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.body(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12: (B, C, H, W) in [0, 1] -> (B, widths[-1]).

    Args:
        in_channels: 1 (grey) or 3 (colour).
        widths: channels of the four blocks; (64, 160, 320, 640) is the standard.
        mean, std: input standardisation ``(x - mean) / std`` (one value for all channels).
    """

    def __init__(
        self, in_channels: int = 1, widths: Sequence[int] = (64, 160, 320, 640), mean: float = 0.0, std: float = 1.0
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4 or min(widths) < 1:
            raise TypeError(f"widths must be four positive integers, got {widths}")
        if not std > 0:
            raise TypeError(f"std must be positive, got {std}")
        chans = [in_channels, *widths]
        self.blocks = nn.Sequential(*[ResBlock(chans[i], chans[i + 1]) for i in range(4)])
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.blocks(x).mean(dim=(2, 3))


def resnet12_small(
    in_channels: int = 1, mean: float = 0.0, std: float = 1.0, widths: Sequence[int] = (32, 64, 128, 256)
) -> ResNet12:
    """The narrow ResNet-12 (32, 64, 128, 256) for CPU training."""
    return ResNet12(in_channels, widths, mean, std)
