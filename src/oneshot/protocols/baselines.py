"""Untrained baselines as one-shot methods, so they run on the one evaluation path with the same episodes.

* **Raw pixels**: nearest neighbour (Euclidean) on the preprocessed pixels.
* **Eigenfaces** (Turk & Pentland 1991): nearest neighbour in the space of the first k principal components
  of training images (PCA fitted on training classes only; k chosen on validation).
"""

from __future__ import annotations

import torch
from torch import nn

from oneshot.data.imageset import ImageSet
from oneshot.evaluation import evaluate
from oneshot.methods.protonet import ProtoNet


class Flatten(nn.Module):
    """(B, C, H, W) -> (B, C*H*W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class PCAProjection(nn.Module):
    """(B, C, H, W) -> (B, k): centred pixels projected on k principal axes (fitted by :func:`fit_pca`)."""

    mean: torch.Tensor
    axes: torch.Tensor

    def __init__(self, mean: torch.Tensor, axes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)  # (P,)
        self.register_buffer("axes", axes)  # (P, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.axes


def fit_pca(images: torch.Tensor, k: int) -> PCAProjection:
    """PCA of uint8 images (N, C, H, W) scaled to [0, 1]: the first ``k`` axes (k <= N)."""
    x = images.flatten(1).double() / 255.0
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return PCAProjection(mean.float(), v[: min(k, v.shape[0])].T.float().contiguous())


def raw_pixels() -> ProtoNet:
    """1-shot nearest neighbour on pixels (ProtoNet with the identity encoder: prototypes are the examples)."""
    return ProtoNet(Flatten()).eval()


def eigenfaces(
    train: ImageSet,
    val: ImageSet,
    trainval: ImageSet,
    ks: tuple[int, ...] = (10, 20, 40, 80, 120),
    val_ways: int = 4,
    seed: int = 1,
) -> tuple[ProtoNet, int, dict[int, float]]:
    """Eigenfaces with k chosen on validation (PCA on ``train``, episodes of ``val``), refitted on ``trainval``.

    Returns the method, the chosen k and the validation accuracy of every k tried.
    """
    scores = {}
    for k in ks:
        if k > len(train):
            continue
        m = ProtoNet(fit_pca(train.images, k)).eval()
        scores[k] = evaluate(m, val, val_ways, 1, 9, 500, seed).accuracy
    best = max(scores, key=lambda k: scores[k])
    return ProtoNet(fit_pca(trainval.images, best)).eval(), best, scores


class PretrainedEmbedding(ProtoNet):
    """A frozen embedder (e.g. ``dlib-face``) as a method: ``embed`` runs it on (B, C, H, W) inputs in [0, 1];
    episodes are classified by the nearest prototype, pairs scored by cosine."""

    graph_safe_step = False  # embeds on the CPU

    def __init__(self, embedder) -> None:  # noqa: ANN001 -- any object with embed_images
        super().__init__(nn.Identity())
        self.embedder = embedder

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        images = (x.detach().cpu().float() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        return torch.from_numpy(self.embedder.embed_images(images)).to(x.device)

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)
