"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv:1803.02999, 2018).

For each task i of a meta-batch, Reptile copies the meta-parameters (phi_i = theta), trains phi_i with
``inner_steps`` steps of SGD or Adam on the task's data, and moves theta towards the adapted weights::

    theta <- theta + epsilon * (1/T) sum_i (phi_i - theta)

How it fits the one training loop. The loop only calls ``loss`` and back-propagates, so ``loss`` returns the
surrogate ``(1/T) sum_i 0.5 * ||theta - stopgrad(phi_i)||^2``, whose gradient w.r.t. theta is exactly the
Reptile direction ``(1/T) sum_i (theta - phi_i)`` (under ``torchrun`` the ranks' gradients are averaged, so it
is the mean over the whole meta-batch). The outer update (``outer``):

* ``sgd`` (the default, the paper's Omniglot and Mini-ImageNet setting): Reptile gives the loop its own optimiser
  (:meth:`Reptile.outer_optimizer`), plain SGD whose step size epsilon is annealed linearly from ``outer_lr``
  (1.0) to 0 over the run's episodes: step ``i`` (0-based) of ``n`` uses ``outer_lr * (1 - i/n)``, as
  ``frac_done`` in the authors' code, so ``theta <- theta + epsilon_i (mean phi_i - theta)``. The run's
  ``--lr``, ``--lr-step``, ``--lr-gamma`` and ``--weight-decay`` do not apply.
* ``adam``: the loop's Adam (``--lr`` with its step schedule) treats ``theta - mean phi_i`` as a gradient,
  which Nichol et al. mention as an option (section 3). A checkpoint written before ``outer`` existed means
  this (:attr:`Reptile.legacy_options`).

The inner loop trains on the task's support and query images together during meta-training (Nichol et al.
train on all ``train_shots`` examples of each class; ``train_on_query=False`` uses the support set only) and
on the support set at test time, for ``test_steps`` steps. Each meta-training inner step sees all of the task's
images (``inner_batch=0``) or a mini-batch of ``inner_batch`` of them, as Nichol et al. (Omniglot 5-way: 10 shots
per class, mini-batches of 10, 5 steps, i.e. one pass): the mini-batches are class-balanced (``inner_batch / N``
images of every class) and walk through each class's images in order, cyclically (:func:`minibatch_schedule`),
so they are fixed by the episode's shape -- no random draw, identical under ``vmap`` and on resume. Adaptation at
test time uses the whole support set every step (``test_batch=0``) or, as Nichol et al. evaluate (``eval-batch`` 5
at 5 ways, 10 at 20 ways, 50 steps), mini-batches of ``test_batch`` support images that take the classes in turn
(:func:`support_batches`): a 20-way 5-shot adaptation step then costs 10 images instead of 100. Batch norm uses each
batch's statistics (the paper's transductive setting) and the head is zero-initialised per task by default: see
:mod:`oneshot.methods.meta`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import grad

from oneshot.choices import check_choice
from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput
from oneshot.methods.meta import FastWeightMethod, FastWeights, sgd_step
from oneshot.methods.task_batch import map_tasks

INNER_OPTIMIZERS = ("sgd", "adam")
OUTER_UPDATES = ("sgd", "adam")


def annealed(episodes: int) -> Callable[[int], float]:
    """The factor of the outer step after ``i`` steps of a run of ``episodes``: ``1 - i/episodes``, 0 from the end on."""
    n = max(1, int(episodes))
    return lambda i: max(0.0, 1.0 - i / n)


def minibatch_schedule(ways: int, shots: int, queries: int, batch: int, steps: int) -> list[torch.Tensor]:
    """The index tensors, one per inner step, of class-balanced mini-batches of a task's training images.

    The images are a task's support (N*K, class-major) followed, when ``queries`` > 0, by its query (N*Q,
    class-major); class c owns ``L = K + Q`` of them. Step s takes images ``(s*m + j) mod L`` (j < m, m =
    ``batch / N``) of every class, so consecutive steps walk through each class's images and ``L / m`` steps
    are one pass. Returns ``steps`` int64 tensors of shape (batch,).
    """
    if batch < ways or batch % ways:
        raise OneshotError(f"reptile: inner_batch must be a multiple of the ways ({ways}), got {batch}")
    per_class = [
        [c * shots + k for k in range(shots)] + [ways * shots + c * queries + q for q in range(queries)] for c in range(ways)
    ]
    m, size = batch // ways, shots + queries
    return [torch.tensor([per_class[c][(s * m + j) % size] for c in range(ways) for j in range(m)]) for s in range(steps)]


def support_batches(labels: torch.Tensor, batch: int, steps: int) -> list[torch.Tensor] | None:
    """Test-time mini-batches of a support set (Nichol et al.'s ``eval-batch``): index tensors (batch,), one per step.

    The support images are dealt round-robin over the classes (the first image of every class, then the second,
    ...), whatever their order in ``labels`` (S,), and step s takes positions ``s*batch .. s*batch + batch - 1`` of
    that deal, cyclically. So ``S / batch`` steps are one pass over the support set; a batch that is a multiple
    of the ways holds ``batch / N`` images of every class (the same images :func:`minibatch_schedule` picks), a
    smaller one takes the classes in turn. None when ``batch`` is 0 or covers the whole support set.
    """
    total = int(labels.numel())
    if batch < 0:
        raise OneshotError(f"reptile: test_batch must be >= 0 (0: the whole support set each step), got {batch}")
    if batch == 0 or batch >= total:
        return None
    rows = labels.tolist()
    per_class = [[i for i, c in enumerate(rows) if c == label] for label in sorted(set(rows))]
    deal = [images[k] for k in range(max(map(len, per_class))) for images in per_class if k < len(images)]
    return [torch.tensor([deal[(s * batch + j) % total] for j in range(batch)]) for s in range(steps)]


def inner_train(
    fast: FastWeights,
    loss_fn: Callable[[FastWeights, int], torch.Tensor],
    steps: int,
    lr: float,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.0, 0.999),
    eps: float = 1e-8,
) -> FastWeights:
    """``steps`` steps of SGD or Adam on ``loss_fn(fast, step)`` from ``fast`` (detached: no graph to theta is kept).

    Adam is written out (Kingma & Ba 2015, with bias correction); Nichol et al. use beta1 = 0 in the inner loop.
    """
    check_choice("reptile", "inner optimizer", optimizer, INNER_OPTIMIZERS)
    fast = {k: v.detach() for k, v in fast.items()}
    m = {k: torch.zeros_like(v) for k, v in fast.items()}
    v2 = {k: torch.zeros_like(v) for k, v in fast.items()}
    b1, b2 = betas
    for t in range(1, steps + 1):
        g = {k: v.detach() for k, v in grad(loss_fn)(fast, t - 1).items()}
        if optimizer == "sgd":
            fast = sgd_step(fast, g, lr)
            continue
        for k in fast:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] * g[k]
            step = lr * (m[k] / (1 - b1**t)) / ((v2[k] / (1 - b2**t)).sqrt() + eps)
            fast[k] = fast[k] - step
    return fast


def reptile_surrogate(params: FastWeights, adapted: list[FastWeights]) -> torch.Tensor:
    """(1/T) sum_i 0.5 * ||theta - stopgrad(phi_i)||^2 over the parameters in ``params`` (its gradient is theta - mean phi)."""
    first = next(iter(params.values()))
    dtype = torch.promote_types(first.dtype, torch.float32)  # at least fp32, even under autocast
    total = torch.zeros((), device=first.device, dtype=dtype)
    for phi in adapted:
        for k, theta in params.items():
            total = total + 0.5 * (theta.to(dtype) - phi[k].detach().to(dtype)).pow(2).sum()
    return total / len(adapted)


class Reptile(FastWeightMethod):
    """Reptile on any encoder plus a linear N-way head.

    Args:
        encoder: ``(B, C, H, W) -> (B, D)``.
        inner_steps: inner optimisation steps per task during meta-training (Nichol et al.: 5 on Omniglot).
        inner_lr: inner learning rate (Nichol et al.: Adam, 0.001).
        inner_optimizer: ``adam`` (beta1 = 0, as in the paper) or ``sgd``.
        meta_batch: T, tasks per outer step (Nichol et al.: 5).
        test_steps: adaptation steps at evaluation (Nichol et al.: 50).
        test_batch: support images per adaptation step at evaluation, the classes taken in turn (Nichol et al.:
            5 at 5 ways, 10 at 20 ways); 0 (the default) uses the whole support set every step.
        train_on_query: use the task's query images as inner training data too during meta-training.
        inner_batch: images per meta-training inner step, a multiple of the ways (Nichol et al.: 10 at 5 ways,
            20 at 20 ways); 0 (the default) uses all of the task's training images every step.
        outer: ``sgd`` (the outer step ``outer_lr`` annealed linearly to 0 over the run, as the paper) or ``adam``
            (the training loop's Adam on theta - mean phi_i; what checkpoints without this option used).
        outer_lr: the initial outer step size epsilon of ``outer=sgd`` (Nichol et al.: 1.0); unused by ``adam``.
        head, ways, embedding_dim, task_batch: see :class:`~oneshot.methods.meta.FastWeightMethod`.
    """

    name = "reptile"
    legacy_options = {"outer": "adam"}

    def __init__(
        self,
        encoder: nn.Module,
        inner_steps: int = 5,
        inner_lr: float = 1e-3,
        inner_optimizer: str = "adam",
        meta_batch: int = 5,
        test_steps: int = 50,
        train_on_query: bool = True,
        outer: str = "sgd",
        outer_lr: float = 1.0,
        head: str = "zero",
        ways: int = 5,
        embedding_dim: int = 64,
        task_batch: str = "auto",
        inner_batch: int = 0,
        test_batch: int = 0,
    ) -> None:
        super().__init__(encoder, head, ways, embedding_dim, meta_batch, task_batch)
        if int(inner_batch) < 0:
            raise OneshotError(f"reptile: inner_batch must be >= 0 (0: every image each step), got {inner_batch}")
        self.inner_batch = int(inner_batch)
        if int(test_batch) < 0:
            raise OneshotError(f"reptile: test_batch must be >= 0 (0: the whole support set each step), got {test_batch}")
        self.test_batch = int(test_batch)
        check_choice(self.name, "inner optimizer", inner_optimizer, INNER_OPTIMIZERS)
        self.inner_steps, self.inner_lr, self.test_steps = int(inner_steps), float(inner_lr), int(test_steps)
        self.inner_optimizer, self.train_on_query = inner_optimizer, bool(train_on_query)
        self.outer, self.outer_lr = check_choice(self.name, "outer update", outer, OUTER_UPDATES), float(outer_lr)

    def options(self) -> dict[str, Any]:
        return dict(
            super().options(),
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            inner_optimizer=self.inner_optimizer,
            test_steps=self.test_steps,
            train_on_query=self.train_on_query,
            outer=self.outer,
            outer_lr=self.outer_lr,
            inner_batch=self.inner_batch,
            test_batch=self.test_batch,
        )

    def outer_optimizer(self, episodes: int) -> tuple[torch.optim.Optimizer, Any] | None:
        """``outer=sgd``: SGD at ``outer_lr``, annealed linearly to 0 over ``episodes`` steps (a ``LambdaLR``, so
        resume restores its position); ``adam``: None (the loop's Adam)."""
        if self.outer != "sgd":
            return None
        opt = torch.optim.SGD(self.parameters(), lr=self.outer_lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, annealed(episodes))

    def adapt(
        self,
        params: FastWeights,
        x: torch.Tensor,
        y: torch.Tensor,
        ways: int,
        steps: int,
        schedule: list[torch.Tensor] | None = None,
    ) -> FastWeights:
        """phi after ``steps`` inner steps on (x (S, C, H, W), y (S,)), starting from ``params`` (detached); step t
        uses the images ``schedule[t]`` (B,) when a schedule is given, else all S."""

        def loss(w: FastWeights, t: int) -> torch.Tensor:
            if schedule is None:
                return self.task_loss(w, x, y)
            return self.task_loss(w, x[schedule[t]], y[schedule[t]])

        fast = self.initial_fast_weights({k: v.detach() for k, v in params.items()}, ways, x)
        return inner_train(fast, loss, steps, self.inner_lr, self.inner_optimizer)

    def loss(self, episode: Episode) -> LossOutput:
        """The Reptile surrogate over the T tasks (gradient theta - mean phi_i; tasks one by one or under vmap, see
        ``task_batch``); logits (T*N*Q, N) of the adapted models."""
        params = self.meta_parameters()
        schedule = None
        if self.inner_batch:
            tasks_support, tasks_query = episode.support.shape[0] // episode.tasks, episode.query.shape[0] // episode.tasks
            shots, queries = tasks_support // episode.ways, (tasks_query // episode.ways if self.train_on_query else 0)
            schedule = minibatch_schedule(episode.ways, shots, queries, self.inner_batch, self.inner_steps)

        def task(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> tuple[FastWeights, torch.Tensor]:
            """One task: support (N*K, C, H, W), (N*K,); query (N*Q, C, H, W), (N*Q,) -> phi (detached), logits (N*Q, N)."""
            x, y = (torch.cat([xs, xq]), torch.cat([ys, yq])) if self.train_on_query else (xs, ys)
            phi = self.adapt(params, x, y, episode.ways, self.inner_steps, schedule)
            with torch.no_grad():
                return phi, self.functional_logits(phi, xq)

        adapted, logits = map_tasks(task, episode, self.batches_tasks(episode))
        phis = [{k: v[t] for k, v in adapted.items()} for t in range(episode.tasks)]
        return LossOutput(reptile_surrogate(params, phis), logits.flatten(0, 1))

    def test_adapt(self, params: FastWeights, x: torch.Tensor, y: torch.Tensor, ways: int) -> FastWeights:
        """``test_steps`` inner steps on the support set, all of it each step or mini-batches of ``test_batch``."""
        return self.adapt(params, x, y, ways, self.test_steps, support_batches(y, self.test_batch, self.test_steps))
