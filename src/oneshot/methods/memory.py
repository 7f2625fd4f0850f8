"""A memory-augmented one-shot learner after Kaiser, Nachum, Roy & Bengio, "Learning to Remember Rare
Events" (ICLR 2017).

The memory holds M slots of (key, value, age): keys are L2-normalised embeddings (M, D), values are class
labels (M,), ages count writes since a slot was last touched. With q = normalize(W f(x)) (f the encoder,
W the paper's learned query projection):

* **read**: the nearest neighbour by cosine similarity, n1 = argmax_i q . K[i]; the answer is V[n1]. For
  N-way scores we return, per class, the largest similarity of a slot holding that class (its argmax is V[n1]).
* **memory loss** for the correct value v: among the k nearest slots, p is the most similar with V[p] = v and
  b the most similar with V[b] != v; ``loss = max(q . K[b] - q . K[p] + alpha, 0)`` (margin alpha = 0.1). As in
  the authors' code, a missing positive (or negative) counts as similarity 0. Gradients flow into q; keys are
  constants by default (the paper's ``stop_gradient``), or, with ``key_gradients=True``, into the
  episode's written keys too.
* **write** (the update rule): if V[n1] = v, the key is merged, K[n1] <- normalize(K[n1] + q), A[n1] <- 0;
  otherwise q is written to the oldest slot n' (V[n'] <- v, A[n'] <- 0). All other ages grow by one. Empty
  slots count as oldest; ties go to the lowest index (the paper breaks ties with random age noise, dropped here
  so that evaluation is deterministic).

One-shot use: the memory is episode-local. The support set is written one example at a time (so a class is
known after a single write, and later examples of it either merge into its key or add a new key where the
merged key would be wrong), then the queries are read; :meth:`MemoryLearner.new_memory` gives a memory that
keeps learning as more labelled examples arrive. Training: every episode starts from an empty memory, writes
the support embeddings, and minimises the memory loss of the queries; the encoder and W learn end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.errors import OneshotError
from oneshot.methods.base import Episode, LossOutput, Method, full_precision


class KeyValueMemory:
    """An episode-local key-value memory with ages (Kaiser et al. 2017).

    Args:
        size: M, number of slots.
        dim: D, key size.
        choose_k: k, the neighbourhood size used by the memory loss (256 in the paper).
        margin: alpha of the memory loss (0.1 in the paper).
        device, dtype: of the keys.

    Attributes:
        keys: (M, D) normalised keys (zeros in empty slots).
        values: (M,) int64 labels, -1 in empty slots.
        ages: (M,) float ages, +inf in empty slots (so empty slots are written first).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        choose_k: int = 256,
        margin: float = 0.1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if size < 1:
            raise OneshotError(f"memory size must be >= 1 (got {size})")
        self.size, self.dim, self.choose_k, self.margin = size, dim, choose_k, margin
        self.keys = torch.zeros(size, dim, device=device, dtype=dtype)
        self.values = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ages = torch.full((size,), float("inf"), device=device)

    @property
    def filled(self) -> torch.Tensor:
        """(M,) bool: slots holding a key."""
        return self.values >= 0

    def similarities(self, q: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised queries -> (B, M) cosine similarities, -inf at empty slots."""
        sims = q @ self.keys.T
        return sims.masked_fill(~self.filled[None], float("-inf"))

    def read(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest neighbour of each query (B, D): (values (B,), similarities (B,), slot indices (B,)); value -1 if empty."""
        sims = self.similarities(q)
        best, idx = sims.max(dim=1)
        return self.values[idx], best, idx

    def class_scores(self, q: torch.Tensor, classes: int) -> torch.Tensor:
        """(B, D) queries -> (B, classes): the best similarity of a slot of each class (-2 where a class has none)."""
        sims = full_precision(q @ self.keys.T)
        out = torch.full((q.shape[0], classes), -2.0, device=q.device, dtype=sims.dtype)
        held = self.filled & (self.values < classes)
        if held.any():
            idx = self.values[held].expand(q.shape[0], -1)
            out = out.scatter_reduce(1, idx, sims[:, held], reduce="amax", include_self=True)
        return out

    def loss(self, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Memory loss (B,) of queries q (B, D) with correct values v (B,), over each query's k nearest slots."""
        sims = self.similarities(q)
        k = min(self.choose_k, int(self.filled.sum()))
        if k == 0:
            return torch.zeros(q.shape[0], device=q.device)
        top, idx = sims.topk(k, dim=1)
        same = self.values[idx] == v[:, None]
        zero = torch.zeros((), device=q.device, dtype=top.dtype)
        pos = torch.where(same, top, torch.full_like(top, float("-inf"))).max(1).values
        neg = torch.where(~same, top, torch.full_like(top, float("-inf"))).max(1).values
        pos = torch.where(torch.isinf(pos), zero, pos)
        neg = torch.where(torch.isinf(neg), zero, neg)
        return F.relu(neg - pos + self.margin)

    def write(self, q: torch.Tensor, v: int) -> int:
        """Write one normalised key q (D,) with value v by the paper's update rule; returns the slot used."""
        sims = self.similarities(q[None])[0]
        keys = self.keys.clone()
        n1 = int(sims.argmax()) if bool(self.filled.any()) else -1
        self.ages = self.ages + 1
        if n1 >= 0 and int(self.values[n1]) == v:
            slot = n1
            keys[slot] = F.normalize(self.keys[slot] + q, dim=0)
        else:
            slot = int(self.ages.argmax())  # oldest (empty slots are +inf); first index on ties
            keys[slot] = q
            self.values = self.values.clone()
            self.values[slot] = v
        self.keys = keys
        self.ages = self.ages.clone()
        self.ages[slot] = 0.0
        return slot

    def write_all(self, q: torch.Tensor, v: torch.Tensor) -> None:
        """Write keys (B, D) with values (B,) one after another, in order."""
        for i in range(q.shape[0]):
            self.write(q[i], int(v[i]))


class MemoryLearner(Method):
    """Encoder + query projection + episode-local key-value memory, trained with the memory loss.

    Args:
        encoder: ``(B, C, H, W) -> (B, D)``.
        embedding_dim: D, the encoder's output size.
        key_dim: size of the projected, normalised keys.
        memory_size: slots per episode memory (at least the support set size is always allocated).
        choose_k: neighbourhood of the memory loss (256 in the paper).
        margin: alpha of the memory loss (0.1 in the paper).
        key_gradients: let the loss also train the support embeddings written as keys (default: keys are constants, as in the paper).
    """

    name = "memory"
    option_names = ("embedding_dim", "key_dim", "memory_size", "choose_k", "margin", "key_gradients")

    def __init__(
        self,
        encoder: nn.Module,
        embedding_dim: int = 64,
        key_dim: int = 64,
        memory_size: int = 512,
        choose_k: int = 256,
        margin: float = 0.1,
        key_gradients: bool = False,
    ) -> None:
        super().__init__(encoder)
        self.embedding_dim, self.key_dim, self.memory_size = int(embedding_dim), int(key_dim), int(memory_size)
        self.choose_k, self.margin, self.key_gradients = int(choose_k), float(margin), bool(key_gradients)
        self.query_proj = nn.Linear(self.embedding_dim, self.key_dim, bias=False)

    def keys_of(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder embeddings (B, D) -> normalised memory keys (B, key_dim), in float32 at least."""
        return F.normalize(full_precision(self.query_proj(full_precision(z))), dim=1)

    def new_memory(self, size: int | None = None, device: torch.device | str | None = None) -> KeyValueMemory:
        """An empty memory (``size`` slots, default ``memory_size``)."""
        dev = device if device is not None else self.query_proj.weight.device
        return KeyValueMemory(size or self.memory_size, self.key_dim, self.choose_k, self.margin, dev)

    def _episode_memory(self, keys: torch.Tensor, labels: torch.Tensor) -> KeyValueMemory:
        mem = KeyValueMemory(
            max(self.memory_size, keys.shape[0]), self.key_dim, self.choose_k, self.margin, keys.device, keys.dtype
        )
        mem.write_all(keys, labels)
        return mem

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Write the support keys (S, D) one by one into an empty memory, read the queries (Q, D): scores (Q, N)."""
        mem = self._episode_memory(self.keys_of(support).detach(), support_labels)
        return mem.class_scores(self.keys_of(query), ways)

    def loss(self, episode: Episode) -> LossOutput:
        """Mean memory loss of the queries against a memory holding the episode's support set; scores (N*Q, N)."""
        n_support = episode.support.shape[0]
        z = self.embed(torch.cat([episode.support, episode.query]))  # one pass: batch norm over the episode
        keys = self.keys_of(z)
        s_keys = keys[:n_support] if self.key_gradients else keys[:n_support].detach()
        mem = self._episode_memory(s_keys, episode.support_labels)
        q = keys[n_support:]
        return LossOutput(mem.loss(q, episode.query_labels).mean(), mem.class_scores(q.detach(), episode.ways))
