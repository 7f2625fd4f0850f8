"""An MLP encoder over molecule features: Morgan bits (0/1) and standardised RDKit descriptors.

Input (B, F) float32 with F = n_bits + n_descriptors (see :mod:`oneshot.modalities.molecule.features`);
output (B, out_dim). The descriptor mean and standard deviation are buffers (set from the training molecules
by :meth:`MoleculeMLP.set_descriptor_stats`) so a checkpoint carries its own standardisation.
"""

from __future__ import annotations

import torch
from torch import nn


class MoleculeMLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a linear projection to ``out_dim``.

    Args:
        n_bits: Morgan fingerprint size (the first ``n_bits`` input columns).
        radius: Morgan radius (recorded for the featuriser; 2 = ECFP4).
        descriptors: whether 16 descriptor columns follow the bits.
        hidden: hidden layer widths.
        out_dim: embedding size D.
        dropout: dropout after each hidden layer (training only).
    """

    N_DESCRIPTORS = 16

    desc_mean: torch.Tensor
    desc_std: torch.Tensor

    def __init__(
        self,
        n_bits: int = 2048,
        radius: int = 2,
        descriptors: bool = True,
        hidden: tuple[int, ...] | list[int] = (1024, 512),
        out_dim: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_bits, self.radius, self.descriptors = int(n_bits), int(radius), bool(descriptors)
        self.out_dim = int(out_dim)
        n_desc = self.N_DESCRIPTORS if descriptors else 0
        self.in_features = self.n_bits + n_desc
        self.register_buffer("desc_mean", torch.zeros(n_desc))
        self.register_buffer("desc_std", torch.ones(n_desc))
        layers: list[nn.Module] = []
        width = self.in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, self.out_dim))
        self.net = nn.Sequential(*layers)

    def set_descriptor_stats(self, features: torch.Tensor) -> None:
        """Standardise descriptors with the mean/std of training features (N, F)."""
        if self.descriptors:
            d = features[:, self.n_bits :].double()
            self.desc_mean.copy_(d.mean(0).float())
            self.desc_std.copy_(d.std(0).clamp_min(1e-6).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, out_dim)."""
        if self.descriptors:
            d = ((x[:, self.n_bits :] - self.desc_mean) / self.desc_std).clamp(-6, 6)
            x = torch.cat([x[:, : self.n_bits], d], 1)
        return self.net(x)
