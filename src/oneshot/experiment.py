"""Glue used by the CLI and the benchmarks: train on a dataset split, evaluate a checkpoint under the standard protocol."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
from oneshot.evaluation import (
    EvalResult,
    LakeRunsResult,
    embeddings_of_drawn_images,
    episode_images,
    evaluate,
    evaluate_lake_runs,
    split_embeddings,
)
from oneshot.inference import (
    InferenceOptions,
    check_members,
    ensemble_embeddings,
    episode_rule,
    lake_check,
    split_overlap_check,
)
from oneshot.methods import METHODS, build_method
from oneshot.runtime import select_device
from oneshot.training import TrainConfig, TrainProgress, TrainResult, train
from oneshot.verification import VerificationResult

STANDARD_SHAPES = [(5, 1), (5, 5), (20, 1), (20, 5)]


DATASETS = ("omniglot", "att_faces", "neu")
#: The training and validation parts of each dataset's protocol.
TRAIN_PARTS = {"omniglot": ("train", "val"), "att_faces": ("train", "val"), "neu": ("pool", "val")}


def dataset_preprocessing(dataset: str, size: int, prep: Preprocessing | None = None) -> Preprocessing:
    """The preprocessing a dataset is read with: ``prep`` when given, else the dataset's own at ``size``."""
    if prep is not None:
        return prep
    if dataset == "att_faces":
        from oneshot.data.archives import FACES_PREPROCESSING

        return FACES_PREPROCESSING.with_overrides(size=size)
    if dataset == "neu":
        from oneshot.data.archives import NEU_PREPROCESSING

        return NEU_PREPROCESSING.with_overrides(size=size)
    if dataset.startswith("folder:"):
        return Preprocessing(size=size, channels=1, invert=False)
    return Preprocessing(size=size, channels=1, invert=True)


def load_split(
    dataset: str, split: str, part: str, size: int, data_dir: str | Path | None, prep: Preprocessing | None = None
) -> ImageSet:
    """A part of a dataset split: Omniglot (``split`` vinyals or lake), ``att_faces`` (train / val / trainval / test,
    see :func:`oneshot.data.archives.faces_split`), ``neu`` (pool / val / test, :func:`~oneshot.data.archives.neu_split`),
    or a class-per-folder directory via ``dataset='folder:PATH'``."""
    prep = dataset_preprocessing(dataset, size, prep)
    if dataset == "omniglot":
        if prep != Preprocessing(size=size, channels=1, invert=True):
            raise OneshotError("Omniglot is read with its own preprocessing (grey, inverted, stretched)")
        return load_omniglot(split, part, size, data_dir)
    if dataset == "att_faces":
        from oneshot.data.archives import faces_split

        return faces_split(part, prep, data_dir)
    if dataset == "neu":
        from oneshot.data.archives import neu_split

        return neu_split(part, prep, data_dir)
    if dataset.startswith("folder:"):
        from oneshot.data.folder import load_image_folder

        return load_image_folder(dataset[len("folder:") :], prep)
    raise OneshotError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")


def check_episode_shapes(data: ImageSet, shapes: list[tuple[int, int]], queries: int, what: str) -> None:
    """Refuse, before any work, episode shapes the data cannot supply (too many ways, shots + queries)."""
    counts = sorted(len(ix) for ix in data.class_indices)
    for ways, shots in shapes:
        if ways > data.num_classes:
            raise OneshotError(f"{what} has {data.num_classes} classes, too few for {ways}-way episodes: lower --ways")
        enough = [c for c in counts if c >= shots + queries]
        if len(enough) < ways:
            most = max(0, counts[-ways] - shots) if len(counts) >= ways else 0
            raise OneshotError(
                f"{ways}-way {shots}-shot episodes with {queries} queries need {shots + queries} images in "
                f"{ways} classes; {what} has {len(enough)} such classes: use --queries {most} or fewer"
            )


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
    preprocessing: Preprocessing | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Load the train and val parts, build ``method`` on ``encoder``, and run the training loop.

    ``init``: start from this checkpoint's weights (same method, encoder and options; a fresh optimiser), e.g. to
    continue a run whose resume state is gone; its path, checksum and training are recorded as ``init_from``.
    """
    from oneshot.data.images import stats_envelope

    prep = dataset_preprocessing(dataset, size, preprocessing)
    train_part, val_part = TRAIN_PARTS.get(dataset, ("train", "val"))
    train_data = load_split(dataset, split, train_part, size, data_dir, prep)
    if config.rotated_classes:
        from oneshot.data.imageset import with_rotated_classes

        train_data = with_rotated_classes(train_data)
    val_data = load_split(dataset, split, val_part, size, data_dir, prep)
    torch.manual_seed(config.seed)
    enc_opts = {"in_channels": prep.channels, **(encoder_options or {})}
    if encoder.startswith("resnet") and "mean" not in enc_opts:
        # Input standardisation from the training images (part of the encoder, stored in the checkpoint).
        px = train_data.images.float().div(255)
        enc_opts.update(mean=round(float(px.mean()), 4), std=round(float(px.std()), 4))
    enc = build_encoder(encoder, **enc_opts)
    # Data-dependent options (e.g. the number of base classes) first; the user's options override them.
    data_options = METHODS[method].options_for_data(train_data) if method in METHODS else {}
    if method == "simclr":
        data_options["feature_dim"] = embedding_dim(enc, (prep.channels, prep.size, prep.size))
    model = build_method(method, enc, **{**data_options, **(method_options or {})})
    training: dict[str, Any] = {"command": command}
    if init is not None:
        training["init_from"] = _warm_start(model, init, method, enc_opts)
    metadata = {
        "encoder": encoder,
        "encoder_options": enc_opts,
        "preprocessing": prep.to_dict(),
        "embedding_dim": embedding_dim(enc, (prep.channels, prep.size, prep.size)),
        "data": {"dataset": dataset, "split": split, "train_part": train_part, "val_part": val_part},
        "training": training,
        "seed": config.seed,
    }
    if dataset != "omniglot":  # Omniglot checkpoints keep their metadata as before (checkpoint_envelope knows it)
        metadata["input_envelope"] = stats_envelope(train_data.images.numpy())
    return train(model, train_data, val_data, config, out, metadata, resume=resume, on_progress=on_progress)


def _warm_start(model: torch.nn.Module, init: str | Path, method: str, enc_opts: dict[str, Any]) -> dict[str, Any]:
    """Load ``init``'s weights into ``model`` (refusing another method or encoder options); what it was."""
    ck = load_checkpoint(init, expect_method=method)
    if ck.metadata["encoder_options"] != enc_opts:
        raise OneshotError(f"{init} has encoder options {ck.metadata['encoder_options']}, this run {enc_opts}")
    model.load_state_dict(ck.method.state_dict())
    t = ck.metadata.get("training", {})
    return {
        "checkpoint": str(init),
        "tensors_sha256": ck.metadata.get("tensors_sha256"),
        "minutes": (t.get("config") or {}).get("max_minutes"),
        "episodes": t.get("episodes_trained"),
        "command": t.get("command"),
    }


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
    ensemble: list[str] = field(default_factory=list)
    inference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document benchmarks store and ``oneshot evaluate --json`` prints."""
        out: dict[str, Any] = {
            "checkpoint": self.checkpoint,
            "method": self.method,
            "method_options": self.method_options,
            "dataset": self.dataset,
            "split": self.split,
            "part": self.part,
            "results": [r.summary() for r in self.results],
        }
        if self.ensemble:
            out["ensemble"] = self.ensemble
        if self.inference:
            out["inference"] = self.inference
        if self.lake_runs is not None:
            out["lake_runs"] = self.lake_runs.summary()
        if self.verification is not None:
            out["verification"] = dict(self.verification.summary(), **self.curves)
        out["seconds"] = self.seconds
        return out


def _evaluation_images(
    prep: Preprocessing,
    sizes: list[int],
    dataset: str,
    split: str,
    part: str,
    data_dir: str | Path | None,
    folder: str | Path | None,
) -> tuple[ImageSet, dict[int, torch.Tensor]]:
    """The images to evaluate on (a split part, or a user's ``folder``) decoded under ``prep``, and the same images
    decoded at every other input size of ``sizes`` (ensemble members may read other sizes): {size: (N, C, S, S)}."""
    from oneshot.data.folder import load_image_folder

    def load(at: Preprocessing) -> ImageSet:
        if folder is not None:
            return load_image_folder(folder, at)
        return load_split(dataset, split, part, at.size, data_dir, None if dataset == "omniglot" else at)

    data = load(prep)
    images_at = {prep.size: data.images}
    for size in sorted(set(sizes) - {prep.size}):
        other = load(prep.with_overrides(size=size))
        if not torch.equal(other.labels, data.labels):
            raise OneshotError(f"the data decoded at {size}x{size} differs from the data at {prep.size}x{prep.size}")
        images_at[size] = other.images
    return data, images_at


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
    folder: str | Path | None = None,
    preprocessing: dict[str, Any] | None = None,
    ensemble: Sequence[str | Path] = (),
    inference: InferenceOptions | None = None,
    workers: int = 1,
    start: int = 0,
) -> CheckpointEvaluation:
    """Evaluate a checkpoint on N-way K-shot episodes of a split part (and optionally Lake's runs).

    ``folder`` evaluates on a user's own labelled folder (one sub-folder of images per class) instead of the
    checkpoint's dataset; ``preprocessing`` overrides fields of the checkpoint's preprocessing (e.g.
    ``{"invert": False}``).

    The split defaults to the one the checkpoint was trained on.

    ``method_options`` change options of the rebuilt method (those that do not change its tensors).
    ``verification`` adds same/different-pair metrics (AUC, EER, TAR at FAR 1e-2 and 1e-3) over
    ``verification_pairs`` seeded pairs of the same split part under ``verification``, and draws the ROC and
    DET curves to ``roc_png`` / ``det_png`` when given.

    ``ensemble`` adds checkpoints (trained on the same split) whose normalised embeddings are concatenated with
    the first's; ``inference`` sets shift TTA and the transductive rule (:mod:`oneshot.inference`). Both are
    recorded in the result; left out, evaluation is the method's own path.

    ``workers`` (CPU): processes that score a method asked episode by episode (MAML, first-order MAML, Reptile)
    side by side (:func:`oneshot.evaluation.evaluate`); methods scored from embeddings ignore it. ``start`` scores
    episodes ``start .. episodes - 1`` only (one block of a scoring that another process continues).
    """
    dev = select_device(device)
    ck = load_checkpoint(checkpoint, device=dev, method_options=method_options)
    inference = inference or InferenceOptions()
    members = [ck] + [load_checkpoint(p, device=dev) for p in ensemble]
    check_members([m.method for m in members], [m.metadata for m in members], inference)
    plain = inference.default and not ensemble
    if not plain and verification:
        raise OneshotError(
            "--verification is measured with the method's own embeddings: drop --tta, --transductive and extra --checkpoint"
        )
    if lake_runs:
        lake_check([m.metadata for m in members], plain)
    prep = ck.preprocessing
    data_meta = ck.metadata.get("data", {})
    dataset = data_meta.get("dataset", "omniglot")
    split = split or data_meta.get("split", "vinyals")
    if preprocessing:
        prep = prep.with_overrides(**preprocessing)
    if folder is not None:
        if lake_runs:
            raise OneshotError("--lake-runs scores Omniglot's runs; it cannot be combined with --folder")
        dataset, split, part = f"folder {folder}", "user", "all"
    sizes = [m.preprocessing.size for m in members]
    data, images_at = _evaluation_images(prep, sizes, dataset, split, part, data_dir, folder)
    if folder is not None:
        check_episode_shapes(data, shapes, queries, str(folder))
    elif dataset == "omniglot":
        split_overlap_check([m.metadata for m in members], split, part, data_dir)
    from oneshot.data.images import domain_warning

    msg = domain_warning(data.images[:2000].numpy(), ck.input_envelope, f"{Path(checkpoint).name} ({ck.domain})")
    if msg:
        import warnings

        from oneshot.data.images import InputWarning

        warnings.warn(msg, InputWarning, stacklevel=2)
    t0 = time.perf_counter()
    methods = [m.method for m in members]

    def embed(images_of: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """The ensemble's embeddings (N, D) of the same N images, each member given them at its own size."""
        return ensemble_embeddings(methods, [images_of(size) for size in sizes], dev, inference.tta)

    rule = None if plain else episode_rule(ck.method, len(members), inference)
    pairs = verification or roc_png or det_png
    if not shapes and not pairs:
        z = None
    else:  # verification pairs draw from the whole split; episodes, maybe from a few of its images
        used = None if pairs else episode_images(data, shapes, queries, episodes, seed)
        z = embeddings_of_drawn_images(
            len(data.labels),
            used,
            lambda rows: split_embeddings(ck.method, data.images[rows], dev) if plain else embed(lambda s: images_at[s][rows]),
        )
    res = CheckpointEvaluation(
        str(checkpoint),
        ck.metadata["method"],
        ck.method.options(),
        dataset,
        split,
        part,
        [
            evaluate(
                ck.method,
                data,
                ways,
                shots,
                queries,
                episodes,
                seed,
                dev,
                embeddings=z,
                progress=progress,
                rule=rule,
                workers=workers,
                start=start,
            )
            for ways, shots in shapes
        ],
    )
    if not plain:
        res.ensemble = [str(checkpoint), *map(str, ensemble)] if ensemble else []
        res.inference = inference.summary()
    if lake_runs:
        runs = {size: load_lake_runs(size, data_dir) for size in set(sizes)}
        embedded = None
        if not plain:
            embedded = [
                (embed(lambda s: runs[s][i].support), embed(lambda s: runs[s][i].queries))  # noqa: B023 -- called at once
                for i in range(len(runs[prep.size]))
            ]
        res.lake_runs = evaluate_lake_runs(ck.method, runs[prep.size], dev, rule=rule, embedded=embedded)
    if pairs:
        from oneshot.verification import evaluate_verification, plot_det, plot_roc

        res.verification = evaluate_verification(ck.method, data, verification_pairs, seed, similarity, dev, embeddings=z)
        if roc_png:
            res.curves["roc_png"] = str(plot_roc(res.verification, roc_png))
        if det_png:
            res.curves["det_png"] = str(plot_det(res.verification, det_png))
    res.seconds = time.perf_counter() - t0
    return res
