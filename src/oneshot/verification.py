"""Verification metrics for any checkpoint: are two images of unseen classes the same class?

Same / different pairs are drawn from the test classes with a seed (half same, half different), each pair is
scored by a similarity (higher = more likely the same class), and the scores are summarised by the ROC
curve (true-accept rate against false-accept rate over all thresholds), its area (AUC), the equal error rate
(EER, where the false-accept rate equals the false-reject rate) and the true-accept rate at false-accept
rates of 1e-2 and 1e-3.

Similarity: ``auto`` is the method's own pair score (:meth:`~oneshot.methods.base.Method.pair_score`: the
learned "same" logit of a Siamese network, cosine for matching networks, negative squared distance
otherwise); ``cosine`` and ``neg-sqdist`` force one of the generic ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from oneshot.choices import check_choice
from oneshot.data.imageset import ImageSet
from oneshot.errors import OneshotError
from oneshot.evaluation import embed_all
from oneshot.methods.base import Method

#: Pair similarities by name: (method, a (P, D), b (P, D)) -> scores (P,), higher = more likely the same class.
SIMILARITIES: dict[str, Callable[[Method, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "auto": lambda method, a, b: method.pair_score(a, b).float(),
    "cosine": lambda method, a, b: F.cosine_similarity(a.float(), b.float(), dim=1),
    "neg-sqdist": lambda method, a, b: -(a.float() - b.float()).pow(2).sum(1),
}


def sample_pairs(class_indices: list[np.ndarray], pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded balanced pairs: ``pairs // 2`` same-class pairs (two distinct images of one class) and the rest
    different-class pairs (one image each of two distinct classes).

    Returns:
        a, b: (pairs,) image indices; same: (pairs,) bool.
    """
    if len(class_indices) < 2:
        raise OneshotError("verification needs at least 2 classes")
    if min(len(c) for c in class_indices) < 2:
        raise OneshotError("verification needs at least 2 images in every class")
    rng = np.random.default_rng(seed)
    n_same = pairs // 2
    a = np.empty(pairs, dtype=np.int64)
    b = np.empty(pairs, dtype=np.int64)
    classes = rng.integers(0, len(class_indices), n_same)
    for i, c in enumerate(classes):
        a[i], b[i] = rng.choice(class_indices[c], 2, replace=False)
    for i in range(n_same, pairs):
        c1, c2 = rng.choice(len(class_indices), 2, replace=False)
        a[i] = class_indices[c1][rng.integers(len(class_indices[c1]))]
        b[i] = class_indices[c2][rng.integers(len(class_indices[c2]))]
    same = np.zeros(pairs, dtype=bool)
    same[:n_same] = True
    return a, b, same


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for accepting a pair when its score >= threshold, one point per distinct score.

    Returns:
        far (T+1,): false-accept rate (fraction of different pairs accepted), from 0 up to 1;
        tar (T+1,): true-accept rate (fraction of same pairs accepted);
        thresholds (T+1,): the threshold of each point (the first is +inf: accept nothing).
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise OneshotError("verification needs both same and different pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    return far, tar, np.r_[np.inf, s[last]]


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count one half, as in the Mann-Whitney U)."""
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def equal_error_rate(far: np.ndarray, tar: np.ndarray) -> float:
    """The rate where false accepts equal false rejects (1 - TAR), linearly interpolated between ROC points."""
    frr = 1.0 - tar
    diff = far - frr  # rises from -1 (accept nothing) to +1 (accept everything)
    k = int(np.argmax(diff >= 0))
    if k == 0:
        return float(far[0])
    d0, d1 = diff[k - 1], diff[k]
    t = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(far[k - 1] + t * (far[k] - far[k - 1]))


def tar_at_far(far: np.ndarray, tar: np.ndarray, target: float) -> float:
    """The highest true-accept rate among thresholds whose false-accept rate is at most ``target``."""
    ok = far <= target + 1e-12
    return float(tar[ok].max())


@dataclass
class VerificationResult:
    """Verification metrics over ``pairs`` pairs (rates are fractions)."""

    pairs: int
    seed: int
    similarity: str
    auc: float
    eer: float
    tar_at_far_1e2: float
    tar_at_far_1e3: float
    far: np.ndarray = field(repr=False)
    tar: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        return {
            "pairs": self.pairs,
            "seed": self.seed,
            "similarity": self.similarity,
            "auc": self.auc,
            "eer": self.eer,
            "tar_at_far_1e-2": self.tar_at_far_1e2,
            "tar_at_far_1e-3": self.tar_at_far_1e3,
        }


def pair_similarity(method: Method, a: torch.Tensor, b: torch.Tensor, similarity: str) -> torch.Tensor:
    """Scores (P,) of embedding pairs (P, D) under ``similarity`` (a key of :data:`SIMILARITIES`)."""
    return SIMILARITIES[check_choice("verification", "similarity", similarity, SIMILARITIES)](method, a, b)


def metrics(scores: np.ndarray, same: np.ndarray, seed: int = 0, similarity: str = "given") -> VerificationResult:
    """All verification metrics of scored pairs."""
    far, tar, _ = roc_curve(scores, same)
    return VerificationResult(
        pairs=int(len(scores)),
        seed=seed,
        similarity=similarity,
        auc=auc(far, tar),
        eer=equal_error_rate(far, tar),
        tar_at_far_1e2=tar_at_far(far, tar, 1e-2),
        tar_at_far_1e3=tar_at_far(far, tar, 1e-3),
        far=far,
        tar=tar,
    )


@torch.no_grad()
def evaluate_verification(
    method: Method,
    data: ImageSet,
    pairs: int = 20000,
    seed: int = 0,
    similarity: str = "auto",
    device: torch.device | str = "cpu",
    embeddings: torch.Tensor | None = None,
) -> VerificationResult:
    """Verification metrics of ``method`` on seeded same/different pairs of ``data``'s classes.

    Every image is embedded on its own (``method.embed``, in eval mode, fp32); for methods whose classifier
    depends on the episode (FCE, fine-tuning) this scores the underlying embedding.

    Args:
        embeddings: precomputed (N, D) embeddings of ``data`` (reused from the accuracy evaluation).
    """
    device = torch.device(device)
    a, b, same = sample_pairs(data.class_indices, pairs, seed)
    z = embeddings if embeddings is not None else embed_all(method, data.images, device)
    scores = []
    for start in range(0, pairs, 8192):
        ia = torch.from_numpy(a[start : start + 8192]).to(z.device)
        ib = torch.from_numpy(b[start : start + 8192]).to(z.device)
        scores.append(pair_similarity(method, z[ia], z[ib], similarity).cpu())
    return metrics(torch.cat(scores).numpy(), same, seed, similarity)


def plot_roc(result: VerificationResult, path: str | Path, title: str = "") -> Path:
    """ROC curve (TAR against FAR, log FAR axis) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    floor = 0.5 / max(1, result.pairs - result.pairs // 2)
    ax.plot(np.maximum(result.far, floor), result.tar, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("true-accept rate")
    ax.set_title(title or f"ROC (AUC {result.auc:.4f}, EER {100 * result.eer:.2f}%)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_det(result: VerificationResult, path: str | Path, title: str = "") -> Path:
    """DET curve (false-reject rate against false-accept rate, both on normal-deviate scales) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from statistics import NormalDist

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nd = NormalDist()
    eps = 1e-4
    probit = np.vectorize(lambda p: nd.inv_cdf(min(max(p, eps), 1 - eps)))
    frr = 1 - result.tar
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(probit(result.far), probit(frr), lw=1.5)
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95]
    ax.set_xticks(probit(ticks))
    ax.set_xticklabels([f"{100 * t:g}%" for t in ticks])
    ax.set_yticks(probit(ticks))
    ax.set_yticklabels([f"{100 * t:g}%" for t in ticks])
    lo, hi = float(probit(0.0005)), float(probit(0.99))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.plot([lo, hi], [lo, hi], ls=":", c="grey", lw=0.8)
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("false-reject rate")
    ax.set_title(title or f"DET (EER {100 * result.eer:.2f}%)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
