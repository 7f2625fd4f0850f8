"""Seeded samplers that yield indices into an :class:`~oneshot.data.imageset.ImageSet`.

Episode ``e`` of a sampler with seed ``s`` is drawn from ``numpy.random.default_rng((s, e))``, so any
episode can be reproduced on its own: evaluation is identical across runs and methods, and a resumed
training run continues with exactly the episodes it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from oneshot.errors import OneshotError


@dataclass(frozen=True)
class EpisodeIndices:
    """One N-way K-shot episode, class-major.

    Attributes:
        support: (N*K,) image indices; ``support[c*K:(c+1)*K]`` are class ``c``.
        query: (N*Q,) image indices; ``query[c*Q:(c+1)*Q]`` are class ``c``.
        classes: (N,) the dataset classes drawn, in episode-label order.
    """

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray


class IndexSampler(Protocol):
    """What the training loop iterates: index batches, each holding ``tasks`` episodes (concatenated
    task-major: all supports, then all queries, then all classes), ``len()`` batches still to come."""

    tasks: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[EpisodeIndices]: ...


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class; no class twice in an episode, no image both support and query.

    Args:
        class_indices: for each class, the indices of its images.
        ways: N, classes per episode.
        shots: K, support examples per class.
        queries: Q, query examples per class.
        episodes: how many episodes one iteration yields.
        seed: fixes every episode.
        start: index of the first episode (to resume).
    """

    tasks = 1  # one episode per batch (see IndexSampler)

    def __init__(
        self, class_indices: list[np.ndarray], ways: int, shots: int, queries: int, episodes: int, seed: int = 0, start: int = 0
    ) -> None:
        if ways < 1 or shots < 1 or queries < 0 or episodes < 0:
            raise OneshotError(f"ways and shots must be >= 1 and queries >= 0 (got {ways}-way {shots}-shot {queries} queries)")
        if ways > len(class_indices):
            raise OneshotError(f"{ways}-way episodes need {ways} classes but the data has {len(class_indices)}: lower --ways")
        need = shots + queries
        counts = np.array([len(c) for c in class_indices])
        if counts.min() < need:
            worst = int(counts.argmin())
            raise OneshotError(
                f"{shots}-shot with {queries} queries needs {need} examples per class but class #{worst} has "
                f"{counts[worst]}: lower --shots/--queries or add examples"
            )
        self.class_indices = class_indices
        self.ways, self.shots, self.queries = ways, shots, queries
        self.episodes, self.seed, self.start = episodes, seed, start
        # Equal class sizes (Omniglot) allow one vectorised draw per episode.
        self._uniform = bool((counts == counts[0]).all())
        self._table = np.stack(class_indices) if self._uniform else None

    def __len__(self) -> int:
        return max(0, self.episodes - self.start)

    def episode(self, e: int) -> EpisodeIndices:
        """Episode number ``e`` (deterministic in ``seed`` and ``e``)."""
        rng = np.random.default_rng((self.seed, e))
        classes = rng.choice(len(self.class_indices), self.ways, replace=False)
        need = self.shots + self.queries
        if self._table is not None:
            picks = rng.random((self.ways, self._table.shape[1])).argsort(axis=1)[:, :need]
            chosen = np.take_along_axis(self._table[classes], picks, axis=1)
        else:
            chosen = np.stack([rng.choice(self.class_indices[c], need, replace=False) for c in classes])
        return EpisodeIndices(
            support=chosen[:, : self.shots].reshape(-1),
            query=chosen[:, self.shots :].reshape(-1),
            classes=classes,
        )

    def __iter__(self) -> Iterator[EpisodeIndices]:
        for e in range(self.start, self.episodes):
            yield self.episode(e)
