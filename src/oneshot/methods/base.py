"""The interface every one-shot method implements, so training and evaluation never branch on a method's name.

A method is an ``nn.Module`` that owns its encoder. Training calls :meth:`Method.training_sampler` for
index batches and :meth:`Method.loss` on the gathered batch; evaluation calls :meth:`Method.embed` plus
:meth:`Method.classify_embeddings` when :attr:`Method.embeds_independently` (the test set is embedded once),
or :meth:`Method.classify` episode by episode otherwise (adaptive methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from oneshot.data.samplers import EpisodeSampler
from oneshot.data.store import ImageSet


def full_precision(z: torch.Tensor) -> torch.Tensor:
    """Upcast bfloat16/float16 tensors (from autocast) to float32; float32 and float64 pass unchanged."""
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


@dataclass
class Episode:
    """A gathered N-way K-shot episode (class-major, episode labels 0..N-1).

    Attributes:
        support: (N*K, C, H, W) float inputs.
        support_labels: (N*K,) int64.
        query: (N*Q, C, H, W) float inputs.
        query_labels: (N*Q,) int64.
        ways: N.
        shots: K.
        classes: (N,) int64 dataset class ids of the episode labels (``classes[label]``), for methods
            that learn over all base classes (transfer baselines) or need global identities.
        tasks: T, the number of tasks stacked task-major in this batch (meta-learning meta-batches): a
            sampler that yields T episodes' indices concatenated (all supports, then all queries) gets
            support (T*N*K, ...) with labels tiled per task, and ``classes`` (T*N,).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    ways: int
    shots: int
    classes: torch.Tensor | None = None
    tasks: int = 1


@dataclass
class TrainShape:
    """The shape of training batches: N-way K-shot episodes with Q queries per class."""

    ways: int = 60
    shots: int = 1
    queries: int = 5


class Method(nn.Module):
    """Base class of one-shot methods.

    Subclasses set :attr:`name`, implement :meth:`loss` and :meth:`classify_embeddings` (metric methods)
    or override :meth:`classify` (adaptive methods), and list their options in :meth:`options`.
    """

    name: ClassVar[str] = ""
    embeds_independently: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def options(self) -> dict[str, Any]:
        """Constructor options (besides the encoder), stored in checkpoints to rebuild the method."""
        return {}

    @classmethod
    def options_for_data(cls, data: ImageSet) -> dict[str, Any]:
        """Constructor options that depend on the training data (e.g. the number of base classes of a
        transfer baseline's classifier); ``experiment.train_model`` merges them under the user's options."""
        return {}

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity (P,) of embedding pairs a, b (P, D), higher = more likely the same class; used by
        verification. Default: negative squared Euclidean distance; methods with a learned pair score
        (Siamese) override it."""
        return -(a.float() - b.float()).pow(2).sum(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) embeddings, in float32 at least (half-precision autocast outputs are upcast)."""
        return full_precision(self.encoder(x))

    def training_sampler(self, data: ImageSet, shape: TrainShape, episodes: int, seed: int, start: int) -> EpisodeSampler:
        """The sampler of training batches; episodic by default, or the data's own ``episode_sampler`` (e.g.
        2-way episodes within one assay for molecules, :mod:`oneshot.data.assays`)."""
        own = getattr(data, "episode_sampler", None)
        if own is not None:
            return own(shape, episodes, seed, start)
        return EpisodeSampler(data.class_indices, shape.ways, shape.shots, shape.queries, episodes, seed, start)

    def loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss on one episode: returns (scalar loss, (N*Q, N) logits for accuracy)."""
        raise NotImplementedError

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Logits (Q, N) from support embeddings (S, D) with labels (S,) in [0, N) and query embeddings (Q, D)."""
        raise NotImplementedError

    def classify(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """Logits (Q, N) for query inputs given labelled support inputs."""
        return self.classify_embeddings(self.embed(support), support_labels, self.embed(query), ways)
