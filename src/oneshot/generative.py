"""Generative augmentation in embedding space: turn one example into several plausible ones.

The generator is fitted on *base* (training) classes only. It is a Gaussian model of how examples of one class
vary around their class, transferred to a new class in the manner of distribution calibration (Yang, Liu & Xu,
"Free Lunch for Few-shot Learning: Distribution Calibration", ICLR 2021) and of feature hallucination (Wang,
Girshick, Hebert & Hariharan, "Low-Shot Learning from Imaginary Data", CVPR 2018):

* from L2-normalised base embeddings it keeps the base class means ``M`` (C, D) and the top ``rank`` principal
  axes ``U`` (D, r) and variances ``lam`` (r,) of the pooled within-class deviations;
* for a new example ``z`` (D,), the calibrated centre is ``mu = (z + sum of its k nearest base means) / (k + 1)``,
  and a sample is ``normalise(mu + alpha * U (sqrt(lam) * eps))``, ``eps ~ N(0, I)``.

``k`` and ``alpha`` are chosen on validation classes (:func:`choose`), and the generator records whether it beat
no augmentation there (``helps``): enrolment uses it by default only then. Stored as safetensors beside the
checkpoint it belongs to (``<checkpoint>.generator.safetensors``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Generator:
    """Embedding-space generator (see the module docstring).

    Attributes:
        means: (C, D) unit base class means.
        axes: (D, r) principal axes of within-class deviations.
        variances: (r,) their variances.
        k: base means mixed into the centre (0: the example itself).
        alpha: scale of the sampled deviation.
        info: how it was fitted and chosen (base data, validation accuracies, ``helps``).
    """

    means: np.ndarray
    axes: np.ndarray
    variances: np.ndarray
    k: int = 0
    alpha: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, rank: int = 32) -> Generator:
        """Fit on base-class embeddings (N, D) with labels (N,)."""
        z = _unit(np.asarray(embeddings, np.float64))
        labels = np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([z[labels == c].mean(0) for c in classes])
        dev = z - means[np.searchsorted(classes, labels)]
        _, s, vt = np.linalg.svd(dev, full_matrices=False)
        r = min(rank, len(s))
        var = s[:r] ** 2 / max(1, len(z) - len(classes))
        return cls(
            _unit(means).astype(np.float32),
            vt[:r].T.astype(np.float32).copy(),
            var.astype(np.float32),
            info={"base_classes": int(len(classes)), "base_examples": int(len(z)), "rank": int(r)},
        )

    @property
    def helps(self) -> bool:
        return bool(self.info.get("helps", False))

    def centre(self, z: np.ndarray) -> np.ndarray:
        """Calibrated centres (B, D) of unit examples (B, D)."""
        z = _unit(np.asarray(z, np.float32))
        if self.k <= 0:
            return z
        sims = z @ self.means.T
        near = np.argsort(-sims, axis=1)[:, : self.k]
        return (z + self.means[near].sum(1)) / (self.k + 1)

    def sample(self, z: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
        """``n`` synthetic unit embeddings per example: (B, D) -> (B, n, D)."""
        z = np.atleast_2d(z)
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((z.shape[0], n, self.axes.shape[1])).astype(np.float32)
        noise = (eps * np.sqrt(self.variances)) @ self.axes.T
        return _unit(self.centre(z)[:, None, :] + self.alpha * noise)

    # ---------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {"k": self.k, "alpha": self.alpha, "info": self.info, "format": "oneshot-generator"}
        atomic_write_bytes(
            path,
            save(
                {"means": self.means, "axes": self.axes, "variances": self.variances},
                metadata={"oneshot_generator": json.dumps(meta)},
            ),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Generator:
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})["oneshot_generator"])
                t = {k: f.get_tensor(k) for k in ("means", "axes", "variances")}
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise OneshotError(f"generator {path} is unreadable ({exc.__class__.__name__}): refit it") from None
        if t["axes"].shape[0] != t["means"].shape[1] or t["axes"].shape[1] != t["variances"].shape[0]:
            raise OneshotError(f"generator {path} has inconsistent shapes: refit it")
        return cls(t["means"], t["axes"], t["variances"], int(meta["k"]), float(meta["alpha"]), meta.get("info", {}))


def generator_path(checkpoint: str | Path) -> Path:
    """Where the generator of a checkpoint lives: ``<checkpoint>.generator.safetensors`` beside it."""
    p = Path(checkpoint)
    return p.with_name(p.name.removesuffix(".safetensors") + ".generator.safetensors")


# ---------------------------------------------------------------- evaluation with augmented supports
def episode_accuracy(
    z: np.ndarray,
    extra: np.ndarray | None,
    class_indices: list[np.ndarray],
    ways: int,
    queries: int,
    episodes: int,
    seed: int = 0,
) -> tuple[float, float, np.ndarray]:
    """1-shot accuracy of nearest-prototype classification (cosine) over seeded episodes.

    Args:
        z: (N, D) unit embeddings of the data.
        extra: (N, n, D) augmented embeddings of each image used as support (prototype = mean of the example and
            its n augmentations, renormalised), or None for no augmentation.
    Returns:
        mean, 95% CI half-width, per-episode accuracies.
    """
    from oneshot.data.samplers import EpisodeSampler
    from oneshot.evaluation import mean_ci95

    accs = np.empty(episodes)
    truth = np.repeat(np.arange(ways), queries)
    for e, ep in enumerate(EpisodeSampler(class_indices, ways, 1, queries, episodes, seed)):
        s = z[ep.support]
        if extra is not None:
            s = _unit(s + extra[ep.support].sum(1))
        pred = (z[ep.query] @ s.T).argmax(1)
        accs[e] = (pred == truth).mean()
    m, ci = mean_ci95(accs)
    return m, ci, accs


def choose(
    gen: Generator,
    z_val: np.ndarray,
    class_indices: list[np.ndarray],
    ways: int,
    queries: int,
    n: int,
    episodes: int = 300,
    ks: tuple[int, ...] = (0, 1, 2, 5),
    alphas: tuple[float, ...] = (0.5, 1.0),
) -> Generator:
    """Pick ``k`` and ``alpha`` on validation episodes; record every score and whether the best beats no augmentation."""
    base, _, _ = episode_accuracy(z_val, None, class_indices, ways, queries, episodes, seed=1)
    scores = {}
    for k in ks:
        for a in alphas:
            gen.k, gen.alpha = k, a
            acc, _, _ = episode_accuracy(z_val, gen.sample(z_val, n, seed=2), class_indices, ways, queries, episodes, seed=1)
            scores[f"k={k},alpha={a}"] = acc
    best = max(scores, key=lambda s: scores[s])
    gen.k, gen.alpha = int(best.split(",")[0][2:]), float(best.split("=")[-1])
    gen.info.update(
        validation={"none": base, **scores},
        chosen=best,
        helps=bool(scores[best] > base),
        validation_shape=f"{ways}-way 1-shot, {queries} queries, {episodes} episodes, n={n}",
    )
    return gen
