"""Encoders map a batch of inputs to embeddings: (B, ...) -> (B, D).

Register new encoders in :data:`ENCODERS`; checkpoints store the encoder's name and options and rebuild it
through :func:`build_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from oneshot.encoders.conv4 import Conv4
from oneshot.encoders.molecule_mlp import MoleculeMLP
from oneshot.encoders.resnet12 import ResNet12, resnet12_small
from oneshot.errors import OneshotError

ENCODERS: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "resnet12": ResNet12, "resnet12_small": resnet12_small}
ENCODERS["molecule_mlp"] = MoleculeMLP


def build_encoder(name: str, **options: object) -> nn.Module:
    """Instantiate the encoder registered as ``name`` with ``options``."""
    if name not in ENCODERS:
        raise OneshotError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    try:
        return ENCODERS[name](**options)
    except TypeError as exc:
        raise OneshotError(f"bad options for encoder {name}: {exc}") from None


@torch.no_grad()
def embedding_dim(encoder: nn.Module, input_shape: Sequence[int]) -> int:
    """D for inputs of shape (C, H, W) (or any per-example shape), found by a forward pass on zeros (in eval mode)."""
    was_training = encoder.training
    encoder.eval()
    d = int(encoder(torch.zeros(1, *input_shape)).shape[1])
    encoder.train(was_training)
    return d


__all__ = ["Conv4", "ENCODERS", "MoleculeMLP", "ResNet12", "resnet12_small", "build_encoder", "embedding_dim"]
