"""Matching networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks for One Shot
Learning", NeurIPS 2016).

A query's class distribution is an attention-weighted vote of the support labels,
``P(y | x, S) = sum_i a(x, x_i) y_i`` with ``a`` the softmax over the support set of the cosine similarity
between the query embedding f(x) and the support embeddings g(x_i), trained with the log-likelihood of the
query's class on episodes.

With full context embeddings (FCE, the paper's appendix) g and f depend on the support set: g(x_i, S) is the
encoder output plus the forward and backward states of a bidirectional LSTM run over the support set, and
f(x, S) is K steps of an LSTM whose state is read out by attention over g(S):

    h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1});  h_k = h^_k + f'(x)
    r_{k-1} = sum_i softmax_i(h_{k-1} . g(x_i)) g(x_i);      f(x, S) = h_K

starting from h_0 = f'(x), c_0 = 0. With FCE a query's representation depends on its episode, so the method
declares ``embeds_independently = False`` and is evaluated episode by episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.encoders import embedding_dim
from oneshot.methods.base import Episode, LossOutput, Method


def attention_log_probs(
    query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, ways: int, scale: float = 1.0
) -> torch.Tensor:
    """log P(y = c | x) = log sum_{i: y_i = c} softmax_i(scale * cos(f(x), g(x_i))).

    Args:
        query: (Q, D) f(x); support: (S, D) g(x_i); support_labels: (S,) in [0, ways).

    Returns:
        (Q, ways) log-probabilities (-inf for a class without support examples).
    """
    cos = F.normalize(query.float(), dim=1) @ F.normalize(support.float(), dim=1).T  # (Q, S)
    log_attn = F.log_softmax(scale * cos, dim=1)
    member = F.one_hot(support_labels, ways).T.to(log_attn.dtype)  # (ways, S)
    return torch.logsumexp(log_attn[:, None, :] + member.log()[None], dim=2)


class AttentionLSTM(nn.Module):
    """f(x, S): K processing steps of an LSTM with read-out attention over the support set (FCE)."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.input = nn.Linear(dim, 4 * dim)
        self.hidden = nn.Linear(2 * dim, 4 * dim, bias=False)  # acts on [h_{k-1}, r_{k-1}]

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f'(x) (Q, D) and g(S) (S, D) -> f(x, S) (Q, D)."""
        h, c = f, torch.zeros_like(f)
        x_gates = self.input(f)
        for _ in range(self.steps):
            r = torch.softmax(h @ g.T, dim=1) @ g  # (Q, D)
            i, fg, u, o = (x_gates + self.hidden(torch.cat([h, r], 1))).chunk(4, 1)
            c = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(u)
            h = torch.sigmoid(o) * torch.tanh(c) + f
        return h


class MatchingNet(Method):
    """Matching network with cosine attention, optionally with full context embeddings.

    Args:
        encoder: f' = g', (B, C, H, W) -> (B, D).
        fce: use full context embeddings (bidirectional LSTM over the support set, attention LSTM for queries).
        steps: K, processing steps of the attention LSTM (FCE only).
        scale: multiplies the cosine similarities inside the softmax (1 in the paper).
        input_shape: (C, H, W) of the inputs, to size the LSTMs (set from the training data).
    """

    name = "matching"
    option_names = ("fce", "steps", "scale", "input_shape")
    data_options = ("input_shape",)

    def __init__(
        self,
        encoder: nn.Module,
        fce: bool = False,
        steps: int = 5,
        scale: float = 1.0,
        input_shape: Sequence[int] = (1, 28, 28),
    ) -> None:
        super().__init__(encoder)
        self.fce, self.steps, self.scale = bool(fce), int(steps), float(scale)
        self.input_shape = [int(v) for v in input_shape]
        self.embeds_independently = not self.fce  # with FCE, f and g depend on the episode
        if self.fce:
            dim = embedding_dim(encoder, tuple(self.input_shape))
            self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.query_lstm = AttentionLSTM(dim, self.steps)

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a.float(), b.float(), dim=1)

    def context(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full context embeddings: g(x_i, S) (S, D) and f(x, S) (Q, D) from encoder outputs."""
        support, query = support.float(), query.float()
        states, _ = self.support_lstm(support[None])  # (1, S, 2D): forward and backward states
        fwd, bwd = states[0].chunk(2, dim=1)
        g = support + fwd + bwd
        return g, self.query_lstm(query, g)

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        if self.fce:
            support, query = self.context(support, query)
        return attention_log_probs(query, support, support_labels, ways, self.scale)

    def loss(self, episode: Episode) -> LossOutput:
        logits = self.episode_logits(self.embed(torch.cat([episode.support, episode.query])), episode)
        return LossOutput(F.nll_loss(logits, episode.query_labels), logits)
