"""One-shot methods: each a :class:`~oneshot.methods.base.Method` registered by name in :data:`METHODS`.

The registry names each method's class as ``"module:Class"`` and imports it on first use, so listing the
methods (``oneshot train --help``, option checks at the command line's edge) does not load PyTorch. Add a
method with one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from oneshot.choices import check_choice
from oneshot.errors import OneshotError

if TYPE_CHECKING:
    from torch import nn

    from oneshot.methods.base import Method

#: Method name -> "module:Class" (the metric family first, then meta-learning and memory; docs/methods.md).
REGISTRY: dict[str, str] = {
    "protonet": "oneshot.methods.protonet:ProtoNet",
    "siamese": "oneshot.methods.siamese:Siamese",
    "contrastive": "oneshot.methods.contrastive:Contrastive",
    "triplet": "oneshot.methods.triplet:Triplet",
    "matching": "oneshot.methods.matching:MatchingNet",
    "baseline": "oneshot.methods.baseline:Baseline",
    "maml": "oneshot.methods.maml:MAML",
    "fomaml": "oneshot.methods.maml:FOMAML",
    "reptile": "oneshot.methods.reptile:Reptile",
    "memory": "oneshot.methods.memory:MemoryLearner",
    # Self-supervised pretraining (issue 15) and open-set margins (issue 16).
    "simclr": "oneshot.methods.simclr:SimCLR",
    "margin": "oneshot.methods.margin:MarginSoftmax",
    # Molecule assays (issue 14): multi-task activity prior + ProtoNet evidence.
    "activity_prior": "oneshot.methods.activity_prior:ActivityPrior",
}


class _Classes(Mapping[str, "type[Method]"]):
    """The registry as a read-only mapping name -> class, importing each class when it is first looked up."""

    def __getitem__(self, name: str) -> type[Method]:
        module, _, cls = REGISTRY[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


METHODS: Mapping[str, type[Method]] = _Classes()


def build_method(name: str, encoder: nn.Module, **options: Any) -> Method:
    """Instantiate the method registered as ``name`` around ``encoder``."""
    cls = METHODS[check_choice("oneshot", "method", name, REGISTRY)]
    try:
        return cls(encoder, **options)
    except TypeError as exc:
        raise OneshotError(f"bad options for method {name}: {exc}") from None


_EXPORTS = {
    "Episode": "oneshot.methods.base",
    "LossOutput": "oneshot.methods.base",
    "Method": "oneshot.methods.base",
    "TrainShape": "oneshot.methods.base",
    **{ref.partition(":")[2]: ref.partition(":")[0] for ref in REGISTRY.values()},
}
__all__ = ["METHODS", "REGISTRY", "build_method", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'oneshot.methods' has no attribute {name!r}")
