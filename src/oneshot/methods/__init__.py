"""One-shot methods: each a :class:`~oneshot.methods.base.Method` registered by name in :data:`METHODS`."""

from __future__ import annotations

from typing import Any

from torch import nn

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, Method, TrainShape
from oneshot.methods.baseline import Baseline
from oneshot.methods.contrastive import Contrastive
from oneshot.methods.maml import FOMAML, MAML
from oneshot.methods.margin import MarginSoftmax
from oneshot.methods.matching import MatchingNet
from oneshot.methods.memory import MemoryLearner
from oneshot.methods.protonet import ProtoNet
from oneshot.methods.reptile import Reptile
from oneshot.methods.siamese import Siamese
from oneshot.methods.simclr import SimCLR
from oneshot.methods.triplet import Triplet

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (ProtoNet, Siamese, Contrastive, Triplet, MatchingNet, Baseline)
}
# Meta-learning and memory (issue 4).
METHODS.update({cls.name: cls for cls in (MAML, FOMAML, Reptile, MemoryLearner)})
# Self-supervised pretraining (issue 15).
METHODS[SimCLR.name] = SimCLR
# Open-set margins (issue 16).
METHODS[MarginSoftmax.name] = MarginSoftmax


def build_method(name: str, encoder: nn.Module, **options: Any) -> Method:
    """Instantiate the method registered as ``name`` around ``encoder``."""
    if name not in METHODS:
        raise OneshotError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    try:
        return METHODS[name](encoder, **options)
    except TypeError as exc:
        raise OneshotError(f"bad options for method {name}: {exc}") from None


__all__ = [
    "FOMAML", "MAML", "METHODS", "MarginSoftmax", "Baseline", "MemoryLearner", "Reptile", "Contrastive", "Episode", "MatchingNet", "Method", "ProtoNet", "Siamese", "SimCLR", "TrainShape",
    "Triplet", "build_method",
]
