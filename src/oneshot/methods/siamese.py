"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for
One-shot Image Recognition", ICML Deep Learning Workshop 2015).

A twin encoder with shared weights embeds both images of a pair; the "same" logit is a learned weighted L1
distance, ``alpha . |f(x1) - f(x2)| + b``, and the same-class probability its sigmoid, trained with binary
cross-entropy on balanced same / different pairs (:func:`~oneshot.methods.pairs.balanced_pairs`). One-shot
classification picks the class whose support example has the highest "same" probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.encoders import embedding_dim
from oneshot.methods.base import Episode, LossOutput, Method
from oneshot.methods.pairs import episode_pairs


def class_max(scores: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Per-class maximum of pair scores: (Q, S) with support labels (S,) in [0, ways) -> (Q, ways)."""
    out = torch.full((scores.shape[0], ways), float("-inf"), dtype=scores.dtype, device=scores.device)
    return out.scatter_reduce(1, labels[None].expand_as(scores), scores, reduce="amax")


class Siamese(Method):
    """Koch et al.'s Siamese verification network on any encoder.

    Args:
        encoder: the shared twin encoder, (B, C, H, W) -> (B, D).
        input_shape: (C, H, W) of the inputs, to size the distance layer (set from the training data).
    """

    name = "siamese"
    option_names = ("input_shape",)
    data_options = ("input_shape",)

    def __init__(self, encoder: nn.Module, input_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__(encoder)
        self.input_shape = [int(v) for v in input_shape]
        dim = embedding_dim(encoder, tuple(self.input_shape))
        self.distance = nn.Linear(dim, 1)  # alpha (1, D), bias b
        # Start as a scaled negative L1 distance (same-probability falling with distance) rather than random
        # signs (5-way validation accuracy after 150 short episodes: 88% against 65% with the default init).
        nn.init.constant_(self.distance.weight, -16.0 / dim)
        nn.init.constant_(self.distance.bias, 8.0)

    def pair_logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """ "Same" logits of embedding pairs: a, b (..., D) -> (...,)."""
        return self.distance((a.float() - b.float()).abs()).squeeze(-1)

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.pair_logits(a, b)

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        scores = self.pair_logits(query[:, None, :], support[None, :, :])  # (Q, S)
        return class_max(scores, support_labels, ways)

    def loss(self, episode: Episode) -> LossOutput:
        x, a, b, same = episode_pairs(episode)
        z = self.embed(x)
        with torch.no_grad():
            logits = self.episode_logits(z, episode)
        return LossOutput(F.binary_cross_entropy_with_logits(self.pair_logits(z[a], z[b]), same), logits)
