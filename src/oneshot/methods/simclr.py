"""Self-supervised contrastive pretraining (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020), as a method on the one training loop.

A training batch is B distinct images of an *unlabelled* pool: the sampler draws "B-way 1-shot 0-query"
episodes from a pool in which every image is its own class, so no dataset label is ever read. Each image is
augmented twice (:class:`~oneshot.data.augment.Augment`); a projection head (Linear-ReLU-Linear) maps the
encoder's features to the space where the NT-Xent loss pulls the two views of one image together and pushes
the other 2B - 2 views away, at temperature ``tau``. The head is dropped for one-shot use: ``embed`` returns
the encoder's features, and episodes are classified by cosine similarity to class means (``test_time``
``prototype``) or by a logistic regression fitted on the L2-normalised support embeddings (``logistic``, inverse
regularisation ``logistic_c``; an evaluation rule that changes no weights, so a checkpoint can be scored both ways).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.data.augment import Augment
from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method, full_precision, logistic_logits, prototypes

TEST_TIME = ("prototype", "logistic")


class SimCLR(Method):
    """SimCLR: NT-Xent over two augmented views; one-shot classification by cosine to prototypes.

    Args:
        feature_dim: D of the encoder's output (sizes the head).
        proj_dim: output size of the projection head.
        tau: softmax temperature of NT-Xent.
        augment: :class:`Augment` settings of the views.
        test_time: one-shot rule, ``prototype`` (cosine to class means) or ``logistic`` (support-fitted
            logistic regression).
        logistic_c: inverse L2 regularisation of the ``logistic`` rule.
    """

    name = "simclr"

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int = 256,
        proj_dim: int = 128,
        tau: float = 0.2,
        augment: dict[str, Any] | None = None,
        test_time: str = "prototype",
        logistic_c: float = 10.0,
    ) -> None:
        super().__init__(encoder)
        self.feature_dim, self.proj_dim, self.tau = int(feature_dim), int(proj_dim), float(tau)
        self.augment_settings = dict(
            augment
            or {"flip": 0.5, "vflip": 0.5, "scale": [0.3, 1.0], "rotate": 15.0, "shift": 0.1, "brightness": 0.3, "contrast": 0.4}
        )
        self.augment = Augment.from_dict(self.augment_settings)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim), nn.ReLU(inplace=True), nn.Linear(self.feature_dim, self.proj_dim)
        )
        self._step = 0
        if test_time not in TEST_TIME:
            raise OneshotError(f"simclr: test_time must be one of {', '.join(TEST_TIME)}, not {test_time!r}")
        self.test_time, self.logistic_c = test_time, float(logistic_c)

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature_dim": self.feature_dim, "proj_dim": self.proj_dim, "tau": self.tau}
        out["augment"] = self.augment_settings
        if self.test_time != "prototype":  # written only when not the default: older checkpoints' options unchanged
            out.update(test_time=self.test_time, logistic_c=self.logistic_c)
        return out

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        if self.test_time == "logistic":
            s, q = F.normalize(full_precision(support).float(), dim=1), F.normalize(full_precision(query).float(), dim=1)
            return logistic_logits(s, support_labels, q, ways, self.logistic_c)
        p = F.normalize(prototypes(F.normalize(full_precision(support), dim=1), support_labels, ways), dim=1)
        return F.normalize(full_precision(query), dim=1) @ p.T / 0.1

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a.float(), b.float(), dim=1)

    def loss(self, episode: Episode) -> LossOutput:
        x = torch.cat([episode.support, episode.query]).float()
        assert self.augment is not None
        self._step += 1
        gen = torch.Generator().manual_seed(self._step)
        views = torch.cat([self.augment(x, gen), self.augment(x, gen)])
        z = F.normalize(full_precision(self.head(self.embed(views))), dim=1)
        b = x.shape[0]
        sim = z @ z.T / self.tau
        sim.fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
        return LossOutput(F.cross_entropy(sim, target), sim[:b, b:], torch.arange(b, device=z.device))
