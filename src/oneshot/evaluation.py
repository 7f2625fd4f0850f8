"""The one evaluation path: N-way K-shot accuracy with a 95% confidence interval, and Lake's official runs.

Methods that embed each input independently are evaluated from embeddings computed once per split -- of the
images the seeded episodes draw when that is under 80% of the split (:func:`embeddings_of_drawn_images`: a
short validation embeds fewer: 100 5-way 1-shot episodes draw 5977 of Omniglot's 13760 validation images, the
default 500 20-way ones nearly all; the scores are the same either way) -- the others are asked to classify each episode
(``Method.classify``, which manages its own gradients) -- on GPUs several at once when they adapt to each
episode (``classify_tasks``: MAML, first-order MAML, Reptile; ``episode_batch``), on a CPU split over worker
processes (``workers``: each adapts its share of the episodes on its share of the cores). Either way the episodes
come from the same seeded sampler, so every method sees exactly the same tasks and a checkpoint always prints the
same number.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from oneshot.data.imageset import ImageSet
from oneshot.data.omniglot import LakeRun
from oneshot.data.samplers import EpisodeIndices, EpisodeSampler
from oneshot.errors import OneshotError
from oneshot.methods.base import Method, class_labels
from oneshot.runtime import autocast, to_layout, tune_cpu_allocator

#: Episodes adapted at once by methods with ``classify_tasks`` (one ``torch.func.vmap`` over them) on CUDA, at
#: most, and at most about this many support images in them (their activations are held for the inner
#: gradients). On CPU the default is one at a time: on the 2-core CPU batching gained 0.8-1.3x
#: (benchmarks/results/adapt_eval_speed.json) while its different float rounding, amplified by Reptile's 50 Adam
#: steps, changes a few episodes' accuracies.
EPISODE_BATCH, IMAGE_BATCH = 16, 512


def mean_ci95(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% normal confidence interval: 1.96 * s / sqrt(n), s the sample std."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


@dataclass
class EvalResult:
    """Accuracy over episodes (fractions in [0, 1])."""

    accuracy: float
    ci95: float
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int
    per_episode: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("per_episode")
        return d


def embedding_batch(shape: Sequence[int], device: torch.device | str) -> int:
    """Images per forward pass when embedding many (shape (N, C, H, W)): on a CPU, small batches whose
    activations stay in cache -- about 25,000 pixels a batch, at least 16 (32 drawings of 28x28, 16 of 56x56):
    measured 1.5-2x faster than batches of 2048 for Conv-4 on 28x28 and 56x56 (eval mode, so the embeddings
    are identical); on a GPU, 2048."""
    if torch.device(device).type != "cpu":
        return 2048
    return max(16, 25088 // max(1, int(shape[-1]) * int(shape[-2])))


@torch.no_grad()
def embed_all(
    method: Method,
    images: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """Embeddings (N, D) float32 on ``device`` of uint8 images (N, C, H, W), in eval mode, ``batch_size`` images
    at a time (default :func:`embedding_batch`: the embeddings are the same at any batch size, only the speed differs).
    """
    method.eval()
    batch_size = batch_size or embedding_batch(images.shape, device)
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        with autocast(device, precision):
            out.append(method.embed(to_layout(x, channels_last)).float())
    return torch.cat(out)


def split_embeddings(method: Method, images: torch.Tensor, device: torch.device, precision: str = "fp32") -> torch.Tensor | None:
    """Embeddings (N, D) of a whole split when ``method`` embeds inputs independently (so episodes can be
    scored from them), else None (the method must see each episode's inputs)."""
    return embed_all(method, images, device, precision) if method.embeds_independently else None


def episode_images(data: ImageSet, shapes: Sequence[tuple[int, int]], queries: int, episodes: int, seed: int) -> np.ndarray:
    """Sorted indices of the images that :func:`evaluate`'s seeded episodes of every (ways, shots) in ``shapes``
    draw (the same samplers, run ahead): a short evaluation need not embed a whole split."""
    used = [
        np.concatenate(
            [np.concatenate([ep.support, ep.query]) for ep in EpisodeSampler(data.class_indices, w, k, queries, episodes, seed)]
        )
        for w, k in shapes
        if episodes > 0
    ]
    return np.unique(np.concatenate(used)) if used else np.zeros(0, dtype=np.int64)


def embeddings_of_drawn_images(n: int, used: Any, embed_rows: Callable[[Any], torch.Tensor | None]) -> torch.Tensor | None:
    """Embeddings (n, D) of a split's n images for scoring: all of them, or -- when the seeded episodes draw under
    80% of the split (``used``, sorted row indices) -- only those, placed at their rows (zeros elsewhere, never
    read). Each image is embedded alone, so the scores are the same either way. ``embed_rows(rows)`` embeds the
    images at ``rows`` (a slice or an index array); None when the method has no embeddings (it adapts per
    episode), and then so is the result."""
    if used is None or len(used) > 0.8 * n:
        return embed_rows(slice(None))
    z = embed_rows(used)
    if z is None:
        return None
    return z.new_zeros(n, z.shape[1]).index_copy_(0, torch.from_numpy(used).to(z.device), z)


@torch.no_grad()
def evaluate(
    method: Method,
    data: ImageSet,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    embeddings: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
    episode_batch: int | None = None,
    rule: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    workers: int = 1,
    start: int = 0,
) -> EvalResult:
    """Mean accuracy and 95% CI of ``method`` over ``episodes`` seeded N-way K-shot episodes of ``data``.

    Args:
        embeddings: precomputed (N, D) embeddings of ``data`` (:func:`split_embeddings`, reused across shapes);
            default: those of the images the episodes draw (:func:`embeddings_of_drawn_images`), for a method that
            embeds inputs independently.
        progress: optional callable ``advance(n)`` for a progress bar.
        episode_batch: episodes adapted at once by methods with ``classify_tasks`` (1: one at a time);
            default ``EPISODE_BATCH`` on CUDA, 1 on CPU.
        rule: scores an episode from ``embeddings`` (support (S, D), labels (S,), query (Q, D), ways -> logits
            (Q, N)); default the method's ``classify_embeddings`` (:mod:`oneshot.inference` gives the others).
        workers: on a CPU, processes that classify episodes side by side for a method asked episode by episode
            (one that adapts to each, or any without embeddings), each with ``torch.get_num_threads() // workers``
            threads (:func:`_evaluate_in_processes`); 1 (the default) classifies them in this process.
        start: score only episodes ``start .. episodes - 1`` of the seeded sequence (each episode is drawn from
            ``(seed, index)`` alone): a long scoring split into blocks that a later process continues
            (``benchmarks/reevaluate.py --block``); the result counts ``episodes - start`` episodes.
    """
    if workers < 1:
        raise OneshotError(f"workers must be >= 1, got {workers}")
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu_allocator()
    if start < 0 or start >= max(episodes, 1):
        raise OneshotError(f"start must be in [0, episodes), got start={start} with {episodes} episodes")
    sampler = EpisodeSampler(data.class_indices, ways, shots, queries, episodes, seed, start)
    method.eval()
    support_labels = class_labels(ways, shots, device)
    query_labels = class_labels(ways, queries, device)
    z = embeddings
    if z is None and method.embeds_independently:  # only the images these episodes draw (a short validation)
        used = episode_images(data, [(ways, shots)], queries, episodes, seed)
        z = embeddings_of_drawn_images(len(data), used, lambda rows: embed_all(method, data.images[rows], device, precision))
    classify_tasks = getattr(method, "classify_tasks", None) if z is None else None
    batch = episode_batch if episode_batch is not None else (EPISODE_BATCH if device.type == "cuda" else 1)
    if classify_tasks is not None and batch > 1:
        batch = max(1, min(batch, IMAGE_BATCH // (ways * shots)))
        return _evaluate_in_batches(classify_tasks, batch, data, sampler, ways, shots, queries, seed, device, precision, progress)
    if z is None and workers > 1 and device.type == "cpu" and FORK in multiprocessing.get_all_start_methods():
        accs_list = _evaluate_in_processes(method, data, sampler, ways, shots, queries, precision, progress, workers)
        mean, ci = mean_ci95(accs_list)
        return EvalResult(mean, ci, ways, shots, queries, len(accs_list), seed, accs_list)
    classify_embeddings = rule or method.classify_embeddings
    accs = np.empty(episodes - start)
    for e, ep in enumerate(sampler):
        if z is not None:
            s, q = z[torch.from_numpy(ep.support).to(device)], z[torch.from_numpy(ep.query).to(device)]
            logits = classify_embeddings(s, support_labels, q, ways)
        else:
            logits = _classify_episode(method, data, ep, support_labels, ways, device, precision)
        accs[e] = (logits.argmax(1) == query_labels).float().mean().item()
        if progress:
            progress(1)
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, ways, shots, queries, len(accs), seed, accs.tolist())


def _classify_episode(
    method: Method,
    data: ImageSet,
    ep: EpisodeIndices,
    support_labels: torch.Tensor,
    ways: int,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """One episode asked of the method itself (``Method.classify``): logits (N*Q, N)."""
    s, q = to_layout(data.gather(ep.support, device), True), to_layout(data.gather(ep.query, device), True)
    with autocast(device, precision):
        return method.classify(s, support_labels, q, ways)


#: The start method of :func:`_evaluate_in_processes`' workers: forked, they share the parent's method and images
#: (copy on write) instead of loading them again; where a platform cannot fork, evaluation stays in one process.
FORK = "fork"
#: Episodes a worker is handed at a time, at most (so a progress bar advances while a shape is scored).
WORKER_CHUNK = 8
_forked: dict[str, Any] = {}  # what the forked workers read: set by _evaluate_in_processes, cleared after
_fork_lock = threading.Lock()  # one forking evaluation at a time per process (they share _forked)


def _episodes_in_worker(chunk: list[EpisodeIndices]) -> list[float]:
    """Run in a worker: the accuracies of ``chunk``'s episodes, in order (the method and images came with the fork)."""
    f = _forked
    torch.set_num_threads(f["threads"])
    out = []
    for ep in chunk:
        logits = _classify_episode(
            f["method"], f["data"], ep, f["support_labels"], f["ways"], torch.device("cpu"), f["precision"]
        )
        out.append((logits.argmax(1) == f["query_labels"]).float().mean().item())
    return out


def _evaluate_in_processes(
    method: Method,
    data: ImageSet,
    sampler: EpisodeSampler,
    ways: int,
    shots: int,
    queries: int,
    precision: str,
    progress: Callable[[int], None] | None,
    workers: int,
) -> list[float]:
    """:func:`evaluate`'s episode-by-episode path on ``workers`` forked CPU processes, each with
    ``max(1, torch.get_num_threads() // workers)`` threads: the same seeded episodes, handed out in chunks of
    :data:`WORKER_CHUNK` at most and gathered in order. An adapting method (Reptile: 50 Adam steps on 5 images per episode)
    ran 1.5x faster on two cores as two one-thread processes than as one two-thread process
    (``benchmarks/results/adapt_eval_workers.json``). Each episode is
    classified exactly as in one process with that many threads: equal per-episode accuracies to a one-process run
    at the same thread count (a run at another thread count can differ by float rounding)."""
    episodes = list(sampler)
    size = max(1, min(WORKER_CHUNK, math.ceil(len(episodes) / workers)))  # few episodes: still one chunk per worker
    chunks = [episodes[i : i + size] for i in range(0, len(episodes), size)]
    threads = max(1, torch.get_num_threads() // workers)
    accs: list[float] = []
    with _fork_lock:
        _forked.update(
            method=method,
            data=data,
            ways=ways,
            precision=precision,
            threads=threads,
            support_labels=class_labels(ways, shots, "cpu"),
            query_labels=class_labels(ways, queries, "cpu"),
        )
        try:
            with multiprocessing.get_context(FORK).Pool(min(workers, len(chunks))) as pool:
                for part in pool.imap(_episodes_in_worker, chunks):
                    accs.extend(part)
                    if progress:
                        progress(len(part))
        finally:
            _forked.clear()
    return accs


def _evaluate_in_batches(
    classify_tasks: Callable[..., torch.Tensor],
    batch: int,
    data: ImageSet,
    sampler: EpisodeSampler,
    ways: int,
    shots: int,
    queries: int,
    seed: int,
    device: torch.device,
    precision: str,
    progress: Callable[[int], None] | None,
) -> EvalResult:
    """:func:`evaluate` for methods that adapt to each episode: ``batch`` episodes at a time through
    ``classify_tasks`` (a method's; support (E, N*K, C, H, W), query (E, N*Q, C, H, W) -> logits (E, N*Q, N)).
    Same episodes and same adaptation as the one-at-a-time path; logits agree to float rounding (~1e-5)."""
    support_labels = class_labels(ways, shots, device)
    query_labels = class_labels(ways, queries, device)
    accs: list[float] = []
    episodes = iter(sampler)
    while chunk := list(itertools.islice(episodes, batch)):
        s = torch.stack([data.gather(ep.support, device) for ep in chunk])
        q = torch.stack([data.gather(ep.query, device) for ep in chunk])
        with autocast(device, precision):
            logits = classify_tasks(s, support_labels, q, ways)
        accs.extend((logits.argmax(2) == query_labels).float().mean(1).tolist())
        if progress:
            progress(len(chunk))
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, ways, shots, queries, len(accs), seed, accs)


@dataclass
class LakeRunsResult:
    """Lake et al.'s 20 runs: ``accuracy`` (1 - mean error), ``ci95`` over runs, and each run's error rate."""

    accuracy: float
    ci95: float
    runs: int
    errors: list[float]

    def summary(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_lake_runs(
    method: Method,
    runs: list[LakeRun],
    device: torch.device | str = "cpu",
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rule: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    embedded: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> LakeRunsResult:
    """Lake et al.'s 20 within-alphabet 20-way 1-shot runs, scored as in the original benchmark.

    Each of the 20 test drawings of a run is assigned to one of the run's 20 training drawings; a run's
    error rate is the fraction assigned wrongly, and the score is the mean over the 20 runs. With ``embed``
    (uint8 images (N, C, H, W) -> (N, D)) a run is scored from embeddings by ``rule`` (default the method's
    ``classify_embeddings``), as :func:`evaluate` does; without, by ``method.classify``. ``embedded`` gives each
    run's (support, queries) embeddings ((20, D), (20, D)) already made (an ensemble whose members read other
    input sizes), scored by ``rule`` the same way.
    """
    device = torch.device(device)
    method.eval()
    errors = []
    for i, run in enumerate(runs):
        labels = torch.arange(run.support.shape[0], device=device)
        if embedded is not None:
            logits = (rule or method.classify_embeddings)(embedded[i][0], labels, embedded[i][1], len(labels))
        elif embed is not None:
            logits = (rule or method.classify_embeddings)(embed(run.support), labels, embed(run.queries), len(labels))
        else:
            s = run.support.to(device).float().div_(255.0)
            q = run.queries.to(device).float().div_(255.0)
            logits = method.classify(s, labels, q, len(labels))
        errors.append(float((logits.argmax(1).cpu() != run.targets).float().mean()))
    acc, ci = mean_ci95([1 - e for e in errors])
    return LakeRunsResult(acc, ci, len(runs), errors)
