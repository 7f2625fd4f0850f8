"""Shared machinery of the optimisation-based meta-learners (MAML, first-order MAML, Reptile).

* :class:`MetaBatchSampler` yields T seeded episodes per training step, concatenated task-major (all supports
  of the T tasks, then all queries), which the training loop turns into one :class:`Episode` with
  ``tasks = T`` (see ``Episode.tasks``).
* :class:`FastWeightMethod` runs an encoder plus a linear N-way head *functionally*
  (``torch.func.functional_call``) on a dict of "fast weights", so the same module can be adapted per task
  without touching its parameters, and differentiated through the adaptation (``torch.func.grad``).

Batch norm follows Finn et al. (2017): every forward pass normalises with the statistics of the batch it
is given (the task's support set in the inner loop, the task's query set in the outer loop and at test time);
no running statistics are kept, so train and eval modes compute the same function.

The head. Finn et al. meta-learn an (N, D) head for a fixed N. ``head="learned"`` does that (``ways`` rows;
an episode with fewer ways uses the first N rows, more ways is an error). ``head="zero"`` (the default) starts
every task from a zero head instead (the "zero trick" of Kao et al., "MAML is a Noisy Contrastive Learner in
Classification", ICLR 2022): the head is then not a meta-parameter, the classifier is permutation invariant,
and one checkpoint adapts to any number of ways -- which is what lets one model be evaluated at 5 and 20 ways.

Meta-training runs the T tasks of a meta-batch through one per-task function (``map_tasks``), either one
task after another (``task_batch="loop"``) or all at once with ``torch.func.vmap`` over tasks (``"vmap"``), each
task with its own fast weights and batch statistics; both give the same loss and meta-gradients up to float
rounding. ``"auto"`` (the default) picks vmap on CUDA and the loop on the CPU
(:data:`~oneshot.methods.task_batch.AUTO_VMAP_ON_CPU`) (``benchmarks/meta_memory.py`` measures both); see
:mod:`oneshot.methods.task_batch`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from oneshot.choices import check_choice
from oneshot.data.imageset import ImageSet
from oneshot.data.samplers import EpisodeIndices, EpisodeSampler, IndexSampler
from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, Method, TrainShape
from oneshot.methods.task_batch import TASK_BATCHES, uses_vmap

FastWeights = dict[str, torch.Tensor]

HEADS = ("zero", "learned")


class MetaBatchSampler:
    """T seeded N-way K-shot episodes per step, concatenated task-major.

    Step ``b`` holds episodes ``b*T .. b*T+T-1`` of an :class:`EpisodeSampler` with the same seed, so steps
    are reproducible on their own and resume is exact.

    Args:
        base: the episode sampler (its ``episodes`` and ``start`` count meta-batches, not tasks).
        tasks: T, tasks per meta-batch.
    """

    def __init__(self, base: EpisodeSampler, tasks: int) -> None:
        if tasks < 1:
            raise OneshotError(f"meta-batch size must be >= 1 (got {tasks})")  # ``tasks``: see IndexSampler
        self.base, self.tasks = base, tasks

    def __len__(self) -> int:
        return len(self.base)

    def step(self, b: int) -> EpisodeIndices:
        """Meta-batch ``b``: support (T*N*K,), query (T*N*Q,), classes (T*N,)."""
        eps = [self.base.episode(b * self.tasks + t) for t in range(self.tasks)]
        return EpisodeIndices(
            support=np.concatenate([e.support for e in eps]),
            query=np.concatenate([e.query for e in eps]),
            classes=np.concatenate([e.classes for e in eps]),
        )

    def __iter__(self) -> Iterator[EpisodeIndices]:
        for b in range(self.base.start, self.base.episodes):
            yield self.step(b)


def sgd_step(fast: FastWeights, grads: FastWeights, lr: float) -> FastWeights:
    """phi - lr * g for every fast weight (out of place, so it stays differentiable)."""
    return {k: fast[k] - lr * grads[k] for k in fast}


class FastWeightMethod(Method):
    """An encoder plus a linear head, run functionally on fast weights (base of MAML and Reptile).

    Args:
        encoder: any ``(B, C, H, W) -> (B, D)`` module; its batch norms are switched to batch statistics.
        head: ``zero`` (a zero (N, D) head at the start of every task) or ``learned`` (meta-learned rows).
        ways: rows of the learned head (the largest N it serves); unused by the zero head.
        embedding_dim: D, needed to build the learned head.
        meta_batch: T, tasks per training step.
        task_batch: how a meta-batch's tasks are adapted in training: ``vmap`` (all at once), ``loop`` (one after
            another) or ``auto`` (vmap on CUDA, the loop on the CPU); same result up to rounding.
    """

    embeds_independently = False

    def __init__(
        self,
        encoder: nn.Module,
        head: str = "zero",
        ways: int = 5,
        embedding_dim: int = 64,
        meta_batch: int = 1,
        task_batch: str = "auto",
    ) -> None:
        super().__init__(encoder)
        check_choice(self.name, "head", head, HEADS)
        self.task_batch = check_choice(self.name, "task batching", task_batch, TASK_BATCHES)
        replace_all_batch_norm_modules_(self.encoder)
        self.head_kind, self.ways, self.embedding_dim, self.meta_batch = head, int(ways), int(embedding_dim), int(meta_batch)
        if head == "learned":
            self.head = nn.Linear(self.embedding_dim, self.ways)
            nn.init.zeros_(self.head.bias)

    def options(self) -> dict[str, Any]:
        return {
            "head": self.head_kind,
            "ways": self.ways,
            "embedding_dim": self.embedding_dim,
            "meta_batch": self.meta_batch,
            "task_batch": self.task_batch,
        }

    def batches_tasks(self, episode: Episode) -> bool:
        """Whether :meth:`loss` adapts this episode's tasks at once (vmap) rather than one by one (``task_batch``)."""
        return uses_vmap(self.task_batch, episode)

    def training_sampler(self, data: ImageSet, shape: TrainShape, episodes: int, seed: int, start: int) -> IndexSampler:
        base = EpisodeSampler(data.class_indices, shape.ways, shape.shots, shape.queries, episodes, seed, start)
        return base if self.meta_batch == 1 else MetaBatchSampler(base, self.meta_batch)

    def meta_parameters(self) -> FastWeights:
        """The parameters the outer loop learns, by name (encoder, and the head when learned)."""
        return dict(self.named_parameters())

    def initial_fast_weights(self, params: FastWeights, ways: int, like: torch.Tensor) -> FastWeights:
        """Fast weights at the start of a task: ``params`` plus a zero (N, D) head, or the first N learned rows."""
        fast = {k: v for k, v in params.items() if not k.startswith("head.")}
        if self.head_kind == "zero":
            dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
            fast["head.weight"] = torch.zeros(ways, self.embedding_dim, dtype=dtype, device=like.device)
            fast["head.bias"] = torch.zeros(ways, dtype=dtype, device=like.device)
        else:
            if ways > self.ways:
                raise OneshotError(
                    f"this model's head has {self.ways} outputs: it cannot classify {ways}-way episodes (train with --method-option ways={ways})"
                )
            fast["head.weight"] = params["head.weight"][:ways]
            fast["head.bias"] = params["head.bias"][:ways]
        return fast

    def functional_logits(self, fast: FastWeights, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) inputs -> (B, N) logits with the fast weights (batch norm on this batch's statistics)."""
        enc = {k[len("encoder.") :]: v for k, v in fast.items() if k.startswith("encoder.")}
        z = functional_call(self.encoder, enc, (x,)).flatten(1)
        if z.dtype not in (torch.float32, torch.float64):
            z = z.float()  # low-precision autocast output: the head runs in fp32
        if z.shape[1] != fast["head.weight"].shape[1]:
            raise OneshotError(
                f"the encoder gives {z.shape[1]}-d embeddings but the head expects {fast['head.weight'].shape[1]}: set --method-option embedding_dim={z.shape[1]}"
            )
        return F.linear(z, fast["head.weight"], fast["head.bias"])

    def task_loss(self, fast: FastWeights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the fast-weight model on (x, y)."""
        return F.cross_entropy(self.functional_logits(fast, x), y)

    def test_adapt(self, params: FastWeights, x: torch.Tensor, y: torch.Tensor, ways: int) -> FastWeights:
        """Fast weights adapted for testing on a support set (x (S, C, H, W), y (S,)); no graph to ``params``."""
        raise NotImplementedError

    def classify(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """Adapt on the support set (:meth:`test_adapt`), then logits (Q, N) of the query set."""
        params = {k: v.detach() for k, v in self.meta_parameters().items()}
        with torch.enable_grad():
            fast = self.test_adapt(params, support, support_labels, ways)
        with torch.no_grad():
            return self.functional_logits({k: v.detach() for k, v in fast.items()}, query)

    def classify_tasks(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """:meth:`classify` for E episodes of one shape: support (E, S, C, H, W), labels (S,), query (E, Q, C, H, W)
        -> logits (E, Q, N). The adaptations run at once (``torch.func.vmap`` over the episodes, each with its own
        fast weights and batch statistics), where one episode's small support batches leave the machine idle;
        the query passes run one episode at a time, as plain batched convolutions (per-episode weights under
        ``vmap`` would become grouped convolutions, slower on CPU)."""
        params = {k: v.detach() for k, v in self.meta_parameters().items()}

        def adapt(xs: torch.Tensor) -> FastWeights:
            return {k: v.detach() for k, v in self.test_adapt(params, xs, support_labels, ways).items()}

        with torch.enable_grad():
            fast = vmap(adapt)(support)
        with torch.no_grad():
            return torch.stack([self.functional_logits({k: v[e] for k, v in fast.items()}, q) for e, q in enumerate(query)])
