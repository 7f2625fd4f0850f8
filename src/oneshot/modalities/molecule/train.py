"""Train the molecule models with the project's one training loop and checkpoint format.

The current learned model is the activity prior + evidence (:mod:`oneshot.modalities.molecule.prior`,
:class:`~oneshot.methods.activity_prior.ActivityPrior`). The earlier model, kept for comparison and for
its checkpoints: a prototypical network (Snell et al. 2017) -- an assay's actives and inactives in the support set each
give a prototype, a query scores by how much nearer it is to the active one. Encoder: :class:`MoleculeMLP`
over ECFP4 bits + 16 RDKit descriptors. Sampler: 2-way episodes within one training assay
(:class:`~oneshot.data.assays.AssayEpisodeSampler`). Validation: mean ROC-AUC of the few-shot protocol on
held-out *training* assays (never the test assays). Why this choice: docs/molecules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.data.assays import MoleculeSet
from oneshot.data.molecules import AssayTable
from oneshot.modalities.molecule.features import molecule_features
from oneshot.training import TrainProgress

#: Training assays held out for validation (model selection) in the Tox21 few-shot split.
TOX21_VAL = ("NR-AhR", "SR-ARE")


def featurise(
    table: AssayTable,
    radius: int = 2,
    n_bits: int = 2048,
    descriptors: bool = True,
    maccs: bool = False,
    extra: Sequence[str] = (),
) -> np.ndarray:
    """Encoder inputs (N, F) for every molecule of ``table`` (layout: :func:`molecule_features`)."""
    return molecule_features(table.mols, radius, n_bits, descriptors, maccs, extra)


def molecule_metadata(
    table: AssayTable, train_tasks: Sequence[str], val_tasks: Sequence[str], opts: dict[str, Any], shots: int, draws: int
) -> dict[str, Any]:
    """The checkpoint metadata of a molecule model (``modality: molecule``, encoder and data split)."""
    return {
        "modality": "molecule",
        "encoder": "molecule_mlp",
        "encoder_options": opts,
        "data": {
            "source": Path(table.source).name,
            "train_tasks": list(train_tasks),
            "val_tasks": list(val_tasks),
            "validation": f"mean ROC-AUC, {shots}+/{shots}- support, {draws} draws per assay",
        },
    }


def train_molecule_model(
    table: AssayTable,
    train_tasks: Sequence[str],
    val_tasks: Sequence[str],
    config: Any,
    out: str | Path,
    *,
    features: np.ndarray | None = None,
    encoder_options: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    val_draws: int = 20,
    on_progress: Callable[[TrainProgress], None] | None = None,
):
    """Train ProtoNet + MoleculeMLP on assay episodes; the best checkpoint on ``val_tasks`` goes to ``out``.

    Args:
        config: a :class:`oneshot.training.TrainConfig` (ways must be 2; ``val_shots`` is the validation K).
        features: precomputed :func:`featurise` output (N, F) (else computed here).
    Returns the :class:`oneshot.training.TrainResult`.
    """
    import torch

    from oneshot.encoders.molecule_mlp import MoleculeMLP
    from oneshot.methods.protonet import ProtoNet
    from oneshot.training import train

    # Chosen on the validation assays (docs/molecules.md): one hidden layer, heavy dropout.
    opts: dict[str, Any] = {"n_bits": 2048, "radius": 2, "descriptors": True, "hidden": [512], "out_dim": 64, "dropout": 0.5}
    opts.update(encoder_options or {})
    x = features if features is not None else featurise(table, opts["radius"], opts["n_bits"], opts["descriptors"])
    torch.manual_seed(config.seed)
    encoder = MoleculeMLP(**opts)
    cols = [table.task(t) for t in train_tasks]
    train_rows = np.flatnonzero((~np.isnan(table.labels[:, cols])).any(1))  # molecules labelled on a training assay
    encoder.set_descriptor_stats(torch.from_numpy(np.asarray(x[train_rows], np.float32)))
    method = ProtoNet(encoder)
    train_set = MoleculeSet(x, table, train_tasks)
    val_set = MoleculeSet(x, table, val_tasks, val_shots=config.val_shots, val_draws=val_draws, val_seed=config.val_seed)
    meta = molecule_metadata(table, train_tasks, val_tasks, opts, config.val_shots, val_draws)
    meta.update(metadata or {})
    return train(method, train_set, val_set, config, out, meta, on_progress=on_progress)  # type: ignore[arg-type]
