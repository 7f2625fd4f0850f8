"""Helpers shared by the pair and triplet methods: all images of an episode, balanced pairs.

Pair methods (Siamese, contrastive) and triplet methods learn from every image of a training episode, support
and query alike: an episode of N classes with K shots and Q queries is N classes x M = K + Q examples (a
P x K batch is the episode with ``queries=0``). Pairs are a deterministic function of the episode, so they
are exactly as seeded as the episode sampler (resume and reruns see the same pairs).
"""

from __future__ import annotations

import torch

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode


def episode_images(episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a single-task episode and their labels: (N*(K+Q), C, H, W), (N*(K+Q),) in [0, N)."""
    if episode.tasks != 1:
        raise OneshotError("pair and triplet methods train on one episode per batch (tasks=1)")
    x = torch.cat([episode.support, episode.query])
    labels = torch.cat([episode.support_labels, episode.query_labels])
    return x, labels


def class_grid(ways: int, shots: int, queries: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Positions (N, K+Q) of each class's examples in ``torch.cat([support, query])`` (both class-major)."""
    s = torch.arange(ways * shots, device=device).view(ways, shots)
    q = ways * shots + torch.arange(ways * queries, device=device).view(ways, queries)
    return torch.cat([s, q], 1)


def balanced_pairs(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Equal numbers of same-class and different-class pairs from a class grid (N, M).

    Positives: every unordered pair (i < j) of examples of each class: N * M(M-1)/2 pairs.
    Negatives: one per positive: the positive's first example with the j-th example of class
    ``(c + 1 + p mod (N-1)) mod N`` (p the pair's number), so negatives spread over the other classes.

    Returns:
        a, b: (2P,) positions of the pair members; same: (2P,) float, 1 for same class, 0 otherwise.
    """
    n, m = grid.shape
    if m < 2:
        raise OneshotError("pairs need at least 2 examples per class: train with --shots 2 (or --queries >= 1)")
    if n < 2:
        raise OneshotError("different-class pairs need at least 2 classes per episode: raise --ways")
    i, j = torch.triu_indices(m, m, 1, device=grid.device)  # (P,), (P,) with P = m(m-1)/2
    p = torch.arange(i.numel(), device=grid.device)
    c = torch.arange(n, device=grid.device)[:, None]  # (N, 1)
    other = (c + 1 + p % (n - 1)) % n  # (N, P)
    pos_a, pos_b = grid[:, i], grid[:, j]  # (N, P)
    neg_b = grid[other, j[None].expand(n, -1)]
    a = torch.cat([pos_a.reshape(-1), pos_a.reshape(-1)])
    b = torch.cat([pos_b.reshape(-1), neg_b.reshape(-1)])
    same = torch.cat([torch.ones(pos_a.numel(), device=grid.device), torch.zeros(pos_a.numel(), device=grid.device)])
    return a, b, same


def episode_pairs(episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of ``episode`` and balanced pairs among them: x (B, C, H, W), a (2P,), b (2P,), same (2P,)."""
    x, _ = episode_images(episode)
    queries = episode.query.shape[0] // max(episode.ways, 1)
    grid = class_grid(episode.ways, episode.shots, queries, x.device)
    a, b, same = balanced_pairs(grid)
    return x, a, b, same
