"""Siamese network with the contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by
Learning an Invariant Mapping", CVPR 2006).

For a pair at embedding distance ``d = ||f(x1) - f(x2)||``: ``L = y d^2 / 2 + (1 - y) max(0, m - d)^2 / 2``
with y = 1 for same-class pairs: same-class pairs are pulled together, different-class pairs pushed apart
until they are at least the margin m apart. Pairs are the balanced pairs of
:func:`~oneshot.methods.pairs.balanced_pairs`; one-shot classification is the interface's nearest prototype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.methods.base import Episode, LossOutput, Method
from oneshot.methods.pairs import episode_pairs


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean contrastive loss of embedding pairs a, b (P, D) with targets ``same`` (P,) in {0, 1}."""
    d2 = (a - b).pow(2).sum(1)
    d = (d2 + 1e-12).sqrt()  # the epsilon keeps the gradient finite at d = 0
    return 0.5 * (same * d2 + (1 - same) * F.relu(margin - d).pow(2)).mean()


class Contrastive(Method):
    """Siamese embedding trained with the margin contrastive loss.

    Args:
        encoder: (B, C, H, W) -> (B, D).
        margin: m, the distance beyond which different-class pairs cost nothing.
        normalize: L2-normalise embeddings (distances then lie in [0, 2]; the margin is on that scale).
    """

    name = "contrastive"
    option_names = ("margin", "normalize")

    def __init__(self, encoder: nn.Module, margin: float = 1.0, normalize: bool = True) -> None:
        super().__init__(encoder)
        self.margin = float(margin)
        self.normalize = bool(normalize)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).float()
        return F.normalize(z, dim=1) if self.normalize else z

    def loss(self, episode: Episode) -> LossOutput:
        x, a, b, same = episode_pairs(episode)
        z = self.embed(x)
        with torch.no_grad():
            logits = self.episode_logits(z, episode)
        return LossOutput(contrastive_loss(z[a], z[b], same, self.margin), logits)
