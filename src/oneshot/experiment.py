"""Glue used by the CLI and the benchmarks: train on a dataset split, evaluate a checkpoint under the standard protocol."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oneshot.checkpoint import load_checkpoint
from oneshot.data.images import Preprocessing
from oneshot.data.imageset import ImageSet
from oneshot.data.omniglot import load_lake_runs, load_omniglot
from oneshot.encoders import build_encoder, embedding_dim
from oneshot.errors import OneshotError
from oneshot.evaluation import EvalResult, LakeRunsResult, evaluate, evaluate_lake_runs, split_embeddings
from oneshot.methods import METHODS, build_method
from oneshot.runtime import select_device
from oneshot.training import TrainConfig, TrainProgress, TrainResult, train
from oneshot.verification import VerificationResult

STANDARD_SHAPES = [(5, 1), (5, 5), (20, 1), (20, 5)]


def load_split(dataset: str, split: str, part: str, size: int, data_dir: str | Path | None) -> ImageSet:
    """A part of a dataset split; only Omniglot for now, or a class-per-folder directory via ``dataset='folder:PATH'``."""
    if dataset == "omniglot":
        return load_omniglot(split, part, size, data_dir)
    if dataset.startswith("folder:"):
        from oneshot.data.folder import load_image_folder

        return load_image_folder(dataset[len("folder:"):], Preprocessing(size=size, channels=1, invert=False))
    raise OneshotError(f"unknown dataset {dataset!r}: use omniglot")


def train_model(
    method: str,
    config: TrainConfig,
    out: str | Path,
    dataset: str = "omniglot",
    split: str = "vinyals",
    size: int = 28,
    encoder: str = "conv4",
    encoder_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
    command: str = "",
    resume: bool = False,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Load the train and val parts, build ``method`` on ``encoder``, and run the training loop."""
    train_part = "train"
    train_data = load_split(dataset, split, train_part, size, data_dir)
    val_data = load_split(dataset, split, "val", size, data_dir)
    torch.manual_seed(config.seed)
    enc_opts = dict(encoder_options or {"in_channels": 1})
    enc = build_encoder(encoder, **enc_opts)
    # Data-dependent options (e.g. the number of base classes) first; the user's options override them.
    data_options = METHODS[method].options_for_data(train_data) if method in METHODS else {}  # else: build_method says
    model = build_method(method, enc, **{**data_options, **(method_options or {})})
    prep = Preprocessing(size=size, channels=1, invert=True)
    metadata = {
        "encoder": encoder,
        "encoder_options": enc_opts,
        "preprocessing": prep.to_dict(),
        "embedding_dim": embedding_dim(enc, (prep.channels, prep.size, prep.size)),
        "data": {"dataset": dataset, "split": split, "train_part": train_part, "val_part": "val"},
        "training": {"command": command},
        "seed": config.seed,
    }
    return train(model, train_data, val_data, config, out, metadata, resume=resume, on_progress=on_progress)


@dataclass
class CheckpointEvaluation:
    """What :func:`evaluate_checkpoint` measured (accuracies are fractions in [0, 1]).

    Attributes:
        results: one :class:`EvalResult` per (ways, shots) shape, in the order asked.
        lake_runs: Lake's 20 runs when asked; verification: same/different-pair metrics when asked, with
            ``curves`` naming the ROC / DET pictures drawn ({"roc_png": path, "det_png": path}).
    """

    checkpoint: str
    method: str
    method_options: dict[str, Any]
    dataset: str
    split: str
    part: str
    results: list[EvalResult]
    lake_runs: LakeRunsResult | None = None
    verification: VerificationResult | None = None
    curves: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON document benchmarks store and ``oneshot evaluate --json`` prints."""
        out: dict[str, Any] = {"checkpoint": self.checkpoint, "method": self.method, "method_options": self.method_options,
                               "dataset": self.dataset, "split": self.split, "part": self.part,
                               "results": [r.summary() for r in self.results]}
        if self.lake_runs is not None:
            out["lake_runs"] = self.lake_runs.summary()
        if self.verification is not None:
            out["verification"] = dict(self.verification.summary(), **self.curves)
        out["seconds"] = self.seconds
        return out


def evaluate_checkpoint(
    checkpoint: str | Path,
    shapes: list[tuple[int, int]],
    episodes: int = 1000,
    queries: int = 15,
    split: str | None = None,
    part: str = "test",
    seed: int = 0,
    lake_runs: bool = False,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    method_options: dict[str, Any] | None = None,
    verification: bool = False,
    verification_pairs: int = 20000,
    similarity: str = "auto",
    roc_png: str | Path | None = None,
    det_png: str | Path | None = None,
) -> CheckpointEvaluation:
    """Evaluate a checkpoint on N-way K-shot episodes of a split part (and optionally Lake's runs).

    The split defaults to the one the checkpoint was trained on. ``method_options`` change options of the
    rebuilt method (those that do not change its tensors). ``verification`` adds same/different-pair metrics
    (AUC, EER, TAR at FAR 1e-2 and 1e-3) over ``verification_pairs`` seeded pairs of the same split part
    under ``similarity`` (one of ``verification.SIMILARITIES``), and draws the ROC and DET curves to
    ``roc_png`` / ``det_png`` when given.
    """
    dev = select_device(device)
    ck = load_checkpoint(checkpoint, device=dev, method_options=method_options)
    prep = ck.preprocessing
    data_meta = ck.metadata.get("data", {})
    dataset = data_meta.get("dataset", "omniglot")
    split = split or data_meta.get("split", "vinyals")
    data = load_split(dataset, split, part, prep.size, data_dir)
    t0 = time.perf_counter()
    z = split_embeddings(ck.method, data.images, dev)
    res = CheckpointEvaluation(
        str(checkpoint), ck.metadata["method"], ck.method.options(), dataset, split, part,
        [evaluate(ck.method, data, ways, shots, queries, episodes, seed, dev, embeddings=z, progress=progress) for ways, shots in shapes])
    if lake_runs:
        res.lake_runs = evaluate_lake_runs(ck.method, load_lake_runs(prep.size, data_dir), dev)
    if verification or roc_png or det_png:
        from oneshot.verification import evaluate_verification, plot_det, plot_roc

        res.verification = evaluate_verification(ck.method, data, verification_pairs, seed, similarity, dev, embeddings=z)
        if roc_png:
            res.curves["roc_png"] = str(plot_roc(res.verification, roc_png))
        if det_png:
            res.curves["det_png"] = str(plot_det(res.verification, det_png))
    res.seconds = time.perf_counter() - t0
    return res
