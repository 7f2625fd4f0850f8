"""Activity prior + support evidence: the learned one-shot model for molecule assays (docs/molecules.md).

Tox21 is one compound x assay matrix in which toxic, promiscuous compounds are active on many assays. The
trunk (the encoder, then a ReLU) is trained **multi-task** on the training assays: one logistic head per
assay, a binary cross-entropy over the *labelled* entries only (missing labels are masked out), as in the
supervised pretraining stage of Meta-MGNN (Guo et al., WWW 2021) and Pre-PAR (Wang et al., NeurIPS 2021).
A new assay is then scored from a support set of K actives and K inactives as

    score(q) = prior(q) + w_K * evidence(q, support)

* ``prior(q)``: the mean logit of the training-assay heads -- how "generally active" q looks, with no support;
* ``evidence(q, S)``: the prototypical network's distance gap (Snell et al., NeurIPS 2017) in the trunk's
  L2-normalised embedding, ``|n(q) - c_inactive|^2 - |n(q) - c_active|^2``, c the mean normalised support
  embedding of each class;
* ``w_K``: per support size K, chosen on held-out training assays (``evidence_weights``; the nearest stored K
  is used for another K).

The prior can adapt to the new assay (``head_betas``, beta_K per support size like w_K): the heads' logits
h(q) in R^T place a molecule in the space of the training assays, and the support says which of them the new
assay resembles: ``prior(q) = sum_t a_t h_t(q)`` with ``a = softmax(beta_K * g)``, ``g_t`` = mean h_t over the
support actives minus mean h_t over the support inactives. beta_K = 0 (the default, and what a checkpoint
without ``head_betas`` gets) is the plain mean.

Training goes through the one training loop: :meth:`ActivityPrior.training_sampler` yields mini-batches of
labelled molecules (:class:`~oneshot.data.assays.MultiTaskBatches`, the episode's ``classes`` carry the
molecule rows) and :meth:`ActivityPrior.loss` is the masked multi-task BCE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method, TrainShape, nearest_prototype

if TYPE_CHECKING:
    from oneshot.data.assays import MultiTaskBatches, Scorer


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the labelled entries: logits (B, T), targets (B, T) in {0, 1, NaN};
    NaN (not measured) entries contribute nothing. A batch with no labelled entry gives 0."""
    mask = ~torch.isnan(targets)
    per = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return (per * mask).sum() / mask.sum().clamp_min(1)


def head_mixture(h_support: np.ndarray, support_labels: np.ndarray, beta: float) -> np.ndarray:
    """The support-chosen head weights a (T,) = softmax(beta * g), g_t = mean h_t(actives) - mean h_t(inactives),
    from the support's head logits (S, T) and labels (S,) 0/1; beta = 0 gives the uniform 1/T."""
    h = np.asarray(h_support, np.float64)
    g = float(beta) * (h[support_labels == 1].mean(0) - h[support_labels == 0].mean(0))
    a = np.exp(g - g.max())
    return a / a.sum()


def nearest_k(table: Mapping[str, float], shots: int, default: float) -> float:
    """The value stored for the K nearest ``shots`` on a log scale (the smaller K on a tie); ``default`` if empty."""
    if not table:
        return default
    best = min((int(k) for k in table), key=lambda k: (abs(np.log(k) - np.log(max(1, shots))), k))
    return table[str(best)]


def evidence_gap(z_support: np.ndarray, support_labels: np.ndarray, z_query: np.ndarray) -> np.ndarray:
    """ProtoNet's gap on L2-normalised embeddings: support (S, D) with labels (S,) 0/1, queries (Q, D) -> (Q,)."""

    def unit(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    s, q = unit(z_support), unit(z_query)
    c0, c1 = s[support_labels == 0].mean(0), s[support_labels == 1].mean(0)
    return ((q - c0) ** 2).sum(1) - ((q - c1) ** 2).sum(1)


class ActivityPrior(Method):
    """Multi-task trunk + activity prior + ProtoNet evidence (module docstring).

    Args:
        encoder: :class:`~oneshot.encoders.molecule_mlp.MoleculeMLP`, (B, F) -> (B, D); its output passes a ReLU.
        num_tasks: T, training assays (one head each).
        head_dropout: dropout between the trunk and the heads (training only).
        batch_size: molecules per training step.
        evidence_weights: {K (as a string): w_K}, the evidence weight per support size.
        head_betas: {K (as a string): beta_K}, the support's say in the head mixture (:func:`head_mixture`);
            missing (older checkpoints) or empty: beta 0, the mean head logit.
    """

    name = "activity_prior"
    option_names = ("num_tasks", "head_dropout", "batch_size", "evidence_weights", "head_betas")

    def __init__(
        self,
        encoder: nn.Module,
        num_tasks: int = 9,
        head_dropout: float = 0.5,
        batch_size: int = 128,
        evidence_weights: Mapping[str, float] | None = None,
        head_betas: Mapping[str, float] | None = None,
    ) -> None:
        dim = getattr(encoder, "out_dim", None)  # the trunk's width D
        if type(encoder).__name__ != "MoleculeMLP" or not isinstance(dim, int):
            raise OneshotError(
                "activity_prior is the molecule model: its encoder is molecule_mlp and it trains on assay tables "
                "(benchmarks/molecules_tox21.py, docs/molecules.md)"
            )
        if int(num_tasks) < 1 or int(batch_size) < 1:
            raise OneshotError("activity_prior needs num_tasks >= 1 and batch_size >= 1")
        super().__init__(encoder)
        self.num_tasks, self.head_dropout, self.batch_size = int(num_tasks), float(head_dropout), int(batch_size)
        self.evidence_weights = {str(int(k)): float(v) for k, v in (evidence_weights or {"1": 1.0}).items()}
        self.head_betas = {str(int(k)): float(v) for k, v in (head_betas or {}).items()}
        self.dropout = nn.Dropout(self.head_dropout)
        self.heads = nn.Linear(dim, self.num_tasks)
        self.targets: torch.Tensor | None = None  # (N, T) training labels, NaN = missing; set by training_sampler

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, F) -> trunk embedding (B, D), non-negative (after the ReLU)."""
        return F.relu(super().embed(x))

    def prior_logit(self, z: torch.Tensor) -> torch.Tensor:
        """The activity prior: mean head logit (B,) of trunk embeddings z (B, D)."""
        return self.heads(z).mean(1)

    def weight(self, shots: int) -> float:
        """w_K for ``shots`` = K: the stored weight of the nearest K (on a log scale)."""
        return nearest_k(self.evidence_weights, shots, 1.0)

    def beta(self, shots: int) -> float:
        """beta_K for ``shots`` = K: the stored value of the nearest K (on a log scale); 0 if none is stored."""
        return nearest_k(self.head_betas, shots, 0.0)

    def training_sampler(self, data: Any, shape: TrainShape, episodes: int, seed: int, start: int) -> MultiTaskBatches:
        """Mini-batches of molecules labelled on a training assay; keeps the (N, T) label matrix for :meth:`loss`."""
        targets = getattr(data, "multitask_targets", None)
        if targets is None:
            raise OneshotError("activity_prior trains on a molecule assay table (MoleculeSet), not on images")
        from oneshot.data.assays import MultiTaskBatches

        y = targets()
        if y.shape[1] != self.num_tasks:
            raise OneshotError(f"activity_prior has {self.num_tasks} heads but the training data has {y.shape[1]} assays")
        self.targets = torch.from_numpy(y)
        return MultiTaskBatches(np.flatnonzero((~np.isnan(y)).any(1)), self.batch_size, episodes, seed, start)

    def loss(self, episode: Episode) -> LossOutput:
        """Masked multi-task BCE on the batch's molecules (``episode.support`` (B, F), rows in ``episode.classes``);
        logits (M, 2) and labels (M,) of the M labelled entries give the loop's training accuracy."""
        if self.targets is None or episode.classes is None:
            raise OneshotError("activity_prior's loss needs the batches of its own training_sampler")
        y = self.targets.to(episode.support.device)[episode.classes]
        logits = self.heads(self.dropout(self.embed(episode.support))).float()
        mask = ~torch.isnan(y)
        flat = logits.detach()[mask]
        return LossOutput(masked_bce(logits, y), torch.stack([-flat, flat], 1), y[mask].long())

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Logits (Q, N): w_K times the nearest-prototype rule on L2-normalised embeddings (K = the smallest
        class's support size). The class-agnostic prior needs to know which class is 'active': see
        :meth:`assay_scorer`."""
        shots = int(torch.bincount(support_labels, minlength=ways).min().clamp_min(1))
        s, q = F.normalize(support.float(), dim=1), F.normalize(query.float(), dim=1)
        return self.weight(shots) * nearest_prototype(s, support_labels, q, ways)

    @torch.no_grad()
    def assay_scorer(self, z: np.ndarray, shots: int) -> Scorer:
        """The few-shot assay score from precomputed trunk embeddings z (N, D): a
        :data:`oneshot.data.assays.Scorer` giving prior + w_K * evidence for the query rows, the prior mixing
        the heads by :func:`head_mixture` with beta_K (the mean head logit when beta_K = 0)."""
        z = np.asarray(z, np.float64)
        was = self.training
        self.eval()
        zt = torch.from_numpy(z).to(self.heads.weight)
        prior = self.prior_logit(zt).double().cpu().numpy()  # (N,), the mean head logit
        h = self.heads(zt).double().cpu().numpy()  # (N, T)
        self.train(was)
        w, beta = self.weight(shots), self.beta(shots)

        def score(s: np.ndarray, sl: np.ndarray, q: np.ndarray, draw: int) -> np.ndarray:
            p = prior[q] if beta == 0 else h[q] @ head_mixture(h[s], sl, beta)
            return p + w * evidence_gap(z[s], sl, z[q])

        return score
