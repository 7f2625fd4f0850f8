"""Prototypical networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017).

Each class is represented by the mean of its support embeddings (its prototype); a query's logits are the
negative squared Euclidean distances to the prototypes, trained with cross-entropy over episodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oneshot.methods.base import Episode, Method, full_precision


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means: embeddings (S, D), labels (S,) in [0, ways) -> (ways, D)."""
    sums = torch.zeros(ways, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=ways).clamp_min(1).to(embeddings.dtype)
    return sums / counts[:, None]


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances: (Q, D), (N, D) -> (Q, N), computed as |a|^2 - 2ab + |b|^2."""
    return (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None]).clamp_min(0)


class ProtoNet(Method):
    """Prototypical network: logits = -||f(x) - c_k||^2 with c_k the mean support embedding of class k."""

    name = "protonet"

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        return -squared_euclidean(full_precision(query), prototypes(full_precision(support), support_labels, ways))

    def loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        # One forward pass over support and query together keeps batch-norm statistics per episode.
        n_support = episode.support.shape[0]
        z = self.embed(torch.cat([episode.support, episode.query]))
        logits = self.classify_embeddings(z[:n_support], episode.support_labels, z[n_support:], episode.ways)
        return F.cross_entropy(logits, episode.query_labels), logits
