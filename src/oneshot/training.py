"""The one training loop that serves every method.

Adam with a step learning-rate schedule (or the optimiser a method prescribes, ``Method.outer_optimizer``), validation episodes every ``eval_every`` episodes, the best
checkpoint kept on validation accuracy (never on test), early stopping after ``patience`` validations
without improvement, and exact resume from a state file written at every validation, every ``resume_every``
steps and when the per-invocation time budget runs out (its format: :mod:`oneshot.resume`). Under ``torchrun``
the steps' tasks are split across processes (:mod:`oneshot.distributed`). The sampler says how many tasks a batch holds;
``Method.loss`` returns the loss and the query logits, which become a logged training accuracy. Uses CUDA when present,
bfloat16 autocast where the hardware supports it, channels-last layout for convolutions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oneshot.checkpoint import save_checkpoint
from oneshot.data.imageset import ImageSet
from oneshot.data.samplers import EpisodeIndices
from oneshot.distributed import Parallel, all_equal, check_tasks, from_main, loss_function, mean_over_ranks, setup, shard_tasks
from oneshot.errors import OneshotError
from oneshot.evaluation import evaluate
from oneshot.methods.base import Episode, LossOutput, Method, TrainShape, class_labels
from oneshot.methods.meta import FastWeightMethod
from oneshot.provenance import provenance
from oneshot.resume import load_resume, resume_path, save_resume
from oneshot.runtime import (
    autocast,
    compile_encoder,
    compile_mode,
    eager,
    resolve_first_block,
    resolve_precision,
    set_batch_norm_folding,
    set_threads,
    synchronize,
    to_layout,
    tune_cpu_allocator,
)
from oneshot.step_graph import StepGraph, use_step_graph
from oneshot.training_records import RunningAverage, TrainConfig, TrainProgress, TrainResult, TrainState

__all__ = ["RESIDENT_BYTES", "TrainConfig", "TrainProgress", "TrainResult", "TrainState", "train"]

# Largest training set (uint8 image bytes) moved to a GPU whole, so that episodes are gathered there.
RESIDENT_BYTES = 4 << 30


class _Run:
    """One training run's fixed parts: the method, data, optimiser, where checkpoints and resume state go,
    and this process's place in a data-parallel run."""

    def __init__(
        self,
        method: Method,
        train_data: ImageSet,
        val_data: ImageSet,
        config: TrainConfig,
        out: Path,
        metadata: dict[str, Any],
        par: Parallel,
        device: torch.device,
    ) -> None:
        if device.type == "cuda" and isinstance(train_data, ImageSet) and train_data.images.nbytes <= RESIDENT_BYTES:
            train_data = train_data.on(device)
        self.method, self.train_data, self.val_data, self.config, self.out = method, train_data, val_data, config, out
        self.metadata, self.par, self.device = metadata, par, device
        self.loss_fn: Callable[[Episode], LossOutput] = method.loss  # through DDP when distributed (train sets it)
        self.precision = resolve_precision(config.precision, self.device)
        self.compiled = compile_mode(config.compile, device)
        own = method.outer_optimizer(config.episodes)  # a method's own outer update (Reptile's annealed SGD)
        if own is None:
            self.opt: torch.optim.Optimizer = torch.optim.Adam(
                method.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda" or None
            )
            self.sched: Any = torch.optim.lr_scheduler.StepLR(self.opt, step_size=max(1, config.lr_step), gamma=config.lr_gamma)
        else:
            self.opt, self.sched = own
        self.loss, self.accuracy = RunningAverage(), RunningAverage()
        # --compile step-graph: forward, loss, backward and the update replayed as one CUDA graph
        graphed = use_step_graph(config.compile, device, method, par.active, self.precision)
        self.step_graph = StepGraph(self._update, self.opt) if graphed else None
        from oneshot.data.augment import Augment

        self.augment = Augment.from_dict(config.augment)

    def episode(self, ep: EpisodeIndices, tasks: int, shape: TrainShape, number: int) -> Episode:
        """The gathered batch of ``tasks`` episodes (task-major, see ``Episode.tasks``); training episode
        ``number`` (1-based) seeds its augmentation, so a resumed run augments exactly as an unbroken one."""
        dev = self.device
        idx = torch.from_numpy(np.concatenate([ep.support, ep.query]))
        x = self.train_data.gather(idx.to(dev, non_blocking=True) if dev.type == "cuda" else idx, dev)
        if self.augment is not None:  # the whole step's batch, so a rank's share is augmented as in one process
            x = self.augment(x, torch.Generator().manual_seed(self.config.seed * 1_000_003 + number))
        x = to_layout(x, self.config.channels_last)
        n = ep.support.size
        support, query, classes = x[:n], x[n:], torch.from_numpy(ep.classes).to(dev, non_blocking=True)
        if self.par.active:  # this rank's T/N tasks
            support, query, classes = (shard_tasks(t, tasks, self.par) for t in (support, query, classes))
            tasks //= self.par.world
        support_labels = class_labels(shape.ways, shape.shots, dev).repeat(tasks)
        query_labels = class_labels(shape.ways, shape.queries, dev).repeat(tasks)
        return Episode(support, support_labels, query, query_labels, shape.ways, shape.shots, classes, tasks=tasks)

    def step(self, episode: Episode, over_budget: bool) -> bool:
        """One optimiser step on ``episode``; updates the running loss and training accuracy (averaged over
        ranks) and returns whether any rank is over its time budget."""
        if self.compiled == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last one's graph outputs may be reused
        if self.step_graph is not None:
            out = self.step_graph(episode)
        else:
            self.opt.zero_grad(set_to_none=True)
            out = self._update(episode)
        self.sched.step()
        target = out.labels if out.labels is not None else episode.query_labels
        loss = out.loss.detach().double()
        accuracy = (out.logits.detach().argmax(1) == target).float().mean().double()
        if not self.par.active:  # no read-back: the host runs ahead of a GPU
            self.loss.update(loss)
            self.accuracy.update(accuracy)
            return over_budget
        loss_mean, accuracy_mean, over = mean_over_ranks(
            [loss.item(), accuracy.item(), float(over_budget)], self.par, self.device
        )
        self.loss.update(loss_mean)
        self.accuracy.update(accuracy_mean)
        return over > 0

    def _update(self, episode: Episode) -> LossOutput:
        """Loss, backward and the optimiser's update on ``episode`` (the gradients already zeroed or None)."""
        with autocast(self.device, self.precision):
            out = self.loss_fn(episode)
        out.loss.backward()
        self.opt.step()
        return out

    def save_resume(self, state: TrainState) -> bool:
        """Write the resume state (rank 0 only); False (no reason to stop)."""
        if self.par.main:
            state.running_loss, state.running_accuracy = self.loss.value, self.accuracy.value
            save_resume(resume_path(self.out), self.method, self.opt, self.sched, asdict(state))
        return False

    def validate(self, state: TrainState) -> bool:
        """Validate on rank 0 (the others wait and receive its state); True to stop early."""
        stop = self._validate(state) if self.par.main else False
        if self.par.active:
            stop, shared = from_main((stop, asdict(state)), self.par)
            for k, v in shared.items():
                setattr(state, k, v)
        return stop

    def _evaluate(self, own: Callable[..., Any] | None) -> Any:
        """The validation result: the data's own protocol if it has one, else seeded episodes."""
        cfg = self.config
        if own is not None:
            return own(self.method, self.device)
        return evaluate(
            self.method,
            self.val_data,
            cfg.val_ways,
            cfg.val_shots,
            cfg.val_queries,
            cfg.val_episodes,
            cfg.val_seed,
            self.device,
        )

    def _validate(self, state: TrainState) -> bool:
        """Validate, keep the checkpoint if best, write the resume state; True to stop early."""
        cfg = self.config
        own = getattr(self.val_data, "validate", None)  # data with its own validation protocol (molecule assays)
        with eager() if self.compiled else contextlib.nullcontext():
            res = self._evaluate(own)
        state.history.append(
            {
                "episode": state.episode,
                "val_accuracy": res.accuracy,
                "val_ci95": res.ci95,
                "loss": self.loss.value,
                "train_accuracy": self.accuracy.value,
            }
        )
        if res.accuracy > state.best:
            state.best, state.best_ci, state.best_episode, state.bad_evals = res.accuracy, res.ci95, state.episode, 0
            meta = dict(self.metadata)
            meta["training"] = dict(
                self.metadata.get("training", {}),
                config=asdict(cfg),
                episodes_trained=state.episode,
                val_accuracy=res.accuracy,
                val_ci95=res.ci95,
                val_shape=f"{cfg.val_ways}-way {cfg.val_shots}-shot",
                device=str(self.device),
                precision=self.precision,
            )
            meta.setdefault("seed", cfg.seed)
            record = provenance(self.metadata.get("training", {}).get("command") or None)
            meta.update(commit=record["commit"], created=record["date"], provenance=record)
            save_checkpoint(self.out, self.method, meta)
        else:
            state.bad_evals += 1
        self.save_resume(state)
        self.method.train()
        return bool(cfg.patience and state.bad_evals >= cfg.patience)


def channels_last_for(method: Method, device: torch.device, asked: bool) -> bool:
    """Whether training lays images and weights out channels-last: as ``asked``, except for fast-weight methods
    (MAML, first-order MAML, Reptile) on CUDA, whose per-task ``vmap`` adaptation cannot clone the channels-last
    gradients cuDNN returns there (torch 2.11: "Tensor.clone(memory_format) inside vmap is only supported with
    ... preserve_format or contiguous_format"). The checkpoint's ``training.config.channels_last`` records the
    layout used."""
    return asked and not (device.type == "cuda" and isinstance(method, FastWeightMethod))


def train(
    method: Method,
    train_data: ImageSet,
    val_data: ImageSet,
    config: TrainConfig,
    out: str | Path,
    metadata: dict[str, Any],
    resume: bool = False,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train ``method`` on episodes of ``train_data``, keep the best checkpoint on ``val_data`` at ``out``.

    Args:
        metadata: extra checkpoint metadata (encoder, preprocessing, data, command); training facts are added.
        resume: continue from ``out``'s resume state if present.
        on_progress: called after each step with a :class:`TrainProgress`, for progress bars.
    """
    out = Path(out)
    par, device = setup(config.device)
    threads = set_threads(config.threads)
    try:
        if device.type == "cpu":
            tune_cpu_allocator()
        torch.manual_seed(config.seed)
        method.to(device)
        config = replace(config, channels_last=channels_last_for(method, device, config.channels_last))
        if config.channels_last:
            method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to accepts it; the stubs omit it
        set_batch_norm_folding(method, *resolve_first_block(config.fold_batch_norm, config.fused_kernel, device))
        mode = compile_mode(config.compile, device)
        if mode is not None:
            compile_encoder(method, mode)
        return _train(_Run(method, train_data, val_data, config, out, metadata, par, device), resume, on_progress)
    finally:
        torch.set_num_threads(threads)
        par.close()


def _train(run: _Run, resume: bool, on_progress: Callable[[TrainProgress], None] | None) -> TrainResult:
    """The loop of :func:`train` on a prepared run."""
    method, train_data, config, out, par = run.method, run.train_data, run.config, run.out, run.par
    state = TrainState()
    if resume and resume_path(out).is_file():
        state = TrainState.from_dict(load_resume(resume_path(out), method, run.opt, run.sched))
        run.loss, run.accuracy = RunningAverage(state.running_loss), RunningAverage(state.running_accuracy)
    if not all_equal(state.episode, par):
        raise OneshotError(
            f"the processes found different resume states at {resume_path(out)}: put --out on a filesystem they share"
        )
    shape = TrainShape(config.ways, config.shots, config.queries)
    sampler = method.training_sampler(train_data, shape, config.episodes, config.seed, state.episode)
    check_tasks(sampler.tasks, par)
    run.loss_fn = loss_function(method, par)
    method.train()
    stopped = False
    tick = time.perf_counter()
    spent = 0.0  # this invocation's training seconds (the budget is per invocation)
    for ep in sampler:
        episode = run.episode(ep, sampler.tasks, shape, state.episode + 1)
        over_budget = config.max_minutes > 0 and spent + time.perf_counter() - tick > 60 * config.max_minutes
        over_budget = run.step(episode, over_budget)
        state.episode += 1
        state.images += int(ep.support.size + ep.query.size)
        if on_progress and par.main:
            on_progress(TrainProgress(state.episode, run.loss.latest, run.accuracy.latest, state.best))
        validate = state.episode % config.eval_every == 0 or state.episode == config.episodes or over_budget
        if validate or (config.resume_every and state.episode % config.resume_every == 0):
            synchronize(run.device)  # the queued steps count as training time
            elapsed = time.perf_counter() - tick  # training time only: validation and writes excluded
            state.seconds, spent = state.seconds + elapsed, spent + elapsed
            stopped = run.validate(state) if validate else run.save_resume(state)
            tick = time.perf_counter()
            if stopped or over_budget:
                stopped = True
                break
    else:
        synchronize(run.device)
        state.seconds += time.perf_counter() - tick
        if state.best < 0:  # zero episodes requested, or resumed at the end: still leave a checkpoint
            run.validate(state)
    secs = max(state.seconds, 1e-9)
    return TrainResult(
        checkpoint=str(out),
        best_val_accuracy=state.best,
        best_val_ci95=state.best_ci,
        best_episode=state.best_episode,
        episodes_run=state.episode,
        stopped_early=stopped,
        train_seconds=secs,
        images_per_second=state.images / secs,
        episodes_per_second=state.episode / secs,
        device=str(run.device),
        precision=run.precision,
        history=state.history,
        config=dict(config.__dict__),
    )
