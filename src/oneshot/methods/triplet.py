"""Triplet network (Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face Recognition and
Clustering", CVPR 2015).

L2-normalised embeddings; for a triplet (anchor a, positive p of a's class, negative n of another class) the
loss is ``max(0, d(a, p) - d(a, n) + margin)`` with d the squared Euclidean distance. Batches are P classes x
K examples (an episode; with ``queries=0`` a pure P x K batch) and triplets are mined online in the batch:

- ``semihard`` (FaceNet): for every anchor-positive pair, the closest negative that is farther than the
  positive, ``d(a, p) < d(a, n)`` (the loss is non-zero only when it is also within the margin). When no
  negative is farther than the positive, the farthest negative is used (the least hard of the hard ones),
  the fallback of the reference implementation of FaceNet's loss (TensorFlow's ``triplet_semihard_loss``),
  so hard negatives never make the loss collapse to the hardest, noisiest choice.
- ``batch-hard`` (Hermans, Beyer & Leibe 2017): per anchor, its farthest positive and closest negative.
- ``all``: every valid triplet; the loss averages over the triplets that violate the margin.

One-shot classification: the interface's nearest prototype, on the normalised embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.choices import check_choice
from oneshot.methods.base import Episode, LossOutput, Method
from oneshot.methods.pairs import episode_images

MINING = ("semihard", "batch-hard", "all")


def mine_triplets(dist: torch.Tensor, labels: torch.Tensor, strategy: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised online mining inside a batch.

    Args:
        dist: (B, B) pairwise distances.
        labels: (B,) class labels.
        strategy: one of :data:`MINING`.

    Returns:
        Indices (T,), (T,), (T,) of anchors, positives and negatives.
    """
    check_choice("triplet", "mining strategy", strategy, MINING)
    dist = dist.detach()
    b = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=labels.device)
    pos_mask = same & ~eye  # (B, B)
    neg_mask = ~same
    if strategy == "batch-hard":
        has = pos_mask.any(1) & neg_mask.any(1)
        a = has.nonzero().squeeze(1)
        p = dist.masked_fill(~pos_mask, float("-inf")).argmax(1)[a]
        n = dist.masked_fill(~neg_mask, float("inf")).argmin(1)[a]
        return a, p, n
    a, p = pos_mask.nonzero(as_tuple=True)  # every anchor-positive pair, (P,)
    if strategy == "all":
        keep = neg_mask[a]  # (P, B)
        pair, n = keep.nonzero(as_tuple=True)
        return a[pair], p[pair], n
    # semihard
    d_an = dist[a]  # (P, B)
    d_ap = dist[a, p][:, None]  # (P, 1)
    negs = neg_mask[a]
    farther = negs & (d_an > d_ap)
    closest_farther = d_an.masked_fill(~farther, float("inf")).argmin(1)
    farthest = d_an.masked_fill(~negs, float("-inf")).argmax(1)
    n = torch.where(farther.any(1), closest_farther, farthest)
    ok = negs.any(1)
    return a[ok], p[ok], n[ok]


def triplet_loss(
    dist: torch.Tensor, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float, average_active: bool = False
) -> torch.Tensor:
    """``max(0, d[a, p] - d[a, n] + margin)`` averaged over the T triplets (or over those with a positive loss)."""
    losses = F.relu(dist[a, p] - dist[a, n] + margin)
    if losses.numel() == 0:
        return dist.sum() * 0
    if average_active:
        active = (losses > 1e-16).sum()
        return losses.sum() / active.clamp_min(1)
    return losses.mean()


class Triplet(Method):
    """FaceNet-style triplet embedding.

    Args:
        encoder: (B, C, H, W) -> (B, D).
        margin: alpha, on squared distances of unit vectors (which lie in [0, 4]); FaceNet uses 0.2.
        mining: ``semihard`` (default), ``batch-hard`` or ``all``; anything else is an error.
    """

    name = "triplet"
    option_names = ("margin", "mining")

    def __init__(self, encoder: nn.Module, margin: float = 0.2, mining: str = "semihard") -> None:
        super().__init__(encoder)
        self.margin = float(margin)
        self.mining = check_choice("triplet", "mining strategy", mining, MINING)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x).float(), dim=1)

    def loss(self, episode: Episode) -> LossOutput:
        x, labels = episode_images(episode)
        z = self.embed(x)
        dist = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1)  # (B, B), exact (no cancellation error at d = 0)
        a, p, n = mine_triplets(dist, labels, self.mining)
        with torch.no_grad():
            logits = self.episode_logits(z, episode)
        return LossOutput(triplet_loss(dist, a, p, n, self.margin, average_active=self.mining == "all"), logits)
