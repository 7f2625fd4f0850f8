"""An MLP encoder over molecule features: Morgan bits (0/1), then optionally MACCS keys and RDKit descriptors,
both standardised.

Input (B, F) float32 with F = n_bits [+ 167 MACCS keys] [+ 16 descriptors] [+ extra blocks] (see
:mod:`oneshot.modalities.molecule.features`); output (B, out_dim). Every column after the Morgan bits is
standardised with a mean and standard deviation held in buffers (set from the training molecules by
:meth:`MoleculeMLP.set_descriptor_stats`), so a checkpoint carries its own standardisation.
"""

from __future__ import annotations

import torch
from torch import nn


class MoleculeMLP(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a linear projection to ``out_dim``.

    Args:
        n_bits: Morgan fingerprint size (the first ``n_bits`` input columns).
        radius: Morgan radius (recorded for the featuriser; 2 = ECFP4).
        descriptors: whether 16 descriptor columns come last.
        maccs: whether 167 MACCS-key columns follow the Morgan bits (standardised like descriptors; False in
            checkpoints written before the option).
        extra: names of extra blocks (:mod:`oneshot.modalities.molecule.extra_features`) that come last, in order,
            standardised like descriptors (empty in checkpoints written before the option).
        hidden: hidden layer widths.
        out_dim: embedding size D.
        dropout: dropout after each hidden layer (training only).
    """

    N_DESCRIPTORS = 16
    N_MACCS = 167

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
        maccs: bool = False,
        extra: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.n_bits, self.radius, self.descriptors, self.maccs = int(n_bits), int(radius), bool(descriptors), bool(maccs)
        self.out_dim = int(out_dim)
        from oneshot.modalities.molecule.extra_features import extra_width

        self.extra = tuple(str(n) for n in extra)
        n_desc = (self.N_DESCRIPTORS if descriptors else 0) + (self.N_MACCS if maccs else 0) + extra_width(self.extra)
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

    @property
    def standardised(self) -> bool:
        """Whether columns after the Morgan bits (MACCS keys, descriptors) are standardised."""
        return self.descriptors or self.maccs or bool(self.extra)

    def set_descriptor_stats(self, features: torch.Tensor) -> None:
        """Standardise the columns after the Morgan bits with the mean/std of training features (N, F)."""
        if self.standardised:
            d = features[:, self.n_bits :].double()
            self.desc_mean.copy_(d.mean(0).float())
            self.desc_std.copy_(d.std(0).clamp_min(1e-6).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B, out_dim)."""
        if self.standardised:
            d = ((x[:, self.n_bits :] - self.desc_mean) / self.desc_std).clamp(-6, 6)
            x = torch.cat([x[:, : self.n_bits], d], 1)
        return self.net(x)
