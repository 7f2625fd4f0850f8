"""A cosine-softmax intent classifier fitted on the few labelled embeddings, initialised at the templates.

SetFit (Tunstall et al. 2022) ends with a classifier fitted on the support's embeddings; here that classifier
is a cosine-softmax layer (Gidaris & Komodakis 2018; Chen et al. 2019, "A Closer Look at Few-shot
Classification", Baseline++) whose class weights **start at the nearest-template rule's templates** -- the
unit mean of each class's examples and, when given, its description (the description prior,
:func:`oneshot.modalities.text.intents.class_templates`) -- and are then tuned with cross-entropy on the
support. The scale (an inverse temperature) bounds the logits, so the fit cannot drive the weights far
from the templates: it is the one setting that matters (chosen on CLINC150 ``val``). At zero steps it *is* the nearest-template rule; the
steps move each weight towards what separates its class from the others' examples.

Everything works on unit embeddings (N, D) float32 from any text embedder (frozen or tuned), so the
benchmark, ``oneshot predict --domain text`` and the tests share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities.text.intents import class_means, class_templates, unit

#: Rejection scores a classifier's logits give (higher = more in scope); see :func:`rejection_scores`.
REJECTION_SCORES = ("max_cosine", "max_probability", "margin", "energy")
#: ... and the one that needs the classifier's templates too (:meth:`CosineClassifier.rejection_scores`).
TEMPLATE_COSINE = "template_cosine"
#: ... and the one that needs the class means: minus the smallest squared Euclidean distance of the unit query
#: to a class mean (:func:`mean_distance`); the out-of-scope score chosen on CLINC150 val (docs/text.md).
MEAN_DISTANCE = "mean_distance"


@dataclass
class CosineClassifier:
    """Unit class weights (C, D), the scale the cosines are multiplied by before the softmax, the
    templates (C, D) the weights started from, and the class means (C, D) the templates are the directions
    of (:func:`oneshot.modalities.text.intents.class_means`; None: ``mean_distance`` is unavailable)."""

    weights: np.ndarray
    scale: float
    templates: np.ndarray
    means: np.ndarray | None = None

    def cosines(self, x: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, C) cosines to the class weights."""
        return unit(np.asarray(x, np.float32)) @ self.weights.T

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, C) ``scale * cosine``."""
        return self.scale * self.cosines(x)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, C) class probabilities (softmax of the logits)."""
        return softmax(self.logits(x))

    def rejection_scores(self, x: np.ndarray, rule: str, predicted: np.ndarray | None = None) -> np.ndarray:
        """(N, D) -> (N,) in-scope scores: a :data:`REJECTION_SCORES` rule on the logits, or
        ``template_cosine``: the cosine of each query to the *template* of its predicted class (``predicted``
        (N,), default the classifier's own prediction) -- the tuned weights classify, the templates judge
        closeness; or ``mean_distance`` (:func:`mean_distance` to the class means; ``predicted`` unused)."""
        if rule == MEAN_DISTANCE:
            if self.means is None:
                raise OneshotError("this classifier has no class means: refit it to score mean_distance")
            return mean_distance(x, self.means)
        if rule != TEMPLATE_COSINE:
            return rejection_scores(self.logits(x), rule, self.scale)
        x = unit(np.asarray(x, np.float32))
        pred = self.cosines(x).argmax(1) if predicted is None else np.asarray(predicted)
        return np.einsum("nd,nd->n", x, self.templates[pred]).astype(np.float32)


@dataclass
class ClassifierConfig:
    """Settings of :func:`fit_cosine_classifier` (chosen on CLINC150's ``val``, docs/text.md).

    Attributes:
        scale: logits are ``scale * cosine`` (an inverse temperature).
        steps / lr: full-batch Adam steps on the weights and their learning rate (0 steps: the templates);
            with the bounded logits of a scale-10 cosine layer the fit has converged by 100 steps (on val,
            300 steps or lr 0.03 changed accuracy by at most 0.02 points).
        prior_weight: the description counts as this many examples, both in the initial template and as a
            training example of its class.
        label_smoothing: cross-entropy label smoothing (0: none; measured on val, not kept: docs/text.md).
    """

    scale: float = 10.0
    steps: int = 100
    lr: float = 0.01
    prior_weight: float = 1.0
    label_smoothing: float = 0.0


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C)."""
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def fit_cosine_classifier(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    prior: np.ndarray | None = None,
    cfg: ClassifierConfig | None = None,
) -> CosineClassifier:
    """Fit the classifier on unit embeddings ``x`` (N, D) with labels ``y`` (N,) in [0, C).

    Args:
        prior: (C, D) description embeddings or None (a zero row: that class has none); a class with neither
            example nor description is refused.
    Returns:
        the fitted :class:`CosineClassifier`; deterministic (full batch, no sampling).
    """
    import torch

    cfg = cfg or ClassifierConfig()
    x = unit(np.asarray(x, np.float32))
    y = np.asarray(y, np.int64)
    counts = np.bincount(y, minlength=n_classes)
    described = np.zeros(n_classes, bool) if prior is None else np.linalg.norm(prior, axis=1) > 0
    if len(counts) > n_classes or ((counts == 0) & ~described).any():
        raise OneshotError("every class needs an example or a description, and labels must be below n_classes")
    init = class_templates(x, y, n_classes, prior=prior, prior_weight=cfg.prior_weight)
    means = class_means(x, y, n_classes, prior=prior, prior_weight=cfg.prior_weight)
    if cfg.steps <= 0:
        return CosineClassifier(init, cfg.scale, init, means)
    weight = np.ones(len(x), np.float32)
    if prior is not None:
        has = np.flatnonzero(np.linalg.norm(prior, axis=1) > 0)  # a zero row: that class has no description
        x = np.concatenate([x, unit(np.asarray(prior, np.float32)[has])])
        y = np.concatenate([y, has])
        weight = np.concatenate([weight, np.full(len(has), cfg.prior_weight, np.float32)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread avoids OpenMP waits on the shared CPU
    try:
        w = _train(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(weight), torch.from_numpy(init), cfg)
    finally:
        torch.set_num_threads(threads)
    return CosineClassifier(w, cfg.scale, init, means)


def _train(x: Any, y: Any, weight: Any, init: Any, cfg: ClassifierConfig) -> np.ndarray:
    """Full-batch Adam on the class weights; x (N, D) unit, y (N,), weight (N,), init (C, D) unit."""
    import torch

    w = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=cfg.lr)
    total = weight.sum()
    for _ in range(cfg.steps):
        wn = torch.nn.functional.normalize(w, dim=-1)
        ce = torch.nn.functional.cross_entropy(cfg.scale * x @ wn.T, y, reduction="none", label_smoothing=cfg.label_smoothing)
        loss = (ce * weight).sum() / total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return unit(w.detach().numpy())


def rejection_scores(logits: np.ndarray, rule: str, scale: float = 1.0) -> np.ndarray:
    """(N, C) logits -> (N,) in-scope scores (a query scoring below a threshold is rejected).

    Rules: ``max_cosine`` (the best logit / ``scale``: the best cosine of a cosine classifier),
    ``max_probability`` (softmax maximum, Hendrycks & Gimpel 2017), ``margin`` (best minus second-best
    probability), ``energy`` (``logsumexp`` of the logits, the negative free energy of Liu et al. 2020).
    """
    if rule == "max_cosine":
        return (logits.max(1) / scale).astype(np.float32)
    if rule == "energy":
        m = logits.max(1)
        return (m + np.log(np.exp(logits - m[:, None]).sum(1))).astype(np.float32)
    p = softmax(logits)
    if rule == "max_probability":
        return p.max(1)
    if rule == "margin":
        top = np.sort(p, axis=1)[:, -2:]
        return (top[:, 1] - top[:, 0]).astype(np.float32)
    raise OneshotError(
        f"unknown rejection score {rule!r}: use one of {', '.join(REJECTION_SCORES + (TEMPLATE_COSINE, MEAN_DISTANCE))}"
    )


def mean_distance(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(N, D) embeddings, (C, D) class means -> (N,) ``-min_c ||unit(x) - mean_c||^2``, in [-4, 0] (higher = more
    in scope). Equivalently ``max_c (2 cos(x, mean_c) |mean_c| - |mean_c|^2) - 1``: a class whose examples
    agree (a long mean) must be approached more closely than a spread-out one. It is the Mahalanobis
    distance of Lee et al. (2018) with the shared covariance shrunk all the way to the identity (on CLINC150
    val, shrinkage 0.05 ... 1 only rose towards 1: docs/text.md)."""
    q = unit(np.asarray(x, np.float32)).astype(np.float64)
    m = np.asarray(means, np.float64)
    d2 = 1.0 - 2.0 * q @ m.T + (m * m).sum(1)[None, :]  # |q|^2 = 1
    return (-np.maximum(d2, 0.0).min(1)).astype(np.float32)
