"""Batch augmentation on the training device: flips, crops, small affine, brightness / contrast.

One call transforms a whole float batch (B, C, H, W) in [0, 1] with per-image random parameters drawn from a
``torch.Generator``, so it adds no per-item Python work to the training loop. Used by the training loop
(``TrainConfig.augment``) and by SimCLR's two views (Chen et al. 2020). The settings are stored in the
checkpoint's training config; which ones a benchmark uses was chosen on validation (docs/images.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from oneshot.errors import OneshotError


@dataclass(frozen=True)
class Augment:
    """Random transformations of a batch.

    Attributes:
        flip: probability of a horizontal flip.
        scale: (min, max) area fraction kept by a random crop (1, 1: no crop).
        rotate: maximum rotation in degrees (small affine).
        shift: maximum translation as a fraction of the side.
        brightness: maximum additive brightness change (fraction of the range).
        contrast: maximum relative contrast change.
        vflip: probability of a vertical flip (textures have no "up").
    """

    flip: float = 0.5
    scale: tuple[float, float] = (0.7, 1.0)
    rotate: float = 10.0
    shift: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    vflip: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Augment | None:
        if not d:
            return None
        try:
            d = dict(d)
            if "scale" in d:
                d["scale"] = tuple(float(v) for v in d["scale"])
            return cls(**d)
        except TypeError as exc:
            raise OneshotError(f"bad augmentation settings {d}: {exc}") from None

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> same shape, each image transformed independently."""
        b, dev = x.shape[0], x.device

        def u(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, generator=gen).to(dev) * (hi - lo) + lo

        area = u(*self.scale)
        s = area.sqrt()  # side fraction kept
        angle = u(-self.rotate, self.rotate) * (math.pi / 180)
        flip = torch.where(u(0, 1) < self.flip, -1.0, 1.0)
        vflip = torch.where(u(0, 1) < self.vflip, -1.0, 1.0)
        room = (1 - s) + self.shift
        tx, ty = u(-1, 1) * room, u(-1, 1) * room
        cos, sin = angle.cos() * s, angle.sin() * s
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip * vflip, cos * vflip, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        c = u(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1).to(x.dtype)
        br = u(-self.brightness, self.brightness).view(b, 1, 1, 1).to(x.dtype)
        return ((out - mean) * c + mean + br).clamp_(0, 1)
