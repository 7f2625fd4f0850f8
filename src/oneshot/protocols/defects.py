"""The NEU steel-defect protocol: self-supervised pretraining on an unlabelled pool, then 6-way 1-shot and 5-shot
episodes drawn only from the remaining images (see :func:`oneshot.data.archives.neu_split`).

Baselines on the same episodes: raw pixels (nearest prototype), the same encoder with random weights, and the
Omniglot encoder (its own 28 x 28 inverted preprocessing, as a user would apply it). The self-supervised
encoder is scored by two rules of the method: cosine to prototypes, and a logistic regression fitted on the
support embeddings (its C chosen on the validation images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oneshot.data.archives import neu_split
from oneshot.data.images import Preprocessing
from oneshot.data.imageset import ImageSet
from oneshot.encoders import build_encoder
from oneshot.evaluation import embed_all, evaluate
from oneshot.methods import build_method
from oneshot.methods.base import Method

SHAPES = ((6, 1), (6, 5))
#: Inverse regularisations of the support-fitted logistic regression rule tried on validation.
LOGISTIC_C = (1.0, 10.0, 100.0)


def score(method: Method, test: ImageSet, episodes: int, seed: int = 0) -> dict[str, Any]:
    z = embed_all(method, test.images, torch.device("cpu"))
    out = {}
    for ways, shots in SHAPES:
        r = evaluate(method, test, ways, shots, 15, episodes, seed, embeddings=z)
        out[f"{ways}w{shots}s"] = {"accuracy": r.accuracy, "ci95": r.ci95, "episodes": episodes}
    return out


def choose_logistic_c(checkpoint: str | Path, data_dir: str | Path | None = None, episodes: int = 300) -> dict[str, Any]:
    """6-way 5-shot validation accuracy of the prototype rule and of the logistic rule at each of
    :data:`LOGISTIC_C` (NEU's 200 validation images, seeded episodes); the best C is ``chosen``."""
    from oneshot.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    val = neu_split("val", ck.preprocessing, data_dir)
    z = embed_all(ck.method, val.images, torch.device("cpu"))
    out: dict[str, Any] = {"prototype": evaluate(ck.method, val, 6, 5, 15, episodes, 0, embeddings=z).accuracy}
    for c in LOGISTIC_C:
        lr = load_checkpoint(checkpoint, method_options={"test_time": "logistic", "logistic_c": c}).method
        out[f"logistic_c{c:g}"] = evaluate(lr, val, 6, 5, 15, episodes, 0, embeddings=z).accuracy
    best = max(LOGISTIC_C, key=lambda c: out[f"logistic_c{c:g}"])
    return {"shape": "6-way 5-shot", "episodes": episodes, "accuracy": out, "chosen_c": best}


def run_defects(
    checkpoint: str | Path,
    episodes: int = 1000,
    omniglot_checkpoint: str | Path | None = None,
    data_dir: str | Path | None = None,
    validation_episodes: int = 300,
) -> dict[str, Any]:
    """Every row of the NEU table for one self-supervised checkpoint (``validation_episodes``: those that choose
    the logistic rule's C)."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.protocols.baselines import raw_pixels

    ck = load_checkpoint(checkpoint)
    prep: Preprocessing = ck.preprocessing
    test = neu_split("test", prep, data_dir)
    rows: dict[str, Any] = {"self_supervised": score(ck.method, test, episodes)}
    validation = None
    if ck.metadata["method"] == "simclr":  # the method with the support-fitted logistic rule
        validation = choose_logistic_c(checkpoint, data_dir, validation_episodes)
        lr = load_checkpoint(checkpoint, method_options={"test_time": "logistic", "logistic_c": validation["chosen_c"]})
        rows["self_supervised_logistic"] = score(lr.method, test, episodes)
        rows["self_supervised_logistic"]["logistic_c"] = validation["chosen_c"]
    torch.manual_seed(0)
    rand = build_method(
        ck.metadata["method"],
        build_encoder(ck.metadata["encoder"], **ck.metadata["encoder_options"]),
        **ck.metadata.get("method_options", {}),
    ).eval()
    rows["random_weights"] = score(rand, test, episodes)
    rows["raw_pixels"] = score(raw_pixels(), test, episodes)
    if omniglot_checkpoint:
        om = load_checkpoint(omniglot_checkpoint)
        rows["omniglot_encoder"] = score(om.method, neu_split("test", om.preprocessing, data_dir), episodes)
    return {
        "checkpoint": str(checkpoint),
        "preprocessing": prep.to_dict(),
        "test_images": len(test),
        "pool_images": 1200,
        "methods": rows,
        **({"logistic_rule_validation": validation} if validation else {}),
    }
