"""Train the activity-prior molecule model (:class:`~oneshot.methods.activity_prior.ActivityPrior`) with the one
training loop, and choose its evidence weights w_K and head-mixture betas beta_K on held-out training assays.

Every setting here was chosen on the validation assays NR-AhR and SR-ARE with a trunk trained on the other
seven training assays (docs/molecules.md has the table of alternatives); the test assays are never used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.data.molecules import AssayTable
from oneshot.modalities.molecule.train import featurise, molecule_metadata
from oneshot.training import TrainConfig, TrainProgress, TrainResult

#: The trunk: one linear layer 2294 -> 512 over ECFP4 bits + 167 MACCS keys + 16 descriptors + 63 extra RDKit
#: descriptors (all but the bits standardised); the method adds the ReLU, dropout 0.5 and the heads. (Input
#: dropout, 256 / 1024 wide, 3 / 8 epochs, an ensemble, count / FCFP / atom-pair / torsion / Avalon
#: fingerprints: no better on validation; MACCS keys: +3 points; the extra descriptors: +0.6.)
PRIOR_ENCODER: dict[str, Any] = {
    "n_bits": 2048,
    "radius": 2,
    "descriptors": True,
    "maccs": True,
    "extra": ["descriptors_extra"],
    "hidden": [],
    "out_dim": 512,
    "dropout": 0.0,
}
#: Adam's weight decay (L2), chosen on validation from {1e-5, 1e-4, 1e-3} (branch mol5; 1e-5 before): 1e-4 raised
#: the 1-shot / 10-shot validation ROC-AUC by 0.43 / 0.23 points averaged over 5 training seeds, every seed higher.
PRIOR_WEIGHT_DECAY = 1e-4
#: w_K chosen on validation (20 draws per assay, seed 1) from :data:`WEIGHT_GRID`.
CHOSEN_WEIGHTS = {"1": 1.0, "10": 10.0}
WEIGHT_GRID = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0)
#: beta_K (the support's say in the head mixture) is chosen after w_K, on the same draws, from this grid.
BETA_GRID = (0.0, 0.3, 1.0, 3.0, 10.0)


def prior_features(table: AssayTable) -> np.ndarray:
    """The trunk's input (N, F) for every molecule of ``table``, as :data:`PRIOR_ENCODER` describes it."""
    o = PRIOR_ENCODER
    return featurise(table, o["radius"], o["n_bits"], o["descriptors"], o["maccs"], o.get("extra", ()))


def prior_config(
    rows: int,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    val_shots: int = 1,
    max_minutes: float = 0.0,
    weight_decay: float = PRIOR_WEIGHT_DECAY,
) -> TrainConfig:
    """The loop's settings for ``epochs`` passes over ``rows`` labelled molecules, validating after each epoch:
    Adam 1e-3, weight decay :data:`PRIOR_WEIGHT_DECAY`, constant rate, CPU fp32."""
    per_epoch = -(-rows // batch_size)
    return TrainConfig(
        episodes=epochs * per_epoch,
        ways=2,
        shots=1,
        queries=0,
        lr=1e-3,
        lr_step=epochs * per_epoch,
        lr_gamma=1.0,
        weight_decay=weight_decay,
        eval_every=per_epoch,
        val_shots=val_shots,
        seed=seed,
        device="cpu",
        precision="fp32",
        channels_last=False,
        max_minutes=max_minutes,
    )


def train_activity_prior(
    table: AssayTable,
    train_tasks: Sequence[str],
    val_tasks: Sequence[str],
    out: str | Path,
    *,
    epochs: int = 5,
    seed: int = 0,
    features: np.ndarray | None = None,
    evidence_weights: dict[str, float] | None = None,
    val_draws: int = 20,
    select_epoch: bool = True,
    metadata: dict[str, Any] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Multi-task training on ``train_tasks`` through :func:`oneshot.training.train`; with ``select_epoch`` the
    epoch with the best 1-shot ROC-AUC on ``val_tasks`` (prior + evidence) is kept at ``out``, else the last
    (for a refit whose training assays include ``val_tasks``: validating on them would select on training data).

    Args:
        features: precomputed :func:`prior_features` output (N, F).
        evidence_weights: w_K stored in the checkpoint (default :data:`CHOSEN_WEIGHTS`).
    """
    import torch

    from oneshot.data.assays import MoleculeSet
    from oneshot.encoders.molecule_mlp import MoleculeMLP
    from oneshot.methods.activity_prior import ActivityPrior
    from oneshot.training import train

    x = features if features is not None else prior_features(table)
    torch.manual_seed(seed)
    encoder = MoleculeMLP(**PRIOR_ENCODER)
    train_set = MoleculeSet(x, table, train_tasks)
    rows = np.flatnonzero((~np.isnan(train_set.multitask_targets())).any(1))
    encoder.set_descriptor_stats(torch.from_numpy(np.asarray(x[rows], np.float32)))
    method = ActivityPrior(encoder, num_tasks=len(train_tasks), evidence_weights=evidence_weights or CHOSEN_WEIGHTS)
    config = prior_config(len(rows), epochs, method.batch_size, seed)
    if not select_epoch:
        config.eval_every = config.episodes
    val_set = MoleculeSet(x, table, val_tasks, val_shots=config.val_shots, val_draws=val_draws, val_seed=config.val_seed)
    meta = molecule_metadata(table, train_tasks, val_tasks, dict(PRIOR_ENCODER), config.val_shots, val_draws)
    meta.update(metadata or {})
    return train(method, train_set, val_set, config, out, meta, on_progress=on_progress)  # type: ignore[arg-type]


def rule_table(
    method: Any,
    features: np.ndarray,
    table: AssayTable,
    tasks: Sequence[str],
    shots: int,
    option: str = "evidence_weights",
    grid: Sequence[float] = WEIGHT_GRID,
    draws: int = 20,
    seed: int = 1,
) -> dict[float, float]:
    """Mean ROC-AUC over ``tasks`` (``draws`` seeded draws each) of the method's assay score for each value of
    ``grid`` given to ``option`` at K = ``shots``: ``evidence_weights`` (w_K) or ``head_betas`` (beta_K); the
    method's other stored values are used as they are."""
    from oneshot.data.assays import MoleculeSet, assay_auc

    z = MoleculeSet(features, table, tasks).embed(method)
    saved = dict(getattr(method, option))
    out = {}
    try:
        for v in grid:
            setattr(method, option, dict(saved, **{str(shots): float(v)}))
            scorer = method.assay_scorer(z, shots)
            out[float(v)] = float(np.mean([assay_auc(table, t, scorer, shots, draws, seed).mean for t in tasks]))
    finally:
        setattr(method, option, saved)
    return out


def set_scoring_rule(
    path: str | Path, weights: dict[str, float], betas: dict[str, float], note: dict[str, Any] | None = None
) -> None:
    """Rewrite the checkpoint at ``path`` with ``weights`` as its w_K and ``betas`` as its beta_K (tensors
    unchanged; ``note`` merged into its ``training`` metadata)."""
    from oneshot.checkpoint import load_checkpoint, save_checkpoint
    from oneshot.methods.activity_prior import ActivityPrior

    ck = load_checkpoint(path, expect_method=ActivityPrior.name)
    method = ck.method
    assert isinstance(method, ActivityPrior)
    method.evidence_weights = {str(int(k)): float(v) for k, v in weights.items()}
    method.head_betas = {str(int(k)): float(v) for k, v in betas.items()}
    meta = {k: v for k, v in ck.metadata.items() if k not in ("metadata_sha256", "tensors_sha256")}
    meta["training"] = dict(meta.get("training", {}), **(note or {}))
    save_checkpoint(path, method, meta)
