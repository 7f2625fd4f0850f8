"""The tasks of a meta-batch, one after another or all at once (``torch.func.vmap`` over tasks).

A meta-training episode stacks T tasks task-major (``Episode.tasks``). :func:`map_tasks` runs one task's
function -- inner adaptation on functional fast weights, then the query pass -- for every task, either in a
Python loop (:func:`split_tasks`) or under ``torch.func.vmap`` (:func:`stack_tasks`), where each task keeps its
own fast weights and batch-norm statistics and the per-task weights become batched (grouped) convolutions.
Both give the same loss and meta-gradients up to float rounding (tests/test_task_batch.py).

One correction under vmap. ``F.batch_norm`` with an affine weight that is itself batched (a fast weight after the
first inner step) gives wrong second-order gradients under ``vmap`` (torch 2.13: the meta-gradient of the layers
*before* the norm is off by ~0.3% in float64, a nonzero gradient even for a bias that batch norm cancels).
Normalising without the affine and applying ``y * weight + bias`` as separate ops is exact, so the batched path
runs under :class:`SplitAffineBatchNorm`; the loop keeps the fused call (bit-identical to earlier releases).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from oneshot.methods.base import Episode

TASK_BATCHES = ("auto", "vmap", "loop")
#: What ``task_batch="auto"`` chooses on the CPU. Measured by ``benchmarks/meta_memory.py`` (docs/methods.md): on
#: one thread vmap was as fast as the loop at 5 ways and 2x slower at 20 ways (5 inner steps on per-task weights,
#: i.e. grouped convolutions), with twice the memory; so the loop.
AUTO_VMAP_ON_CPU = False

Tasks = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def uses_vmap(task_batch: str, episode: Episode) -> bool:
    """Whether ``task_batch`` (one of :data:`TASK_BATCHES`) adapts this episode's tasks at once: never for one task,
    always for ``vmap``, and for ``auto`` on an accelerator (on the CPU when :data:`AUTO_VMAP_ON_CPU`)."""
    if episode.tasks < 2 or task_batch == "loop":
        return False
    return task_batch == "vmap" or episode.support.device.type != "cpu" or AUTO_VMAP_ON_CPU


def split_tasks(episode: Episode) -> Iterator[Tasks]:
    """The T tasks of a (meta-batch) episode: (support (N*K, ...), labels (N*K,), query (N*Q, ...), labels (N*Q,))."""
    ns = episode.support.shape[0] // episode.tasks
    nq = episode.query.shape[0] // episode.tasks
    for t in range(episode.tasks):
        yield (
            episode.support[t * ns : (t + 1) * ns],
            episode.support_labels[t * ns : (t + 1) * ns],
            episode.query[t * nq : (t + 1) * nq],
            episode.query_labels[t * nq : (t + 1) * nq],
        )


def stack_tasks(episode: Episode) -> Tasks:
    """The T tasks stacked: support (T, N*K, ...), labels (T, N*K), query (T, N*Q, ...), labels (T, N*Q)."""
    t = episode.tasks
    s, sl, q, ql = (
        x.unflatten(0, (t, x.shape[0] // t))
        for x in (episode.support, episode.support_labels, episode.query, episode.query_labels)
    )
    return s, sl, q, ql


class SplitAffineBatchNorm(TorchFunctionMode):
    """Within this mode ``F.batch_norm(x, ..., weight, bias, ...)`` runs as ``F.batch_norm(x, ..., None, None, ...)``
    followed by ``* weight + bias`` broadcast over channel dim 1 (x (B, C, ...)): the same function, with
    second-order gradients that are right under ``vmap`` (see the module docstring)."""

    signature = inspect.signature(F.batch_norm)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is not F.batch_norm:
            return func(*args, **(kwargs or {}))
        call = self.signature.bind(*args, **(kwargs or {}))
        call.apply_defaults()
        a = dict(call.arguments)
        weight, bias = a.pop("weight"), a.pop("bias")
        y = F.batch_norm(**a)
        shape = (1, -1) + (1,) * (y.dim() - 2)
        if weight is not None:
            y = y * weight.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        return y


def map_tasks(fn: Callable[..., Any], episode: Episode, batched: bool) -> Any:
    """``fn(support, support_labels, query, query_labels)`` of one task (shapes as :func:`split_tasks`) for every
    task of ``episode``; the outputs (a tensor or a pytree of tensors) stacked on a new leading T dimension.

    ``batched``: all tasks at once through ``torch.func.vmap`` (``fn`` must be vmap-able: functional fast weights,
    no in-place updates of captured tensors, no ``.item()``), under :class:`SplitAffineBatchNorm`; else one task
    after another, then ``torch.stack``.
    """
    if batched:
        with SplitAffineBatchNorm():
            return vmap(fn)(*stack_tasks(episode))
    outs = [fn(*task) for task in split_tasks(episode)]
    return tree_map(lambda *xs: torch.stack(xs), outs[0], *outs[1:])
