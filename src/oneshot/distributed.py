"""Data-parallel training over processes with PyTorch's own engine (``torchrun``, DistributedDataParallel).

``torchrun --nproc-per-node N -m oneshot train ...`` starts N processes with ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` set; :func:`setup` joins them into one process group (gloo on CPU, NCCL on CUDA, one GPU per
process). Every step's T tasks (a meta-batch, see ``Episode.tasks``) are split across the N ranks, T/N each;
each rank's loss is the mean over its own tasks and DistributedDataParallel averages the gradients, so the
update is the one a single process computes on the whole meta-batch (up to float summation order). The
logged loss and accuracy are averaged over ranks. Only rank 0 validates and writes checkpoints and resume
files; its validation state is broadcast so every rank stops together.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method
from oneshot.runtime import select_device

T = TypeVar("T")


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed).

    Attributes:
        rank, world: this process's rank and the number of processes.
        owned: :func:`setup` created the process group (and :meth:`close` destroys it).
    """

    rank: int = 0
    world: int = 1
    owned: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes files."""
        return self.rank == 0

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def launched_rank() -> int:
    """This process's rank as ``torchrun`` announces it (``RANK``; 0 when not launched by torchrun).

    Readable before the process group exists, so the command line can keep every rank but 0 quiet."""
    return int(os.environ.get("RANK", "0"))


def setup(device_name: str) -> tuple[Parallel, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1; the process's device (``cuda:LOCAL_RANK`` on GPUs)."""
    device = select_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return Parallel(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:  # validation runs on rank 0 while the others wait: a long timeout
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=6))
    return Parallel(dist.get_rank(), dist.get_world_size(), owned), device


def check_tasks(tasks: int, par: Parallel) -> None:
    """Refuse a step that cannot be split evenly across the ranks."""
    if tasks % par.world:
        raise OneshotError(
            f"data-parallel training splits each step's tasks across processes, but a step holds {tasks} task(s) "
            f"for {par.world} processes: use a meta-learning method with -o meta_batch=<a multiple of {par.world}>"
        )


def shard_tasks(x: T, tasks: int, par: Parallel) -> T:
    """This rank's T/N tasks of a task-major batch ``x`` (tensor or array, (T*R, ...) -> (T/N*R, ...))."""
    rows = len(x) // tasks  # type: ignore[arg-type]
    k = tasks // par.world
    return x[par.rank * k * rows : (par.rank + 1) * k * rows]  # type: ignore[index]


def mean_over_ranks(values: list[float], par: Parallel, device: torch.device) -> list[float]:
    """The mean of each value over the ranks (the values themselves when not distributed)."""
    if not par.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / par.world).tolist()


def from_main(obj: Any, par: Parallel) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable value)."""
    if not par.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_equal(value: Any, par: Parallel) -> bool:
    """Whether every rank holds the same ``value``."""
    if not par.active:
        return True
    values: list[Any] = [None] * par.world
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


class _LossModule(nn.Module):
    """``forward(episode) = method.loss(episode)``: the module DistributedDataParallel wraps."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = self.method.loss(episode)
        return out.loss, out.logits, out.labels


def loss_function(method: Method, par: Parallel) -> Any:
    """``episode -> LossOutput``: ``method.loss`` itself, or through DistributedDataParallel (which
    broadcasts rank 0's weights now and averages gradients in every backward pass)."""
    if not par.active:
        return method.loss
    # Channels-last 1-channel convolution weights: the gradient's stride of the size-1 dimension differs from
    # the bucket's, which is the same memory layout; DDP warns on every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ddp = nn.parallel.DistributedDataParallel(_LossModule(method), device_ids=None)

    def run(episode: Episode) -> LossOutput:
        loss, logits, labels = ddp(episode)
        return LossOutput(loss, logits, labels)

    return run
