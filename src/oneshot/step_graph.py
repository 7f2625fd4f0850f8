"""A whole training step -- forward, loss, backward and the optimiser's update -- recorded once as one CUDA graph
and replayed for every later episode (``oneshot train --compile step-graph``, a GPU only).

Conv-4 on 28 x 28 Omniglot is launch-bound on a GPU: a 60-way 1-shot 5-query ProtoNet step is a few hundred
small kernels. ``--compile cuda-graphs`` replays the encoder's kernels from graphs (inductor's reduce-overhead
mode) but still launches the loss, the backward's glue and Adam's kernels one by one; here the whole step is
one graph launch. The recipe is PyTorch's "whole network capture" (``torch.cuda.graph``): a few eager warm-up
steps on a side stream, gradients set to None so that backward allocates them from the graph's memory pool,
and an optimiser built with ``capturable=True`` (its step counters live on the GPU).

A graph is fixed to its inputs' shapes and to the numbers it was recorded with, so it is recorded again when
the episode's shape or a parameter group's learning rate (the step schedule) changes. Only methods whose
training step neither reads the GPU back nor changes shape from episode to episode may be recorded
(``Method.graph_safe_step``: measured for ProtoNet); the others keep ``--compile cuda-graphs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput
from oneshot.runtime import compile_mode

__all__ = ["StepGraph", "check_step_graph", "use_step_graph"]

WARMUP_STEPS = 2  # eager steps on a side stream before recording (cuDNN / cuBLAS workspaces, optimiser state)


def check_step_graph(device: torch.device, method: object, distributed: bool) -> None:
    """Refuse ``--compile step-graph`` where it cannot run, with what to use instead (``method``: a method or its
    class)."""
    compile_mode("step-graph", device)  # the device check, shared with the other --compile choices
    if not getattr(method, "graph_safe_step", False):
        raise OneshotError(
            f"--compile step-graph: the {getattr(method, 'name', type(method).__name__)} training step cannot be "
            "recorded as one CUDA graph (it reads the GPU back or changes shape); use --compile cuda-graphs"
        )
    if distributed:
        raise OneshotError("--compile step-graph runs in one process; under torchrun use --compile cuda-graphs")


def use_step_graph(choice: str, device: torch.device, method: object, distributed: bool, precision: str) -> bool:
    """Whether the training loop records its step as one CUDA graph (``choice``: ``--compile``).

    ``step-graph``: yes, where it can run (else :func:`check_step_graph`'s error). ``auto``: on a GPU, for a
    graph-safe method in one process at fp32 -- the combination measured (2.47x the eager fp32 step, 18.5x easyfsl,
    on an H100; docs/training.md "On a GPU"); not under bf16 autocast, which was not recorded on a GPU. Else no.
    """
    if choice == "step-graph":
        check_step_graph(device, method, distributed)
        return True
    safe = bool(getattr(method, "graph_safe_step", False))
    return choice == "auto" and device.type == "cuda" and safe and not distributed and precision == "fp32"


def _tensor_fields(episode: Episode) -> list[str]:
    return [f.name for f in dataclasses.fields(episode) if isinstance(getattr(episode, f.name), torch.Tensor)]


class StepGraph:
    """Runs ``step(episode) -> LossOutput`` (which must zero nothing, back-propagate and update the optimiser)
    eagerly for the first :data:`WARMUP_STEPS` calls, then records it as one CUDA graph and replays it.

    Each call copies the episode's tensors into the graph's fixed input buffers and returns the graph's fixed
    outputs (read them before the next call). The optimiser's learning rates are read at every call: a change
    (a schedule's step) records the graph again, as does a change of the episode's shapes.
    """

    def __init__(
        self, step: Callable[[Episode], LossOutput], optimizer: torch.optim.Optimizer, warmup: int = WARMUP_STEPS
    ) -> None:
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self.calls = 0
        self.records = 0  # how many times a graph was recorded (tests, benchmarks)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._key: tuple | None = None
        self._inputs: Episode | None = None
        self._outputs: LossOutput | None = None

    def _episode_key(self, episode: Episode, names: list[str]) -> tuple:
        shapes = tuple((name, tuple(getattr(episode, name).shape)) for name in names)
        lrs = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        return shapes, episode.ways, episode.shots, episode.tasks, lrs

    def _eager(self, episode: Episode) -> LossOutput:
        """A warm-up step on a side stream, as the capture recipe asks."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            out = self.step(episode)
        torch.cuda.current_stream().wait_stream(side)
        # Detached: a caller holding the outputs must not keep this step's autograd graph (and its gradient
        # accumulators, made on the side stream) alive into the recording.
        return dataclasses.replace(out, loss=out.loss.detach(), logits=out.logits.detach())

    def _record(self, episode: Episode, key: tuple, names: list[str]) -> None:
        for group in self.optimizer.param_groups:
            group["capturable"] = True  # step counters on the GPU (also after a resume loaded eager groups)
        self._graph = None  # free the last graph's pool first
        inputs = dataclasses.replace(episode, **{n: getattr(episode, n).clone() for n in names})
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates the gradients from the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(inputs)
        self._graph, self._key, self._inputs, self._outputs = graph, key, inputs, outputs
        self.records += 1

    def __call__(self, episode: Episode) -> LossOutput:
        self.calls += 1
        if self.calls <= self.warmup:
            return self._eager(episode)
        names = _tensor_fields(episode)
        key = self._episode_key(episode, names)
        if self._graph is None or key != self._key:
            self._record(episode, key, names)  # recording runs nothing: the replay below is this step
        assert self._graph is not None and self._inputs is not None and self._outputs is not None
        for name in names:
            getattr(self._inputs, name).copy_(getattr(episode, name))
        self._graph.replay()
        return self._outputs
