"""Prototypical networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017).

Each class is represented by the mean of its support embeddings (its prototype); a query's logits are the
negative squared Euclidean distances to the prototypes (:func:`~oneshot.methods.base.nearest_prototype`, the
method interface's default rule), trained with cross-entropy over episodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oneshot.methods.base import Episode, LossOutput, Method


class ProtoNet(Method):
    """Prototypical network: logits = -||f(x) - c_k||^2 with c_k the mean support embedding of class k."""

    name = "protonet"  # classify_embeddings: the interface's nearest-prototype rule
    graph_safe_step = True  # no read-back, fixed shapes (index_add_ prototypes, class_labels by division)

    def loss(self, episode: Episode) -> LossOutput:
        # One forward pass over support and query together keeps batch-norm statistics per episode.
        logits = self.episode_logits(self.embed(torch.cat([episode.support, episode.query])), episode)
        return LossOutput(F.cross_entropy(logits, episode.query_labels), logits)
