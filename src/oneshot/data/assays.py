"""Few-shot assay episodes for molecules: the training set the one training loop samples, and the protocol.

An assay is a 2-way task: class 0 = inactive, class 1 = active. A training episode draws one assay, K
actives and K inactives as support and Q of each as queries (:class:`AssayEpisodeSampler`). The evaluation
protocol (:func:`assay_auc`) is the literature's: a support set of K actives + K inactives drawn at random
(draw ``d`` of assay ``t`` from ``default_rng((seed, t, d))``), every other labelled compound of the assay
as queries, ROC-AUC per draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from oneshot.data.imageset import ClassSet
from oneshot.data.molecules import AssayTable
from oneshot.data.samplers import EpisodeIndices
from oneshot.errors import OneshotError

if TYPE_CHECKING:
    from oneshot.evaluation import EvalResult
    from oneshot.methods.base import Method

#: score(support rows (2K,), support labels (2K,) 0/1, query rows (Q,), draw) -> (Q,) scores, higher = active.
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def assay_rows(table: AssayTable, task: str, shots: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(inactive rows, active rows) of an assay, refusing one with too few of either for ``shots``-shot."""
    rows, y = table.labelled(task)
    pos, neg = rows[y == 1], rows[y == 0]
    for what, r in (("actives", pos), ("inactives", neg)):
        if len(r) == 0:
            raise OneshotError(f"assay {task} of {table.source} has no {what}: {shots}-shot is impossible; choose another assay")
        if len(r) <= shots:
            raise OneshotError(
                f"assay {task} of {table.source} has {len(r)} {what}: {shots}-shot needs more than {shots}; "
                "lower --shots or choose another assay"
            )
    return neg, pos


def draw_support(
    neg: np.ndarray, pos: np.ndarray, shots: int, seed: int, task_index: int, draw: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Support rows (2K,) [K inactives, K actives], their labels, and the query rows and labels (the rest)."""
    rng = np.random.default_rng((seed, task_index, draw))
    s_neg = rng.choice(neg, shots, replace=False)
    s_pos = rng.choice(pos, shots, replace=False)
    support = np.concatenate([s_neg, s_pos])
    labels = np.repeat(np.array([0, 1]), shots)
    q_neg = np.setdiff1d(neg, s_neg)
    q_pos = np.setdiff1d(pos, s_pos)
    return support, labels, np.concatenate([q_neg, q_pos]), np.repeat(np.array([0, 1]), [len(q_neg), len(q_pos)])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the rank statistic (ties count half): labels (Q,) 0/1, scores (Q,)."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((r[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class AssayResult:
    """ROC-AUC of one scorer on one assay over seeded support draws."""

    task: str
    shots: int
    aucs: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.aucs))

    @property
    def ci95(self) -> float:
        from oneshot.evaluation import mean_ci95

        return mean_ci95(self.aucs)[1]


def assay_auc(
    table: AssayTable,
    task: str,
    scorer: Scorer,
    shots: int,
    draws: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> AssayResult:
    """The few-shot protocol on one assay: ``draws`` seeded K+/K- supports, every other labelled compound queried."""
    neg, pos = assay_rows(table, task, shots)
    t = table.task(task)
    aucs = []
    for d in range(draws):
        s, sl, q, ql = draw_support(neg, pos, shots, seed, t, d)
        aucs.append(roc_auc(ql, scorer(s, sl, q, d)))
        if progress:
            progress(1)
    return AssayResult(task, shots, aucs)


def prototype_scorer(embeddings: np.ndarray) -> Scorer:
    """ProtoNet's score from precomputed embeddings (N, D): -|z - c_active|^2 + |z - c_inactive|^2."""
    z = np.asarray(embeddings, np.float64)

    def score(s: np.ndarray, sl: np.ndarray, q: np.ndarray, draw: int) -> np.ndarray:
        c0, c1 = z[s[sl == 0]].mean(0), z[s[sl == 1]].mean(0)
        zq = z[q]
        return ((zq - c0) ** 2).sum(1) - ((zq - c1) ** 2).sum(1)

    return score


class AssayEpisodeSampler:
    """2-way training episodes within one assay: K inactives + K actives support, Q of each as queries.

    Episode ``e`` draws from ``default_rng((seed, e))``: an assay uniformly, then its molecules without
    replacement. ``classes`` is (2,) = (2t, 2t+1) for assay t.
    """

    tasks = 1  # one episode per training step (the IndexSampler protocol)

    def __init__(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        shots: int,
        queries: int,
        episodes: int,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        for t, (neg, pos) in enumerate(pairs):
            if min(len(neg), len(pos)) < shots + queries:
                raise OneshotError(
                    f"training assay #{t} has {len(pos)} actives and {len(neg)} inactives: {shots}-shot "
                    f"with {queries} queries needs {shots + queries} of each; lower --queries"
                )
        self.pairs, self.shots, self.queries = list(pairs), shots, queries
        self.episodes, self.seed, self.start = episodes, seed, start

    def __len__(self) -> int:
        return max(0, self.episodes - self.start)

    def episode(self, e: int) -> EpisodeIndices:
        rng = np.random.default_rng((self.seed, e))
        t = int(rng.integers(len(self.pairs)))
        k, q = self.shots, self.queries
        picked = [rng.choice(rows, k + q, replace=False) for rows in self.pairs[t]]
        support = np.concatenate([p[:k] for p in picked])
        query = np.concatenate([p[k:] for p in picked])
        return EpisodeIndices(support, query, np.array([2 * t, 2 * t + 1]))

    def __iter__(self) -> Iterator[EpisodeIndices]:
        for e in range(self.start, self.episodes):
            yield self.episode(e)


def method_scorer(method: Method, embeddings: np.ndarray, shots: int) -> Scorer:
    """The assay score of a trained method from its embeddings (N, D): the method's own ``assay_scorer`` when it
    has one (:class:`~oneshot.methods.activity_prior.ActivityPrior`: prior + evidence), else ProtoNet's gap."""
    own = getattr(method, "assay_scorer", None)
    return own(embeddings, shots) if own is not None else prototype_scorer(embeddings)


class MultiTaskBatches:
    """Mini-batches of molecule rows for multi-task training, as the loop's index batches.

    Step ``e`` (0-based) is batch ``e % n_batches`` of epoch ``e // n_batches``, whose order is
    ``default_rng((seed, epoch)).permutation(rows)``; a step's ``support`` and ``classes`` are its rows (B,)
    and ``query`` is empty (the method looks the labels up by row).
    """

    tasks = 1

    def __init__(self, rows: np.ndarray, batch_size: int, episodes: int, seed: int = 0, start: int = 0) -> None:
        if len(rows) == 0:
            raise OneshotError("multi-task training has no labelled molecule")
        self.rows, self.batch_size = np.asarray(rows), int(batch_size)
        self.episodes, self.seed, self.start = episodes, seed, start
        self.per_epoch = -(-len(self.rows) // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.episodes - self.start)

    def batch(self, e: int) -> EpisodeIndices:
        epoch, i = divmod(e, self.per_epoch)
        order = np.random.default_rng((self.seed, epoch)).permutation(self.rows)
        rows = order[i * self.batch_size : (i + 1) * self.batch_size]
        return EpisodeIndices(rows, rows[:0], rows)

    def __iter__(self) -> Iterator[EpisodeIndices]:
        for e in range(self.start, self.episodes):
            yield self.batch(e)


class MoleculeSet(ClassSet):
    """Featurised molecules and the assays of one split, as the training loop sees a dataset.

    Attributes:
        features: float32 tensor (N, F), all molecules of the table.
        table: the assay table (labels, names).
        tasks: the assays of this split.
        val_shots, val_draws, val_seed: the validation protocol when this set validates (:meth:`validate`).
    """

    def __init__(
        self,
        features: np.ndarray | torch.Tensor,
        table: AssayTable,
        tasks: Sequence[str],
        val_shots: int = 1,
        val_draws: int = 20,
        val_seed: int = 1,
    ) -> None:
        self.features = torch.as_tensor(np.asarray(features, np.float32))
        self.table, self.tasks = table, tuple(tasks)
        self.val_shots, self.val_draws, self.val_seed = val_shots, val_draws, val_seed
        self.pairs = [assay_rows(table, t, 1) for t in self.tasks]
        self.class_names = [f"{t}:{c}" for t in self.tasks for c in ("inactive", "active")]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def class_indices(self) -> list[np.ndarray]:
        return [rows for pair in self.pairs for rows in pair]

    def multitask_targets(self) -> np.ndarray:
        """Labels (N, T) of this split's assays for every molecule: 1, 0 or NaN (not measured)."""
        return np.ascontiguousarray(self.table.labels[:, [self.table.task(t) for t in self.tasks]], np.float32)

    def gather(self, indices: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Features (B, F) of the given molecule rows on ``device``."""
        return self.features.index_select(0, torch.as_tensor(indices, dtype=torch.long)).to(device)

    def episode_sampler(self, shape, episodes: int, seed: int, start: int) -> AssayEpisodeSampler:
        if shape.ways != 2:
            raise OneshotError(f"assay episodes are 2-way (active / inactive), not {shape.ways}-way: use --ways 2")
        return AssayEpisodeSampler(self.pairs, shape.shots, shape.queries, episodes, seed, start)

    @torch.no_grad()
    def embed(self, method: Method, device: torch.device | str = "cpu", batch: int = 4096) -> np.ndarray:
        method.eval()
        out = [method.embed(self.features[i : i + batch].to(device)).float().cpu() for i in range(0, len(self), batch)]
        return torch.cat(out).numpy()

    def validate(self, method: Method, device: torch.device | str = "cpu") -> EvalResult:
        """Mean ROC-AUC over this split's assays (``val_draws`` seeded draws each) as an ``EvalResult``."""
        from oneshot.evaluation import EvalResult, mean_ci95

        scorer = method_scorer(method, self.embed(method, device), self.val_shots)
        aucs = [
            a for t in self.tasks for a in assay_auc(self.table, t, scorer, self.val_shots, self.val_draws, self.val_seed).aucs
        ]
        mean, ci = mean_ci95(aucs)
        return EvalResult(mean, ci, 2, self.val_shots, 0, len(aucs), self.val_seed, aucs)
