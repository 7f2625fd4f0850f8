"""The ``oneshot`` commands that show things rather than train or score: ``demo`` (Omniglot or faces),
``info`` (what a checkpoint is) and ``encoders`` (the built-in ones). :mod:`oneshot.cli` registers them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from oneshot.cli_common import (
    CHECKPOINT_HELP,
    DEMO_CHECKPOINT,
    DataDir,
    Device,
    Json,
    check_range,
    echo_json,
    evaluate_with_progress,
    print_table,
    train_with_progress,
)
from oneshot.errors import OneshotError
from oneshot.shapes import check_evaluation

if TYPE_CHECKING:
    from oneshot.training import TrainProgress


def demo(
    what: Annotated[
        str, typer.Argument(help="omniglot (handwritten characters) or faces (AT&T people never seen in training).")
    ] = "omniglot",
    checkpoint: Annotated[
        Optional[str],
        typer.Option(
            help=f"Checkpoint to demonstrate: {CHECKPOINT_HELP}; trained briefly when no such file exists "
            f"(default: {DEMO_CHECKPOINT} for omniglot)."
        ),
    ] = None,
    tta: Annotated[
        str,
        typer.Option(help="Test-time augmentation: auto (a built-in encoder's validated choice, else none), none or shift."),
    ] = "auto",
    out: Annotated[Path, typer.Option(help="Folder for the demo's picture and results (not an existing file).")] = Path(
        "demo-output"
    ),
    episodes: Annotated[int, typer.Option(help="Test episodes per shape (>= 1).")] = 1000,
    train_minutes: Annotated[
        float, typer.Option(help="Training budget in minutes when no checkpoint exists, in (0, 1440].")
    ] = 3.0,
    data_dir: DataDir = None,
    device: Device = "auto",
) -> None:
    """Train (if needed), evaluate one-shot accuracy on unseen alphabets (or faces), and show the results."""
    import torch

    check_range("episodes", episodes, 1)
    check_range("train_minutes", train_minutes, 0, 1440, low_open=True)
    if out.exists() and not out.is_dir():
        raise OneshotError(f"--out {out} is an existing file: give a folder for the demo's outputs")
    if what == "faces":
        return _demo_faces(Path(checkpoint) if checkpoint else FACES_CHECKPOINT, out, episodes, train_minutes, data_dir)
    if what != "omniglot":
        raise OneshotError(f"unknown demo {what!r}: choose omniglot or faces")
    if tta not in ("auto", "none", "shift"):
        raise OneshotError(f"--tta {tta!r}: choose auto, none or shift")

    from oneshot.checkpoint import load_checkpoint
    from oneshot.experiment import load_split
    from oneshot.inference import InferenceOptions
    from oneshot.runtime import select_device
    from oneshot.training import TrainConfig
    from oneshot.viz import EpisodePicture, plot_episodes
    from oneshot.weights import SHIPPED, resolve_checkpoint

    name = checkpoint or DEMO_CHECKPOINT
    path = resolve_checkpoint(name)
    if tta == "auto":
        tta = SHIPPED[name].tta if name in SHIPPED and not Path(name).exists() else "none"
    shapes = [(5, 1), (20, 1)]
    split: str | None = "vinyals"
    lake = False
    if path.is_file():  # a checkpoint of another dataset may not supply the demo's episodes
        data = load_checkpoint(path).metadata.get("data") or {}
        # Omniglot: scored on the Vinyals test alphabets (evaluation alphabets only, never seen by a Lake-split
        # encoder); a Lake-split encoder also on Lake's 20 official within-alphabet runs.
        split = "vinyals" if data.get("dataset", "omniglot") == "omniglot" else None
        lake = split is not None and data.get("split") == "lake"
        check_evaluation({"data": data}, split, "test", None, shapes, 15)
    out.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        typer.echo(f"{path} not found: training a ProtoNet for {train_minutes:g} minutes")
        path = out / "protonet_demo.safetensors"
        cfg = TrainConfig(episodes=100000, eval_every=250, val_episodes=200, max_minutes=train_minutes, device=device)
        train_with_progress(False, None, _loss, "protonet", cfg, path, data_dir=data_dir, command="oneshot demo")
        name = str(path)
    t0 = time.perf_counter()
    opts = InferenceOptions(tta)
    res = evaluate_with_progress(
        path, shapes, episodes, False, seed=0, data_dir=data_dir, device=device, split=split, inference=opts, lake_runs=lake
    )
    typer.echo(f"checkpoint: {name}" + (f" (test-time augmentation: {tta})" if tta != "none" else ""))
    for r in res.results:
        typer.echo(
            f"{r.ways}-way {r.shots}-shot on unseen Omniglot alphabets: {100 * r.accuracy:.2f}% +- {100 * r.ci95:.2f} (95% CI, {r.episodes} episodes)"
        )
    if res.lake_runs is not None:
        typer.echo(f"Lake's 20 official within-alphabet 20-way 1-shot runs: {100 * res.lake_runs.accuracy:.2f}%")
    # Picture: three 5-way 1-shot test episodes, 2 queries per class.
    dev = select_device(device)
    ck = load_checkpoint(path, device=dev)
    test = load_split("omniglot", res.split, "test", ck.preprocessing.size, data_dir)
    from oneshot.data.samplers import EpisodeSampler

    sampler = EpisodeSampler(test.class_indices, 5, 1, 2, 3, seed=7)
    pictures = []
    for i, ep in enumerate(sampler):
        s = test.gather(ep.support, dev)
        q = test.gather(ep.query, dev)
        with torch.no_grad():
            pred = ck.method.classify(s, torch.arange(5, device=dev), q, 5).argmax(1).tolist()
        truth = torch.arange(5).repeat_interleave(2).tolist()
        pictures.append(
            EpisodePicture(test.images[ep.support], test.images[ep.query], pred, truth, f"episode {i + 1}: 5-way 1-shot")
        )
    png = plot_episodes(pictures, out / "episodes.png")
    (out / "results.json").write_text(json.dumps(res.to_dict(), indent=2))
    typer.echo(f"picture of one-shot episodes: {png} (evaluation took {time.perf_counter() - t0:.0f}s)")


FACES_CHECKPOINT = Path("models/protonet_resnet12s_att.safetensors")


def _loss(p: TrainProgress) -> str:
    """The demos' progress text: the training loss."""
    return f"loss {p.loss:.3f}"


def _demo_faces(checkpoint: Path, out: Path, episodes: int, train_minutes: float, data_dir: Optional[Path]) -> None:
    """``oneshot demo faces``: train on s1-s20 if needed, then the whole faces protocol with its baselines."""
    from oneshot.cli_common import PHOTO_AUGMENT
    from oneshot.protocols.faces import run_faces
    from oneshot.training import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        typer.echo(
            f"{checkpoint} not found: training a ProtoNet ResNet-12 (narrow) on people s1-s16 for {train_minutes:g} minutes"
        )
        checkpoint = out / "protonet_faces_demo.safetensors"
        cfg = TrainConfig(
            episodes=100000,
            ways=16,
            shots=1,
            queries=4,
            lr_step=1500,
            eval_every=50,
            val_ways=4,
            val_queries=9,
            val_episodes=300,
            max_minutes=train_minutes,
            precision="fp32",
            augment=PHOTO_AUGMENT,
        )
        model = {"dataset": "att_faces", "size": 32, "encoder": "resnet12_small"}
        train_with_progress(
            False, None, _loss, "protonet", cfg, checkpoint, data_dir=data_dir, command="oneshot demo faces", **model
        )
    res = run_faces(checkpoint, episodes, roc_png=out / "faces_roc.png", data_dir=data_dir)
    rows = []
    for name, r in res["methods"].items():
        if "verification" not in r:  # e.g. dlib-face without its optional packages
            typer.echo(f"{name}: {r.get('unavailable', 'not measured')}")
            continue
        v = r["verification"]
        acc = f"{100 * r['accuracy']:.2f}% +- {100 * r['ci95']:.2f}"
        rows.append(
            (name, acc, f"{100 * v['eer']:.2f}%", f"{100 * v['tar_at_far_1e-2']:.1f}%", f"{100 * v['tar_at_far_1e-3']:.1f}%")
        )
    title = f"AT&T faces, people s21-s40 never seen in training ({episodes} episodes, all 19,900 pairs)"
    print_table(title, ("method", "20-way 1-shot", "EER", "TAR @ FAR 1e-2", "TAR @ FAR 1e-3"), rows, justify="right")
    for name, g in (("trained", res["gallery"]), ("dlib_face", res.get("gallery_dlib_face"))):
        if g is not None:
            _echo_gallery_flow(name, g)
    (out / "faces_results.json").write_text(json.dumps(res, indent=2))
    typer.echo(f"ROC curves: {res['roc_png']}; results: {out / 'faces_results.json'}")


def _echo_gallery_flow(name: str, g: dict) -> None:
    """One encoder's gallery flow of the faces demo; a warning when strangers get in far above the target rate."""
    typer.echo(
        f"gallery ({name}): {g['enrolled']} people enrolled from one photo each, closed-set accuracy "
        f"{100 * g['closed_set_accuracy']:.1f}%; {g['strangers']} strangers, thresholds calibrated on s1-s20:"
    )
    for r in g["rates"]:
        typer.echo(
            f"  target FAR {r['target_far']:g}: accepted and right {100 * r['tar']:.1f}%, strangers accepted "
            f"{100 * r['stranger_far']:.1f}% ({r['stranger_queries']} stranger photos)"
        )
        # one stranger photo in n is the resolution of the measurement: warn only beyond twice that
        if r["stranger_far"] > r["target_far"] + 2 / r["stranger_queries"]:
            typer.echo(
                f"warning: with the {name} encoder, {100 * r['stranger_far']:.0f}% of the strangers' photos were accepted "
                f"at a threshold calibrated for {100 * r['target_far']:g}%: it does not keep strangers out; do not use it "
                "for access decisions",
                err=True,
            )


def info(
    checkpoint: Annotated[str, typer.Argument(help=f"Checkpoint to describe: {CHECKPOINT_HELP}.")],
    as_json: Json = False,
) -> None:
    """What a checkpoint is: method, encoder, the exact preprocessing it applies, training data and budget."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.weights import resolve_checkpoint

    ck = load_checkpoint(resolve_checkpoint(checkpoint))
    meta = ck.metadata
    prep = ck.preprocessing
    enc_opts = meta.get("encoder_options", {})
    training = meta.get("training", {})
    out = {
        "checkpoint": str(checkpoint),
        "method": meta.get("method"),
        "method_options": meta.get("method_options", {}),
        "encoder": meta.get("encoder"),
        "encoder_options": enc_opts,
        "embedding_dim": meta.get("embedding_dim"),
        "preprocessing": {
            **{f: getattr(prep, f) for f in ("size", "channels", "invert", "resize", "background")},
            "normalisation": {"mean": enc_opts.get("mean", 0.0), "std": enc_opts.get("std", 1.0), "applied_by": "encoder"}
            if "mean" in enc_opts
            else "none (pixels / 255)",
        },
        "domain": ck.domain,
        "data": meta.get("data", {}),
        "input_envelope": ck.input_envelope,
        "training": {k: training.get(k) for k in ("command", "episodes_trained", "val_accuracy", "val_shape", "device")},
        "commit": meta.get("commit"),
        "created": meta.get("created"),
    }
    if as_json:
        return echo_json(out)
    typer.echo(f"{checkpoint}: {out['method']} on {out['encoder']} {enc_opts}, {out['embedding_dim']}-d embeddings")
    typer.echo(f"trained on: {ck.domain} {out['data']}")
    typer.echo(f"preprocessing: {prep.describe()}")
    typer.echo(
        "  decode: EXIF orientation applied; transparency composited on the background; 16-bit scaled by bit depth; "
        f"{'colour -> grey by ITU-R 601 luma' if prep.channels == 1 else 'grey -> RGB by repetition'} (docs/images.md)"
    )
    norm = out["preprocessing"]["normalisation"]
    norm_text = norm if isinstance(norm, str) else f"(x - {norm['mean']}) / {norm['std']}, applied by the encoder"
    typer.echo(f"  normalisation: {norm_text}")
    if ck.input_envelope:
        e = ck.input_envelope
        typer.echo(
            "  training inputs (0.1%-99.9%): "
            + ", ".join(f"{n} {a:.2f}-{b:.2f}" for n, a, b in zip(e.get("features", []), e["low"], e["high"], strict=False))
        )
    t = out["training"]
    if t.get("val_accuracy") is not None:
        typer.echo(
            f"validation: {100 * t['val_accuracy']:.2f}% ({t['val_shape']}) after {t['episodes_trained']} episodes on {t['device']}"
        )
    if t.get("command"):
        typer.echo(f"command: {t['command']}")


def encoders(as_json: Json = False) -> None:
    """The built-in encoders (`--encoder NAME` anywhere a checkpoint or model path is accepted)."""
    from oneshot.modalities import BUILTIN, builtin_modality
    from oneshot.weights import SHIPPED

    rows = []
    for name, (_, what) in sorted(BUILTIN.items()):
        shipped = SHIPPED.get(name)
        rows.append(
            {
                "name": name,
                "modality": shipped.modality if shipped else builtin_modality(name),
                "trained_on": shipped.trained_on if shipped else what,
                "figures": shipped.figures if shipped else "",
            }
        )
    if as_json:
        return echo_json(rows)
    table = [(r["name"], r["modality"], r["trained_on"], r["figures"]) for r in rows]
    print_table(
        "built-in encoders (--encoder NAME)", ("name", "modality", "trained on / what", "figures"), table, overflow="fold"
    )
