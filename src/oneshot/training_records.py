"""The records of a training run: what it is asked to do (:class:`TrainConfig`), where it stands (:class:`TrainState`,
saved for resume), what a progress callback is told (:class:`TrainProgress`) and what it did (:class:`TrainResult`).

The loop itself is :func:`oneshot.training.train`, which re-exports these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint's metadata).

    Attributes:
        episodes: total training episodes (batches).
        ways, shots, queries: training episode shape (Snell et al. train 1-shot models 60-way, 5 queries).
        lr: Adam learning rate; multiplied by ``lr_gamma`` every ``lr_step`` episodes.
        weight_decay: Adam weight decay.
        eval_every: episodes between validations.
        val_ways, val_shots, val_queries, val_episodes: validation episode shape and count.
        patience: stop after this many validations without improvement (0 = never).
        seed: fixes initialisation and every episode.
        val_seed: fixes validation episodes.
        device: auto, cpu or cuda.
        precision: auto, fp32 or bf16 (autocast).
        channels_last: channels-last memory layout for image batches.
        max_minutes: wall-clock budget for training in this invocation (validation excluded); 0 = none. When
            it runs out the loop validates once more, writes the resume state and stops, so a long run is a
            sequence of bounded invocations with ``resume=True`` (the weights follow the same path as an
            unbroken run; the extra validations add history entries and checkpoint candidates).
        resume_every: also write the resume state every this many steps (0: only at validations), bounding
            what a killed run loses.
        augment: :class:`~oneshot.data.augment.Augment` settings applied to every training batch (None: none);
            episode ``e``'s transformations are seeded by ``(seed, e)``, so resume stays exact.
        compile: ``torch.compile`` the encoder: auto (the per-device rules of
            :func:`oneshot.runtime.resolve_compile` and :func:`oneshot.step_graph.use_step_graph`), on, off,
            ``cuda-graphs`` or ``step-graph`` (the whole step as one CUDA graph).
        fold_batch_norm: run Conv-4's first convolution + batch norm as one folded convolution while training
            (the same function up to rounding): auto (the per-device rule of
            :func:`oneshot.runtime.resolve_fold_batch_norm`), on or off.
        fused_kernel: with the fold, run the first block's convolution + pooling + ReLU as one CPU kernel (the
            same function): auto (on for a CPU with AVX-512 where it builds;
            :func:`oneshot.runtime.resolve_fused_kernel`), on or off.
        threads: intra-op threads for this run (0: PyTorch's default, one per core).
        rotated_classes: train on each training class's four 90-degree rotations as four classes
            (:func:`oneshot.data.imageset.with_rotated_classes`); validation data is left as it is.
    """

    episodes: int = 20000
    ways: int = 60
    shots: int = 1
    queries: int = 5
    lr: float = 1e-3
    lr_step: int = 2000
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    eval_every: int = 500
    val_ways: int = 20
    val_shots: int = 1
    val_queries: int = 15
    val_episodes: int = 500
    patience: int = 0
    seed: int = 0
    val_seed: int = 1
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    max_minutes: float = 0.0
    resume_every: int = 0
    augment: dict[str, Any] | None = None
    compile: str = "auto"
    fold_batch_norm: str = "auto"
    fused_kernel: str = "auto"
    threads: int = 0
    rotated_classes: bool = False


@dataclass
class TrainResult:
    """What a training run did."""

    checkpoint: str
    best_val_accuracy: float
    best_val_ci95: float
    best_episode: int
    episodes_run: int
    stopped_early: bool
    train_seconds: float
    images_per_second: float
    episodes_per_second: float
    device: str
    precision: str
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the settings the run used (channels_last as resolved for the device)


@dataclass
class TrainState:
    """Where a run stands; saved in the resume file at every validation and restored from it.

    Attributes:
        episode: training steps done.
        best, best_ci, best_episode: the best validation accuracy (-1 before the first), its CI, and when.
        bad_evals: validations since the last improvement.
        history: one entry per validation (episode, val_accuracy, val_ci95, loss, train_accuracy).
        seconds, images: training time (validation excluded) and images seen.
        running_loss, running_accuracy: the running averages shown in progress (NaN before the first step).
    """

    episode: int = 0
    best: float = -1.0
    best_ci: float = 0.0
    best_episode: int = 0
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    running_loss: float = math.nan
    running_accuracy: float = math.nan

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class TrainProgress:
    """What a progress callback is told after every step.

    Attributes:
        episode: steps done.
        running_loss, running_accuracy: running averages (weight 0.95 on the past) of the training loss and of
            the accuracy of the step's query logits, as floats or (on a GPU) 0-d tensors not yet read back;
            ``loss`` and ``train_accuracy`` give them as floats.
        best_val: the best validation accuracy so far, -1 before the first validation.
    """

    episode: int
    running_loss: float | torch.Tensor
    running_accuracy: float | torch.Tensor
    best_val: float

    @property
    def loss(self) -> float:
        """The running loss (on a GPU, reading it waits for the step: a callback that skips it lets the GPU run on)."""
        return float(self.running_loss)

    @property
    def train_accuracy(self) -> float:
        return float(self.running_accuracy)


class RunningAverage:
    """Exponential moving average of a value (NaN before the first).

    Updates take a float or a 0-d float64 tensor; a tensor stays on its device until :attr:`value` is read,
    so a GPU step need not wait for the GPU to report its loss (float64 keeps the arithmetic a float's)."""

    def __init__(self, value: float = math.nan) -> None:
        self._value: float | torch.Tensor = value

    @property
    def latest(self) -> float | torch.Tensor:
        """The average as it stands, without waiting for a device (a float, or a 0-d tensor)."""
        return self._value

    @property
    def value(self) -> float:
        if isinstance(self._value, torch.Tensor):
            self._value = float(self._value)
        return self._value

    def update(self, x: float | torch.Tensor) -> None:
        fresh = isinstance(self._value, float) and math.isnan(self._value)
        self._value = x if fresh else 0.95 * self._value + 0.05 * x
