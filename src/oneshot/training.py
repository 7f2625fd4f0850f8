"""The one training loop that serves every method.

Adam with a step learning-rate schedule, validation episodes every ``eval_every`` episodes, the best
checkpoint kept on validation accuracy (never on test), early stopping after ``patience`` validations
without improvement, and resume from a state file written at every validation. Uses CUDA when present,
bfloat16 autocast where the hardware supports it, channels-last layout for convolutions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from oneshot.checkpoint import git_commit, machine_description, now_iso, save_checkpoint, state_tensors
from oneshot.data.paths import atomic_write_bytes
from oneshot.data.store import ImageSet
from oneshot.errors import OneshotError
from oneshot.evaluation import evaluate
from oneshot.methods.base import Episode, Method, TrainShape
from oneshot.runtime import autocast, resolve_precision, select_device, to_layout, tune_cpu_allocator


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
        max_minutes: wall-clock budget for training (validation excluded); 0 = none. When it runs out the
            loop validates once more and stops.
        augment: :class:`~oneshot.data.augment.Augment` settings applied to every training batch (None: none);
            episode ``e``'s transformations are seeded by ``(seed, e)``, so resume stays exact.
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
    augment: dict[str, Any] | None = None


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


def resume_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".resume")


def _save_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v for k, v in state_tensors(method).items()}
    opt_state = opt.state_dict()
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    meta = dict(state, param_groups=opt_state["param_groups"], scheduler=sched.state_dict())
    atomic_write_bytes(path, save(tensors, metadata={"resume": json.dumps(meta)}))


def _load_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["resume"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise OneshotError(f"resume state {path} is unreadable ({exc}): delete it to start afresh") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        method.load_state_dict(model, strict=True)
    except RuntimeError:
        raise OneshotError(f"resume state {path} belongs to another model: delete it or change --out") from None
    opt_state: dict[str, Any] = {"state": {}, "param_groups": meta.pop("param_groups")}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = value
    opt.load_state_dict(opt_state)
    sched.load_state_dict(meta.pop("scheduler"))
    return meta


def train(
    method: Method,
    train_data: ImageSet,
    val_data: ImageSet,
    config: TrainConfig,
    out: str | Path,
    metadata: dict[str, Any],
    resume: bool = False,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``method`` on episodes of ``train_data``, keep the best checkpoint on ``val_data`` at ``out``.

    Args:
        metadata: extra checkpoint metadata (encoder, preprocessing, data, command); training facts are added.
        resume: continue from ``out``'s resume state if present.
        on_progress: called after each episode with (episodes done, latest stats) for progress bars.
    """
    out = Path(out)
    device = select_device(config.device)
    precision = resolve_precision(config.precision, device)
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(config.seed)
    method.to(device)
    if config.channels_last:
        method.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(method.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, config.lr_step), gamma=config.lr_gamma)
    state: dict[str, Any] = {"episode": 0, "best": -1.0, "best_ci": 0.0, "best_episode": 0, "bad_evals": 0, "history": [], "seconds": 0.0, "images": 0}
    rpath = resume_path(out)
    if resume and rpath.is_file():
        state.update(_load_resume(rpath, method, opt, sched))
    shape = TrainShape(config.ways, config.shots, config.queries)
    sampler = method.training_sampler(train_data, shape, config.episodes, config.seed, state["episode"])
    support_labels = torch.arange(shape.ways, device=device).repeat_interleave(shape.shots)
    query_labels = torch.arange(shape.ways, device=device).repeat_interleave(shape.queries)
    n_support = shape.ways * shape.shots

    def validate(episode: int) -> bool:
        """Validate, keep the checkpoint if best; returns True to stop early."""
        own = getattr(val_data, "validate", None)  # data with its own validation protocol (molecule assays)
        res = (own(method, device) if own is not None else
               evaluate(method, val_data, config.val_ways, config.val_shots, config.val_queries, config.val_episodes, config.val_seed, device))
        state["history"].append({"episode": episode, "val_accuracy": res.accuracy, "val_ci95": res.ci95, "loss": running_loss})
        if res.accuracy > state["best"]:
            state.update(best=res.accuracy, best_ci=res.ci95, best_episode=episode, bad_evals=0)
            meta = dict(metadata)
            meta["training"] = dict(
                metadata.get("training", {}), config=asdict(config), episodes_trained=episode,
                val_accuracy=res.accuracy, val_ci95=res.ci95,
                val_shape=f"{config.val_ways}-way {config.val_shots}-shot",
                device=str(device), precision=precision,
            )
            meta.setdefault("seed", config.seed)
            meta["commit"] = git_commit()
            meta["created"] = now_iso()
            save_checkpoint(out, method, meta)
        else:
            state["bad_evals"] += 1
        state["episode"] = episode
        _save_resume(rpath, method, opt, sched, state)
        method.train()
        return bool(config.patience and state["bad_evals"] >= config.patience)

    from oneshot.data.augment import Augment

    augment = Augment.from_dict(config.augment)
    method.train()
    running_loss = float("nan")
    stopped = False
    tick = time.perf_counter()
    for ep in sampler:
        e = state["episode"] + 1
        idx = torch.from_numpy(np.concatenate([ep.support, ep.query]))
        x = train_data.gather(idx, device)
        if augment is not None:
            x = augment(x, torch.Generator().manual_seed(config.seed * 1_000_003 + e))
        x = to_layout(x, config.channels_last)
        classes = torch.from_numpy(ep.classes).to(device)
        if ep.support.size == n_support:
            episode = Episode(x[:n_support], support_labels, x[n_support:], query_labels, shape.ways, shape.shots, classes)
        else:  # a meta-batch of T tasks, task-major (see Episode.tasks)
            tasks = ep.support.size // n_support
            episode = Episode(
                x[: ep.support.size], support_labels.repeat(tasks), x[ep.support.size :], query_labels.repeat(tasks),
                shape.ways, shape.shots, classes, tasks=tasks,
            )
        with autocast(device, precision):
            loss, logits = method.loss(episode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        state["episode"] = e
        state["images"] += int(idx.numel())
        value = loss.item()
        running_loss = value if running_loss != running_loss else 0.95 * running_loss + 0.05 * value
        if on_progress:
            on_progress(e, {"loss": running_loss, "best_val": state["best"]})
        over_budget = config.max_minutes > 0 and state["seconds"] + time.perf_counter() - tick > 60 * config.max_minutes
        if e % config.eval_every == 0 or e == config.episodes or over_budget:
            state["seconds"] += time.perf_counter() - tick
            stopped = validate(e)
            tick = time.perf_counter()
            if stopped or over_budget:
                stopped = True
                break
    else:
        state["seconds"] += time.perf_counter() - tick
        if state["best"] < 0:  # zero episodes requested, or resumed at the end: still leave a checkpoint
            validate(state["episode"])
    secs = max(state["seconds"], 1e-9)
    return TrainResult(
        checkpoint=str(out),
        best_val_accuracy=state["best"],
        best_val_ci95=state["best_ci"],
        best_episode=state["best_episode"],
        episodes_run=state["episode"],
        stopped_early=stopped,
        train_seconds=secs,
        images_per_second=state["images"] / secs,
        episodes_per_second=state["episode"] / secs,
        device=str(device),
        precision=precision,
        history=state["history"],
    )
