"""Normalised softmax with an additive margin over all base classes, as face recognition trains for open sets.

The encoder's embedding z and one weight vector w_c per training class are L2-normalised, so the logits
are ``s * cos(theta_c)``; the target class's logit is penalised by a margin before the softmax, which forces
every class to win by that margin and leaves wide gaps between classes -- room for strangers:

- ``arcface`` (Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
  Recognition", CVPR 2019): target logit ``s * cos(theta_y + m)``. Where ``theta_y + m`` would pass pi the
  curve stops decreasing, so past ``theta_y > pi - m`` the target logit is ``s * (cos(theta_y) - m sin(m))``
  (the paper's fall-back that keeps it monotonic).
- ``cosface`` (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018; also
  "AM-Softmax", Wang, Cheng, Liu & Liu 2018): target logit ``s * (cos(theta_y) - m)``.

Training batches are the episodes of the one training loop; their labels are mapped to dataset classes
through ``episode.classes`` (as the transfer baselines do). One-shot time: cosine similarity to each
class's normalised prototype (the gallery's own rule), so ``embed`` is what a gallery stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.choices import check_choice
from oneshot.encoders import embedding_dim
from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method, base_class_count, prototypes
from oneshot.methods.pairs import episode_images

MARGINS = ("arcface", "cosface")


def margin_logits(cos: torch.Tensor, target: torch.Tensor, kind: str, margin: float, scale: float) -> torch.Tensor:
    """Scaled logits with the margin applied to each row's target class.

    Args:
        cos: (B, C) cosine similarities of normalised embeddings and class weights.
        target: (B,) int64 target class of each row.
        kind: ``arcface`` (additive angular margin) or ``cosface`` (additive cosine margin).
        margin: m, in radians for ``arcface``, in cosine units for ``cosface``.
        scale: s, the softmax temperature's inverse.

    Returns:
        (B, C) logits ``s * cos`` with the target entries replaced by the margin-penalised value.
    """
    cos = cos.float()
    c_y = cos.gather(1, target[:, None]).squeeze(1)
    if kind == "cosface":
        penalised = c_y - margin
    else:
        c = c_y.clamp(-1.0, 1.0)
        sin = (1.0 - c * c).clamp_min(0.0).sqrt()
        shifted = c * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
        penalised = torch.where(c > math.cos(math.pi - margin), shifted, c - margin * math.sin(margin))
    logits = cos.scatter(1, target[:, None], penalised[:, None])
    return scale * logits


class MarginSoftmax(Method):
    """ArcFace / CosFace classifier over every base class; one-shot by cosine to prototypes.

    Args:
        encoder: (B, C, H, W) -> (B, D).
        num_classes: base classes of the training classifier (set from the training data).
        margin_type: ``arcface`` or ``cosface``.
        margin: m (ArcFace: radians, 0.5 in the paper; CosFace: cosine, 0.35 in the paper).
        scale: s (64 in both papers for faces; 30 suits a few thousand classes).
        input_shape: (C, H, W) of the inputs, to size the classifier (set from the training data).
    """

    name = "margin"
    option_names = ("num_classes", "margin_type", "margin", "scale", "input_shape")
    data_options = ("num_classes", "input_shape")

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = 0,
        margin_type: str = "arcface",
        margin: float = 0.3,
        scale: float = 30.0,
        input_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__(encoder)
        self.num_classes = base_class_count("margin", num_classes)
        if not 0 <= float(margin) < math.pi / 2:
            raise OneshotError(f"margin {margin} must be in [0, pi/2): e.g. 0.3 (arcface) or 0.25 (cosface)")
        if float(scale) <= 0:
            raise OneshotError(f"scale {scale} must be positive, e.g. 30")
        self.margin_type = check_choice("margin", "margin_type", margin_type, MARGINS)
        self.margin, self.scale = float(margin), float(scale)
        self.input_shape = [int(v) for v in input_shape]
        dim = embedding_dim(encoder, tuple(self.input_shape))
        self.weight = nn.Parameter(torch.randn(self.num_classes, dim) * dim**-0.5)

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (P,) of embedding pairs (P, D)."""
        return F.cosine_similarity(a.float(), b.float(), dim=1)

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Cosine logits (Q, N) to the normalised mean of each class's normalised support embeddings."""
        protos = F.normalize(prototypes(F.normalize(support.float(), dim=1), support_labels, ways), dim=1)
        return self.scale * F.normalize(query.float(), dim=1) @ protos.T

    def loss(self, episode: Episode) -> LossOutput:
        if episode.classes is None:
            raise OneshotError("margin training needs episode.classes (dataset class ids)")
        x, labels = episode_images(episode)
        z = self.embed(x)
        cos = F.normalize(z.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).T
        target = episode.classes[labels]
        loss = F.cross_entropy(margin_logits(cos, target, self.margin_type, self.margin, self.scale), target)
        with torch.no_grad():
            s = episode.support.shape[0]
            logits = self.classify_embeddings(z[:s], episode.support_labels, z[s:], episode.ways)
        return LossOutput(loss, logits)
