"""Inference options of the one evaluation path (issue 16): shift test-time augmentation, ensembles of
checkpoints, and the transductive soft k-means rule.

* **shift TTA** (inductive: each image is processed alone): an image's embedding is the mean of the method's
  embeddings of the image and of its four copies shifted by ``shift_pixels(size)`` pixels left, right, up and
  down (border pixels repeated, so the inverted Omniglot background stays 0).
* **ensembles** (inductive): several checkpoints trained on the same split; an image's embedding is the
  concatenation of each member's L2-normalised embedding, divided by sqrt(M) (unit norm), and the rule is the
  nearest prototype on it (members' own rules, e.g. Siamese's learned score, are not used).
* **soft k-means** (transductive, Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot
  Classification"): the prototypes are refined with the episode's unlabelled queries, ``steps`` times: each
  query is assigned softly to the classes by softmax(-||q - c_k||^2 / temperature), and each prototype
  becomes the weighted mean of its support embeddings (weight 1) and the queries (their assignment weights).
  It uses every query of the episode together, so its figures are a separate, transductive row.

Off (``InferenceOptions()``), evaluation is exactly the method's own path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from oneshot.errors import OneshotError
from oneshot.evaluation import embed_all
from oneshot.methods.base import Method, full_precision, nearest_prototype, prototypes, squared_euclidean

TTA_MODES = ("none", "shift")
#: Soft k-means settings chosen on the Vinyals validation split (benchmarks/results/omniglot_inference.json).
SOFT_KMEANS_STEPS, SOFT_KMEANS_TEMPERATURE = 5, 1.0

Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceOptions:
    """How evaluation embeds and scores: ``tta`` (none / shift), ``transductive`` (soft k-means with ``steps``
    refinements at ``temperature``; used only when ``transductive``)."""

    tta: str = "none"
    transductive: bool = False
    steps: int = SOFT_KMEANS_STEPS
    temperature: float = SOFT_KMEANS_TEMPERATURE

    def __post_init__(self) -> None:
        if self.tta not in TTA_MODES:
            raise OneshotError(f"unknown --tta {self.tta!r}: use one of {', '.join(TTA_MODES)}")
        if self.steps < 0 or not self.temperature > 0:
            raise OneshotError("soft k-means needs steps >= 0 and a temperature > 0")

    @property
    def default(self) -> bool:
        return self.tta == "none" and not self.transductive

    def summary(self) -> dict:
        """What the results record: the TTA mode and the rule with its settings."""
        out: dict = {"tta": self.tta, "rule": "soft_kmeans" if self.transductive else "inductive"}
        if self.tta == "shift":
            out["shifts"] = "4 one-step shifts + identity, mean"
        if self.transductive:
            out.update(transductive=True, steps=self.steps, temperature=self.temperature)
        return out


def inference_options(tta: str, transductive: bool, steps: int | None, temperature: float | None) -> InferenceOptions:
    """The CLI's options (None: the soft k-means settings chosen on validation)."""
    return InferenceOptions(
        tta,
        transductive,
        SOFT_KMEANS_STEPS if steps is None else steps,
        SOFT_KMEANS_TEMPERATURE if temperature is None else temperature,
    )


def shift_pixels(size: int) -> int:
    """Pixels a TTA shift moves an image of side ``size``: 1 at 28x28, round(size / 28) above."""
    return max(1, round(size / 28))


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Images (N, C, H, W) moved right by ``dx`` and down by ``dy`` pixels (negative: left / up), the
    uncovered border filled by repeating the edge pixels; same dtype and shape."""
    if dx == 0 and dy == 0:
        return images
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    x = F.pad(images.float(), pad, mode="replicate")
    h, w = images.shape[-2:]
    top, left = max(-dy, 0), max(-dx, 0)
    return x[..., top : top + h, left : left + w].to(images.dtype)


def shift_views(size: int) -> list[tuple[int, int]]:
    """The five TTA views (dx, dy): identity, right, left, down, up."""
    p = shift_pixels(size)
    return [(0, 0), (p, 0), (-p, 0), (0, p), (0, -p)]


@torch.no_grad()
def view_embeddings(
    method: Method, images: torch.Tensor, device: torch.device, tta: str = "none", **embed_options: Any
) -> torch.Tensor:
    """Embeddings (V, N, D) of uint8 images (N, C, H, W) by one method (:func:`embed_all`, which takes
    ``embed_options`` such as ``batch_size``), V = 1 without TTA, else one per :func:`shift_views` (the first the
    image itself)."""
    if tta == "none":
        return embed_all(method, images, device, **embed_options)[None]
    views = shift_views(images.shape[-1])
    return torch.stack([embed_all(method, shifted(images, dx, dy), device, **embed_options) for dx, dy in views])


def combine(views: Sequence[torch.Tensor]) -> torch.Tensor:
    """One embedding (N, D) from each member's views (V, N, D_m): a member's is the mean of its views; several
    members' are L2-normalised, concatenated and divided by sqrt(M) (unit norm, D = sum of D_m)."""
    means = [v.mean(0) for v in views]
    if len(means) == 1:
        return means[0]
    return torch.cat([F.normalize(m, dim=1) for m in means], 1) / math.sqrt(len(means))


def ensemble_embeddings(
    methods: Sequence[Method], images: torch.Tensor | Sequence[torch.Tensor], device: torch.device, tta: str = "none"
) -> torch.Tensor:
    """Embeddings (N, D) of uint8 images (N, C, H, W) under ``tta`` by one method or an ensemble (:func:`combine`);
    ``images`` may be one tensor per method (the same N images at each member's input size)."""
    per_member = [images] * len(methods) if isinstance(images, torch.Tensor) else list(images)
    if len(per_member) != len(methods) or len({x.shape[0] for x in per_member}) != 1:
        raise OneshotError("ensemble_embeddings needs one tensor of the same images per member")
    return combine([view_embeddings(m, x, device, tta) for m, x in zip(methods, per_member, strict=True)])


def soft_kmeans(
    support: torch.Tensor,
    support_labels: torch.Tensor,
    query: torch.Tensor,
    ways: int,
    steps: int = SOFT_KMEANS_STEPS,
    temperature: float = SOFT_KMEANS_TEMPERATURE,
) -> torch.Tensor:
    """Transductive ProtoNet logits (Q, N): support (S, D) with labels (S,) in [0, N), query (Q, D).

    Starts from the class means of the support; each of ``steps`` refinements assigns every query softly,
    w (Q, N) = softmax(-||q - c_k||^2 / temperature), then c_k = (sum of class k's support + sum_j w_jk q_j) /
    (K_k + sum_j w_jk). Logits are -||q - c_k||^2 with the final prototypes (``steps=0``: the nearest prototype).
    """
    s, q = full_precision(support), full_precision(query)
    c = prototypes(s, support_labels, ways)
    sums = c * torch.bincount(support_labels, minlength=ways).to(s.dtype)[:, None]
    counts = torch.bincount(support_labels, minlength=ways).to(s.dtype)
    for _ in range(steps):
        w = torch.softmax(-squared_euclidean(q, c) / temperature, dim=1)
        c = (sums + w.T @ q) / (counts + w.sum(0))[:, None]
    return -squared_euclidean(q, c)


def episode_rule(method: Method, members: int, options: InferenceOptions) -> Rule:
    """The rule scoring an episode from embeddings: soft k-means when transductive, else the method's own
    ``classify_embeddings`` for one checkpoint, the nearest prototype for an ensemble."""
    if options.transductive:
        return lambda s, sl, q, ways: soft_kmeans(s, sl, q, ways, options.steps, options.temperature)
    return method.classify_embeddings if members == 1 else nearest_prototype


def check_members(methods: Sequence[Method], metadata: Sequence[dict], options: InferenceOptions) -> None:
    """Refuse ensembles or options the members cannot take: every member must embed inputs independently
    when any option is on or there are several, and members must share the split and preprocessing (input sizes
    may differ)."""
    if (len(methods) > 1 or not options.default) and not all(m.embeds_independently for m in methods):
        raise OneshotError("--tta, --transductive and several --checkpoint need methods that embed each input alone")
    # Members may read different input sizes (each is given the images decoded at its own size), nothing else.
    unsized = [{**(m.get("preprocessing") or {}), "size": None} for m in metadata]
    for key, values in (("data", {repr(m.get("data")) for m in metadata}), ("preprocessing", {repr(p) for p in unsized})):
        if len(values) > 1:
            raise OneshotError(f"ensemble members must share their training {key}: {' vs '.join(sorted(values))}")


#: Lake's 20 runs draw 200 characters of 10 evaluation alphabets; 78 of them (all those of runs 1-6: Atlantean,
#: Ge'ez, Glagolitic; 18 of 20 of runs 7-8: Gurmukhi) are classes of the Vinyals training split (matched image by
#: image, docs/methods.md).
LAKE_OVERLAP = "78 of the 200 characters of Lake's runs (runs 1-8) are Vinyals training classes"


def lake_check(metadata: Sequence[dict], plain: bool) -> None:
    """Lake's runs are scored only by checkpoints trained on the Lake split's background alphabets: refused for
    the inference options (``plain`` False), a warning for the method's own path (kept for published figures)."""
    splits = {str((m.get("data") or {}).get("split", "vinyals")) for m in metadata}
    if splits == {"lake"}:
        return
    if not plain:
        raise OneshotError(
            f"--lake-runs with --tta / --transductive / an ensemble needs checkpoints trained on --split lake: {LAKE_OVERLAP}"
        )
    import warnings

    from oneshot.errors import OneshotWarning

    warnings.warn(
        f"Lake's runs scored by a checkpoint not trained on the Lake split: {LAKE_OVERLAP}", OneshotWarning, stacklevel=3
    )


def split_overlap(metadata: Sequence[dict], split: str, part: str, data_dir: str | Path | None) -> tuple[str, int, int] | None:
    """The first checkpoint trained on *another* Omniglot split whose training characters appear in ``split``'s
    ``part``, as (that split, characters in common, characters of the part); None when every pair is clean (a
    Lake-split encoder on Vinyals test). Checked from the character lists alone."""
    from oneshot.data.omniglot import character_keys

    evaluated: set[str] | None = None
    for m in metadata:
        data = m.get("data") or {}
        trained = str(data.get("split", "vinyals"))
        if data.get("dataset", "omniglot") != "omniglot" or trained == split:
            continue
        evaluated = character_keys(split, part, data_dir) if evaluated is None else evaluated
        seen = character_keys(trained, str(data.get("train_part", "train")), data_dir) & evaluated
        if seen:
            return trained, len(seen), len(evaluated)
    return None


def split_overlap_check(metadata: Sequence[dict], split: str, part: str, data_dir: str | Path | None) -> None:
    """Warn when an Omniglot checkpoint is scored on a part of *another* split that holds characters it was
    trained on (a Vinyals-split encoder on the Lake split's test alphabets, a Lake-split encoder on Vinyals val):
    such a figure is not a one-shot figure (:func:`split_overlap`); silent on clean pairs."""
    import warnings

    from oneshot.errors import OneshotWarning

    overlap = split_overlap(metadata, split, part, data_dir)
    if overlap:
        trained, seen, total = overlap
        warnings.warn(
            f"{seen} of the {total} characters of the {split} split's {part} part are training "
            f"characters of a checkpoint trained on the {trained} split: this accuracy is not a one-shot figure "
            f"(score it on --protocol {trained}, or on a part it never saw)",
            OneshotWarning,
            stacklevel=3,
        )
