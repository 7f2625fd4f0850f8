"""Transfer-learning baselines: an ordinary classifier over all base classes, then one-shot by transfer.

Training (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification", ICLR 2019): the
encoder and a classifier over every training class are trained with cross-entropy; an episode is just a
class-balanced batch whose labels are mapped to dataset classes through ``episode.classes``. The head is
linear ("Baseline") or cosine with a fixed scale ("Baseline++").

One-shot time (option ``test_time``), the encoder frozen:

- ``simpleshot`` (Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor
  Classification for Few-Shot Learning", 2019): centre features on the base-class mean (a buffer, so it is in
  the checkpoint), L2-normalise, nearest class mean. The mean is tracked during training as a running average
  of the batch means of the features (like batch norm's running statistics).
- ``cosine`` (Baseline++): a new cosine classifier over the support set, weights initialised to the
  normalised class means and fine-tuned on the support examples.
- ``finetune`` (Baseline): a new linear classifier (zero-initialised, so evaluation is deterministic)
  trained on the support examples.

Fine-tuning uses full-batch Adam for ``finetune_steps`` steps at ``finetune_lr`` (Chen et al. use SGD with
batch size 4 for 100 iterations).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.choices import check_choice
from oneshot.encoders import embedding_dim
from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method, base_class_count, nearest_prototype, prototypes
from oneshot.methods.pairs import episode_images

HEADS = ("linear", "cosine")
TEST_TIME = ("simpleshot", "cosine", "finetune")


class CosineHead(nn.Module):
    """logits = scale * cos(z, w_c): (B, D) -> (B, C)."""

    def __init__(self, dim: int, classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * dim**-0.5)  # (C, D)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


def finetune_head(head: nn.Module, support: torch.Tensor, labels: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """Train ``head`` on fixed support features (S, D) with labels (S,) by full-batch Adam."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(support), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head


class Baseline(Method):
    """Classifier over all base classes; one-shot by SimpleShot, Baseline++ cosine head or fine-tuning.

    Args:
        encoder: (B, C, H, W) -> (B, D).
        num_classes: base classes of the training classifier (set from the training data).
        head: training classifier, ``linear`` (Baseline) or ``cosine`` (Baseline++).
        test_time: one-shot rule, ``simpleshot``, ``cosine`` or ``finetune``.
        scale: temperature of cosine classifiers (training head and ``cosine`` test-time head).
        finetune_steps, finetune_lr: fine-tuning of the ``cosine`` and ``finetune`` test-time heads.
        input_shape: (C, H, W) of the inputs, to size the classifier (set from the training data).
    """

    name = "baseline"
    base_mean: torch.Tensor  # (D,) buffer: running mean of base-class features
    base_batches: torch.Tensor  # () long buffer: training batches seen
    option_names = ("num_classes", "head", "test_time", "scale", "finetune_steps", "finetune_lr", "input_shape")
    data_options = ("num_classes", "input_shape")

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = 0,
        head: str = "linear",
        test_time: str = "simpleshot",
        scale: float = 10.0,
        finetune_steps: int = 100,
        finetune_lr: float = 0.01,
        input_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__(encoder)
        self.num_classes = base_class_count("baseline", num_classes)
        self.head = check_choice("baseline", "head", head, HEADS)
        self.test_time = check_choice("baseline", "test_time", test_time, TEST_TIME)
        self.scale, self.finetune_steps, self.finetune_lr = float(scale), int(finetune_steps), float(finetune_lr)
        self.input_shape = [int(v) for v in input_shape]
        dim = embedding_dim(encoder, tuple(self.input_shape))
        self.classifier = (
            nn.Linear(dim, self.num_classes) if self.head == "linear" else CosineHead(dim, self.num_classes, self.scale)
        )
        self.register_buffer("base_mean", torch.zeros(dim))
        self.register_buffer("base_batches", torch.zeros((), dtype=torch.long))

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        support, query = support.float().detach(), query.float().detach()
        if self.test_time == "simpleshot":
            return self.simpleshot(support, support_labels, query, ways)
        with torch.enable_grad():
            if self.test_time == "cosine":
                cosine = CosineHead(support.shape[1], ways, self.scale).to(support.device)
                cosine.weight.data.copy_(F.normalize(prototypes(support, support_labels, ways), dim=1))
                head: nn.Module = cosine
            else:
                head = nn.Linear(support.shape[1], ways).to(support.device)
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            finetune_head(head, support, support_labels, self.finetune_steps, self.finetune_lr)
        return head(query).detach()

    def simpleshot(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """SimpleShot's rule: nearest prototype of features centred on the base-class mean and L2-normalised."""
        s = F.normalize(support - self.base_mean, dim=1)
        return nearest_prototype(s, support_labels, F.normalize(query - self.base_mean, dim=1), ways)

    def loss(self, episode: Episode) -> LossOutput:
        if episode.classes is None:
            raise OneshotError("baseline training needs episode.classes (dataset class ids)")
        x, labels = episode_images(episode)
        z = self.embed(x)
        loss = F.cross_entropy(self.classifier(z).float(), episode.classes[labels])
        with torch.no_grad():
            # Running mean of base-class features: the exact average for the first 100 batches, then an EMA.
            self.base_batches += 1
            momentum = max(1.0 / float(self.base_batches), 0.01)
            self.base_mean.lerp_(z.mean(0).float(), momentum)
            s = episode.support.shape[0]
            logits = self.simpleshot(z[:s], episode.support_labels, z[s:], episode.ways)
        return LossOutput(loss, logits)
