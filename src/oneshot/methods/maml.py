"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
Deep Networks", ICML 2017) and its first-order approximation (same paper, section 5.2).

For each task i of a meta-batch, the inner loop adapts the meta-parameters theta on the task's support set
with ``inner_steps`` plain gradient steps::

    phi_i^0 = theta,   phi_i^{s+1} = phi_i^s - alpha * grad_phi L_support(phi_i^s)

and the outer loss is the mean query loss of the adapted weights, ``(1/T) sum_i L_query(phi_i)``, which the
training loop differentiates w.r.t. theta and hands to Adam (the meta learning rate beta is ``--lr``).

* Second order (``first_order=False``, MAML): the inner gradients are computed with ``torch.func.grad`` on
  fast weights that still depend on theta, so the outer backward pass differentiates through them
  (Hessian-vector products: d phi / d theta = prod_s (I - alpha * H_s)).
* First order (``first_order=True``, FOMAML): the inner gradients are computed on detached fast weights and
  treated as constants, so d phi / d theta = I and the meta-gradient is the query gradient at phi.

At test time (``classify``) the model adapts on the support set with ``test_steps`` steps (no graph kept) and
classifies the query set. Batch norm and the head: see :mod:`oneshot.methods.meta`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import grad

from oneshot.methods.base import Episode, LossOutput
from oneshot.methods.meta import FastWeightMethod, FastWeights, sgd_step
from oneshot.methods.task_batch import map_tasks


class MAML(FastWeightMethod):
    """MAML on any encoder plus a linear N-way head.

    Args:
        encoder: ``(B, C, H, W) -> (B, D)``.
        inner_steps: gradient steps on the support set during meta-training (Finn et al.: 1 for 5-way, 5 for 20-way Omniglot).
        inner_lr: alpha, the inner step size (0.4 for 5-way, 0.1 for 20-way Omniglot).
        meta_batch: T, tasks per outer step (32 for 5-way, 16 for 20-way Omniglot).
        test_steps: adaptation steps at evaluation (Finn et al. use 3 on Omniglot).
        first_order: drop the second-order term (first-order MAML).
        head, ways, embedding_dim, task_batch: see :class:`~oneshot.methods.meta.FastWeightMethod`.
    """

    name = "maml"
    default_first_order = False

    def __init__(
        self,
        encoder: nn.Module,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        meta_batch: int = 32,
        test_steps: int = 3,
        first_order: bool | None = None,
        head: str = "zero",
        ways: int = 5,
        embedding_dim: int = 64,
        task_batch: str = "auto",
    ) -> None:
        super().__init__(encoder, head, ways, embedding_dim, meta_batch, task_batch)
        self.inner_steps, self.inner_lr, self.test_steps = int(inner_steps), float(inner_lr), int(test_steps)
        self.first_order = self.default_first_order if first_order is None else bool(first_order)

    def options(self) -> dict[str, Any]:
        return dict(
            super().options(),
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            test_steps=self.test_steps,
            first_order=self.first_order,
        )

    def adapt(
        self, params: FastWeights, x: torch.Tensor, y: torch.Tensor, ways: int, steps: int, second_order: bool
    ) -> FastWeights:
        """Fast weights after ``steps`` SGD steps of size ``inner_lr`` on the support set (x (S, C, H, W), y (S,)).

        With ``second_order`` the returned weights are differentiable functions of ``params`` through the
        inner gradients; otherwise each inner gradient is a constant (computed on detached weights).
        """
        fast = self.initial_fast_weights(params, ways, x)
        loss_fn = lambda w: self.task_loss(w, x, y)  # noqa: E731
        for _ in range(steps):
            if second_order:
                g = grad(loss_fn)(fast)
            else:
                g = grad(loss_fn)({k: v.detach() for k, v in fast.items()})
            fast = sgd_step(fast, g, self.inner_lr)
        return fast

    def loss(self, episode: Episode) -> LossOutput:
        """Mean query loss over the T tasks after inner adaptation (tasks one by one or under vmap, see
        ``task_batch``); logits (T*N*Q, N)."""
        params = self.meta_parameters()

        def task(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """One task: support (N*K, C, H, W), (N*K,); query (N*Q, C, H, W), (N*Q,) -> query loss (), logits (N*Q, N)."""
            fast = self.adapt(params, xs, ys, episode.ways, self.inner_steps, second_order=not self.first_order)
            out = self.functional_logits(fast, xq)
            return torch.nn.functional.cross_entropy(out, yq), out

        losses, logits = map_tasks(task, episode, self.batches_tasks(episode))
        return LossOutput(losses.mean(), logits.detach().flatten(0, 1))

    def test_adapt(self, params: FastWeights, x: torch.Tensor, y: torch.Tensor, ways: int) -> FastWeights:
        """``test_steps`` first-order steps on the support set (the gradient needs no graph to ``params``)."""
        return self.adapt(params, x, y, ways, self.test_steps, second_order=False)


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, section 5.2): MAML with ``first_order=True`` by default."""

    name = "fomaml"
    default_first_order = True
