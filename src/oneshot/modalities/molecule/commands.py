"""What ``oneshot evaluate`` and ``oneshot predict`` do with a molecule checkpoint (metadata ``modality: molecule``).

* evaluate: the Tox21 few-shot protocol (K actives + K inactives drawn at random, every other labelled
  compound queried, ROC-AUC per draw) on the test assays SR-HSE, SR-MMP, SR-p53 (or the assays named).
  The score is the method's own (``assay_scorer``: the activity prior + evidence) or ProtoNet's gap.
* predict: a support CSV (SMILES and label columns, one or more molecules per label) and query CSVs or SMILES;
  each query gets the label of the nearest prototype (``method.classify_embeddings``) and a softmax probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError


def evaluate_molecule_checkpoint(
    path: Path,
    shots: Sequence[int],
    draws: int,
    seed: int = 0,
    assays: Sequence[str] | None = None,
    data_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """ROC-AUC mean and 95% CI per assay and over them, for each K in ``shots``."""
    from oneshot.data.assays import assay_auc, method_scorer
    from oneshot.data.molecules import TOX21_TEST, TOX21_TRAIN, load_tox21
    from oneshot.evaluation import mean_ci95
    from oneshot.modalities.molecule.embedders import MoleculeCheckpointEmbedder

    emb = MoleculeCheckpointEmbedder(path)
    tox = load_tox21(data_dir, on_invalid="skip")
    assays = tuple(assays or TOX21_TEST)
    for a in assays:
        tox.task(a)
    trained_on = set(emb.checkpoint.metadata.get("data", {}).get("train_tasks", TOX21_TRAIN))
    z = emb.embed_features(emb.features(tox.mols))
    rows = []
    for k in shots:
        scorer = method_scorer(emb.checkpoint.method, z, k)
        results = [assay_auc(tox, a, scorer, k, draws, seed, progress) for a in assays]
        pooled = mean_ci95([x for r in results for x in r.aucs])
        rows.append(
            {
                "shots": k,
                "assays": {r.task: {"roc_auc": r.mean, "ci95": r.ci95} for r in results},
                "mean_roc_auc": float(np.mean([r.mean for r in results])),
                "ci95": pooled[1],
                "draws": draws,
            }
        )
    return {
        "checkpoint": str(path),
        "dataset": "tox21",
        "assays": list(assays),
        "seed": seed,
        "results": rows,
        "seen_in_training": sorted(set(assays) & trained_on),
        "skipped_rows": len(tox.skipped),
    }


def predict_molecules(
    path: Path, support_csv: Path, queries: Sequence[tuple[str, str]], smiles_column: str = "smiles", label_column: str = "label"
) -> dict[str, Any]:
    """Support CSV (SMILES, label) + queries (SMILES, display name) -> a prediction per query."""
    import torch

    from oneshot.data.molecules import parse_all, read_smiles_column
    from oneshot.modalities.molecule.embedders import MoleculeCheckpointEmbedder

    emb = MoleculeCheckpointEmbedder(path)
    sup = read_smiles_column(support_csv, smiles_column, label_column)
    labels = [lab or "" for _, _, lab in sup]
    if any(not lab for lab in labels):
        raise OneshotError(f"{support_csv} has a row without a {label_column}: every support molecule needs a label")
    names = sorted(set(labels))
    if len(names) < 2:
        raise OneshotError(f"{support_csv} has one label ({names[0]}): give molecules of at least two classes")
    s_mols, _ = parse_all([s for s, _, _ in sup], [w for _, w, _ in sup])
    q_mols, _ = parse_all([s for s, _ in queries], [w for _, w in queries])
    zs = torch.from_numpy(emb.embed_features(emb.features(s_mols)))
    zq = torch.from_numpy(emb.embed_features(emb.features(q_mols)))
    y = torch.tensor([names.index(lab) for lab in labels])
    logits = emb.checkpoint.method.classify_embeddings(zs, y, zq, len(names))
    prob = logits.softmax(1)
    best = prob.argmax(1)
    preds = [
        {"query": w, "class": names[int(b)], "probability": float(prob[i, b])}
        for i, ((_, w), b) in enumerate(zip(queries, best, strict=True))
    ]
    return {"checkpoint": str(path), "classes": names, "predictions": preds}
