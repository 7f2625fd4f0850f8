"""The interface every one-shot method implements, so training and evaluation never branch on a method's name.

A method is an ``nn.Module`` that owns its encoder. Training calls :meth:`Method.training_sampler` for
index batches and :meth:`Method.loss` on the gathered batch. Everything else uses two entry points:
:meth:`Method.embed` ("embed these inputs") and :meth:`Method.classify` ("classify this episode"), which
adaptive methods implement with whatever gradients they need, so callers simply run them under ``no_grad``.
Methods that embed inputs independently (:attr:`Method.embeds_independently`) also score an episode from
embeddings (:meth:`Method.classify_embeddings`), which lets evaluation embed a test set once; the default
rule is the nearest prototype (Snell et al. 2017), which metric methods override only where they differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from oneshot.data.imageset import ImageSet
from oneshot.data.samplers import EpisodeSampler, IndexSampler
from oneshot.errors import OneshotError


def base_class_count(method: str, num_classes: int) -> int:
    """The number of base classes of a method's training classifier, refused below 2 (``oneshot train`` sets it
    from the training data)."""
    if int(num_classes) < 2:
        raise OneshotError(f"{method} needs num_classes >= 2 (set from the training data by oneshot train)")
    return int(num_classes)


def full_precision(z: torch.Tensor) -> torch.Tensor:
    """Upcast bfloat16/float16 tensors (from autocast) to float32; float32 and float64 pass unchanged."""
    return z.float() if z.dtype in (torch.bfloat16, torch.float16) else z


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means: embeddings (S, D), labels (S,) in [0, ways) -> (ways, D)."""
    sums = torch.zeros(ways, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    # Counted by index_add_, not bincount: bincount on a GPU reads the labels' maximum back (a wait per step).
    counts = torch.zeros(ways, dtype=embeddings.dtype, device=embeddings.device)
    counts.index_add_(0, labels, torch.ones(labels.shape[0], dtype=embeddings.dtype, device=embeddings.device))
    return sums / counts.clamp_min(1)[:, None]


def class_labels(ways: int, per_class: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Labels (ways * per_class,): 0 repeated ``per_class`` times, then 1, ... -- the class-major order of an
    episode's support or query set. Built by integer division, not ``repeat_interleave``, which on a GPU reads
    its output size back (a wait for the GPU on every training step)."""
    return torch.div(torch.arange(ways * per_class, device=device), per_class, rounding_mode="floor")


def logistic_logits(
    support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, c: float = 10.0, max_iter: int = 50
) -> torch.Tensor:
    """Log-probabilities (Q, N) of query embeddings (Q, D) under a multinomial logistic regression fitted on the
    support embeddings (S, D) with labels (S,) in [0, N): it minimises ``0.5 |W|^2 + c * sum_i CE(W s_i + b, y_i)``
    (intercept b unpenalised), the objective of scikit-learn's multinomial ``LogisticRegression(C=c)`` (N > 2).

    The optimal W lies in the span of the support embeddings, so the fit is exact in the S coordinates of an
    orthonormal basis of that span (QR): Newton's method with step halving in float64 on N x (S + 1)
    parameters from zero, deterministic and a few milliseconds per episode."""
    s, q = support.detach().double(), query.detach().double()
    basis, r = torch.linalg.qr(s.T)  # (D, S) orthonormal, (S, S): s = r.T @ basis.T
    x = torch.cat([r.T, torch.ones(s.shape[0], 1, dtype=s.dtype, device=s.device)], dim=1)  # (S, S + 1)
    penalty = torch.ones(x.shape[1], dtype=s.dtype, device=s.device)
    penalty[-1] = 0.0
    y = F.one_hot(labels, ways).to(s.dtype)
    theta = torch.zeros(ways, x.shape[1], dtype=s.dtype, device=s.device)

    def objective(t: torch.Tensor) -> torch.Tensor:
        return 0.5 * (t.pow(2) * penalty).sum() - c * (torch.log_softmax(x @ t.T, dim=1) * y).sum()

    ridge = torch.diag((penalty + 1e-9).repeat(ways))  # the penalty's Hessian (intercepts: a tiny ridge)
    value = objective(theta)
    for _ in range(max_iter):
        p = torch.softmax(x @ theta.T, dim=1)  # (S, N)
        grad = theta * penalty + c * (p - y).T @ x
        if grad.abs().max() < 1e-9:
            break
        w = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (S, N, N)
        hess = c * torch.einsum("ikl,ij,im->kjlm", w, x, x).reshape(grad.numel(), grad.numel()) + ridge
        step = torch.linalg.solve(hess, grad.reshape(-1)).reshape(theta.shape)
        t = 1.0
        while t > 1e-6 and (new := objective(theta - t * step)) > value:
            t /= 2
        theta, value = theta - t * step, new
    weights = theta[:, :-1] @ basis.T  # (N, D)
    return torch.log_softmax(q @ weights.T + theta[:, -1], dim=1).float()


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances: (Q, D), (N, D) -> (Q, N), computed as |a|^2 - 2ab + |b|^2."""
    return (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None]).clamp_min(0)


def nearest_prototype(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """The nearest-prototype rule (Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017):
    logits (Q, N) = -||query - c_k||^2, c_k the mean of class k's support embeddings (S, D); query (Q, D)."""
    return -squared_euclidean(full_precision(query), prototypes(full_precision(support), support_labels, ways))


@dataclass
class LossOutput:
    """What :meth:`Method.loss` gives the training loop: the scalar loss to back-propagate and the (N*Q, N)
    query logits (task-major for T tasks: (T*N*Q, N)) that the loop turns into a logged training accuracy;
    ``labels`` are the logits' targets when they are not the episode's query labels (e.g. SimCLR's positive
    views). Unpacks as ``loss, logits``."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.loss, self.logits))

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.loss, self.logits)[i]


@dataclass
class Episode:
    """A gathered N-way K-shot episode (class-major, episode labels 0..N-1).

    Attributes:
        support: (N*K, C, H, W) float inputs.
        support_labels: (N*K,) int64.
        query: (N*Q, C, H, W) float inputs.
        query_labels: (N*Q,) int64.
        ways: N.
        shots: K.
        classes: (N,) int64 dataset class ids of the episode labels (``classes[label]``), for methods
            that learn over all base classes (transfer baselines) or need global identities.
        tasks: T, the number of tasks stacked task-major in this batch (meta-learning meta-batches): a
            sampler that yields T episodes' indices concatenated (all supports, then all queries) gets
            support (T*N*K, ...) with labels tiled per task, and ``classes`` (T*N,).
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    ways: int
    shots: int
    classes: torch.Tensor | None = None
    tasks: int = 1


@dataclass
class TrainShape:
    """The shape of training batches: N-way K-shot episodes with Q queries per class."""

    ways: int = 60
    shots: int = 1
    queries: int = 5


class Method(nn.Module):
    """Base class of one-shot methods.

    Subclasses set :attr:`name`, implement :meth:`loss`, override :meth:`classify_embeddings` when their
    rule is not the nearest prototype (metric methods) or :meth:`classify` (adaptive methods), and name their
    constructor options in :attr:`option_names` (each kept in the attribute of that name) and those the
    training data sets in :attr:`data_options`.
    """

    name: ClassVar[str] = ""
    #: Class default; Matching Networks set it per instance (False with full-context embeddings).
    embeds_independently: bool = True
    # The training step reads nothing back from the GPU and keeps its shapes: it may be recorded as one CUDA
    # graph (``--compile step-graph``, oneshot.step_graph). Set per method once checked on a GPU.
    graph_safe_step: ClassVar[bool] = False
    option_names: ClassVar[tuple[str, ...]] = ()
    data_options: ClassVar[tuple[str, ...]] = ()  # of "num_classes" (base classes), "input_shape" ((C, H, W))
    #: Options added after checkpoints were written, with the value such a checkpoint (which lacks them) meant;
    #: ``load_checkpoint`` fills them in, so a stored option set keeps its meaning when a default changes.
    legacy_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def options(self) -> dict[str, Any]:
        """Constructor options (besides the encoder), stored in checkpoints to rebuild the method: the
        attributes named in :attr:`option_names`, in that order."""
        return {name: getattr(self, name) for name in self.option_names}

    @classmethod
    def options_for_data(cls, data: ImageSet) -> dict[str, Any]:
        """Constructor options that depend on the training data, those of :attr:`data_options` (e.g. the number
        of base classes of a transfer baseline's classifier); ``experiment.train_model`` merges them under the
        user's options."""
        out: dict[str, Any] = {}
        if "num_classes" in cls.data_options:
            out["num_classes"] = data.num_classes
        if "input_shape" in cls.data_options:
            out["input_shape"] = list(data.images.shape[1:])
        return out

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Similarity (P,) of embedding pairs a, b (P, D), higher = more likely the same class; used by
        verification. Default: negative squared Euclidean distance; methods with a learned pair score
        (Siamese) override it."""
        return -(a.float() - b.float()).pow(2).sum(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) embeddings, in float32 at least (half-precision autocast outputs are upcast)."""
        return full_precision(self.encoder(x))

    def training_sampler(self, data: ImageSet, shape: TrainShape, episodes: int, seed: int, start: int) -> IndexSampler:
        """The sampler of training batches (it says how many tasks a batch holds); episodic by default, or the
        data's own ``episode_sampler`` (e.g. 2-way episodes within one assay for molecules, :mod:`oneshot.data.assays`)."""
        own = getattr(data, "episode_sampler", None)
        if own is not None:
            return own(shape, episodes, seed, start)
        return EpisodeSampler(data.class_indices, shape.ways, shape.shots, shape.queries, episodes, seed, start)

    def loss(self, episode: Episode) -> LossOutput:
        """Training loss on one episode (or T stacked tasks) and its query logits."""
        raise NotImplementedError

    def outer_optimizer(self, episodes: int) -> tuple[torch.optim.Optimizer, Any] | None:
        """The optimiser and learning-rate scheduler of a run of ``episodes`` steps when the method prescribes
        its own (Reptile's annealed outer step), else None: the training loop's Adam and step schedule."""
        return None

    def classify_embeddings(
        self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Logits (Q, N) from support embeddings (S, D) with labels (S,) in [0, N) and query embeddings (Q, D):
        the nearest-prototype rule unless a method overrides it."""
        return nearest_prototype(support, support_labels, query, ways)

    def episode_logits(self, z: torch.Tensor, episode: Episode) -> torch.Tensor:
        """Query logits (N*Q, N) of a single-task episode from the embeddings z (N*K + N*Q, D) of its support
        then query inputs (one forward pass over the whole episode)."""
        n = episode.support.shape[0]
        return self.classify_embeddings(z[:n], episode.support_labels, z[n:], episode.ways)

    def classify(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """ "Classify this episode": logits (Q, N) for query inputs (Q, C, H, W) given labelled support inputs
        (S, C, H, W) with labels (S,) in [0, N). Callers run it under ``no_grad``; a method that adapts to the
        support set enables the gradients it needs itself."""
        return self.classify_embeddings(self.embed(support), support_labels, self.embed(query), ways)
