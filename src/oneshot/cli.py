"""The ``oneshot`` command line: train, evaluate, predict, demo.

Every command explains its options in ``--help``, shows progress bars on long work, prints ``--json`` for
scripts, and turns user mistakes into a one-line ``error: ...`` message with exit status 2.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from oneshot.errors import OneshotError, OneshotWarning

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="oneshot: learn to recognise a new class from a single example.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
DEFAULT_CHECKPOINT = Path("models/protonet_conv4_vinyals.safetensors")

DataDir = Annotated[Optional[Path], typer.Option(help="Folder with the dataset files (else $ONESHOT_DATA, then the user cache, then download).")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu or cuda.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    if issubclass(category, OneshotWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        warnings._showwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, file, line))  # type: ignore[attr-defined]


def user_errors(fn):
    """Print a :class:`OneshotError` as one line on stderr and exit with status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", OneshotWarning)
                warnings.showwarning = _show_warning  # a OneshotWarning is one "warning: ..." line
                return fn(*args, **kwargs)
        except OneshotError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=quiet, transient=False,
    )


MethodOptions = Annotated[
    list[str],
    typer.Option(
        "--option", "-o",
        help="Method option KEY=VALUE (repeat; VALUE is read as JSON when it parses, else as text), "
        "e.g. -o mining=batch-hard -o fce=true. See docs/methods.md.",
    ),
]


def _parse_options(items: list[str]) -> dict:
    """``["margin=0.5", "mining=all"]`` -> ``{"margin": 0.5, "mining": "all"}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OneshotError(f"method option {item!r} is not KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def _parse_shapes(ways: list[int], shots: list[int], standard: bool) -> list[tuple[int, int]]:
    if standard:
        from oneshot.experiment import STANDARD_SHAPES

        return list(STANDARD_SHAPES)
    return [(w, k) for w in ways for k in shots]


DomainOpt = Annotated[str, typer.Option(help="What to learn: omniglot (images, the default) or text (docs/text.md).")]


def _train_text(out: Path, examples: Optional[Path], shots: Optional[int], encoder: str, option: list[str], seed: int,
                max_minutes: float, data_dir: Optional[Path], as_json: bool) -> None:
    from oneshot.modalities.text.commands import train_text, training_examples

    if out.suffix == ".safetensors":
        raise OneshotError("--domain text writes a model folder: give --out a folder name, e.g. runs/text-model")
    ex, data = training_examples(examples, shots, seed, data_dir)
    command = "oneshot " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with _progress(as_json) as bar:
        tasks: dict[str, object] = {}

        def on_progress(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"fine-tuning ({stage})", total=total, info="")
            bar.update(tasks[stage], completed=step, info=f"loss {loss:.3f}")  # type: ignore[arg-type]

        res = train_text(out, ex, data, encoder=encoder, options=_parse_options(option), seed=seed, max_minutes=max_minutes,
                         command=command, progress=on_progress)
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(f"fine-tuned {res['base_encoder']['spec']} on {res['examples']} texts of {res['classes']} classes in "
                   f"{res['seconds']:.0f}s; model folder {res['out']} (encoder {res['fingerprint']})")


@app.command()
@user_errors
def train(
    method: Annotated[str, typer.Option(help="One-shot method to train: protonet, siamese, contrastive, triplet, matching, baseline, maml, fomaml, reptile, memory (docs/methods.md).")] = "protonet",
    option: MethodOptions = [],
    out: Annotated[Path, typer.Option(help="Where to write the best checkpoint (.safetensors).")] = Path("runs/protonet.safetensors"),
    split: Annotated[str, typer.Option(help="Omniglot split: vinyals (rotations as classes) or lake (background vs evaluation).")] = "vinyals",
    episodes: Annotated[int, typer.Option(help="Training episodes.")] = 10000,
    ways: Annotated[int, typer.Option(help="Classes per training episode (N).")] = 60,
    shots: Annotated[int, typer.Option(help="Support examples per class in training episodes (K).")] = 1,
    queries: Annotated[int, typer.Option(help="Query examples per class in training episodes (Q).")] = 5,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    lr_step: Annotated[int, typer.Option(help="Multiply the learning rate by --lr-gamma every this many episodes.")] = 2000,
    lr_gamma: Annotated[float, typer.Option(help="Learning-rate decay factor.")] = 0.5,
    eval_every: Annotated[int, typer.Option(help="Validate (and maybe checkpoint) every this many episodes.")] = 500,
    val_ways: Annotated[int, typer.Option(help="Ways of validation episodes (model selection, validation split only).")] = 20,
    val_shots: Annotated[int, typer.Option(help="Shots of validation episodes.")] = 1,
    val_episodes: Annotated[int, typer.Option(help="Validation episodes per validation.")] = 500,
    patience: Annotated[int, typer.Option(help="Stop after this many validations without improvement (0: never).")] = 0,
    max_minutes: Annotated[float, typer.Option(help="Stop training after this many minutes (0: no limit).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and episodes.")] = 0,
    precision: Annotated[str, typer.Option(help="auto (bf16 where the hardware supports it), fp32 or bf16.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from the resume state beside --out if present.")] = False,
    data_dir: DataDir = None,
    device: Device = "auto",
    as_json: Json = False,
    domain: DomainOpt = "omniglot",
    examples: Annotated[Optional[Path], typer.Option(help="--domain text: labelled texts, a CSV / JSON lines file with label and text columns.")] = None,
    clinc150_shots: Annotated[Optional[int], typer.Option(help="--domain text: fine-tune on K examples per CLINC150 intent drawn from train (--seed).")] = None,
    encoder: Annotated[str, typer.Option(help="--domain text: the encoder to fine-tune: 'text' (the shipped MiniLM) or a model folder.")] = "text",
) -> None:
    """Train an embedding on Omniglot's training classes; keep the best checkpoint on the validation split.

    With --domain text: fine-tune a sentence encoder SetFit-style on a few labelled texts (docs/text.md) and
    write a model folder (--out) that `oneshot gallery create --encoder FOLDER` loads.
    """
    if domain == "text":
        _train_text(out, examples, clinc150_shots, encoder, option, seed, max_minutes, data_dir, as_json)
        return
    if domain != "omniglot":
        raise OneshotError(f"unknown --domain {domain!r}: use omniglot or text")
    from oneshot.experiment import train_model
    from oneshot.training import TrainConfig

    cfg = TrainConfig(
        episodes=episodes, ways=ways, shots=shots, queries=queries, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma,
        eval_every=eval_every, val_ways=val_ways, val_shots=val_shots, val_episodes=val_episodes,
        patience=patience, max_minutes=max_minutes, seed=seed, device=device, precision=precision,
    )
    command = "oneshot " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with _progress(as_json) as bar:
        task = bar.add_task("training", total=episodes, info="")

        def on_progress(e: int, stats: dict) -> None:
            if e % 10 == 0 or e == episodes:
                best = f"best val {100 * stats['best_val']:.2f}%" if stats["best_val"] >= 0 else "not validated yet"
                bar.update(task, completed=e, info=f"loss {stats['loss']:.3f}  {best}")

        res = train_model(method, cfg, out, split=split, data_dir=data_dir, command=command, resume=resume, on_progress=on_progress,
                          method_options=_parse_options(option))
    summary = {k: v for k, v in res.__dict__.items() if k != "history"}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"best validation accuracy {100 * res.best_val_accuracy:.2f}% +- {100 * res.best_val_ci95:.2f} "
            f"({val_ways}-way {val_shots}-shot) at episode {res.best_episode}; {res.episodes_run} episodes in "
            f"{res.train_seconds:.0f}s ({res.images_per_second:.0f} images/s, {res.device}, {res.precision}); checkpoint {res.checkpoint}"
        )


@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint (.safetensors) to evaluate.")] = DEFAULT_CHECKPOINT,
    ways: Annotated[list[int], typer.Option(help="N: classes per episode (repeat for several).")] = [5],
    shots: Annotated[list[int], typer.Option(help="K: support examples per class (repeat for several).")] = [1],
    queries: Annotated[int, typer.Option(help="Query examples per class per episode.")] = 15,
    episodes: Annotated[int, typer.Option(help="Episodes per shape (1000 is the standard).")] = 1000,
    split: Annotated[str, typer.Option(help="Part of the split to evaluate on: test, val or train.")] = "test",
    protocol: Annotated[Optional[str], typer.Option(help="Omniglot split (vinyals or lake); default: the checkpoint's.")] = None,
    standard: Annotated[bool, typer.Option(help="Evaluate the four standard shapes 5/20-way x 1/5-shot.")] = False,
    lake_runs: Annotated[bool, typer.Option(help="Also score Lake's 20 official 20-way 1-shot runs.")] = False,
    verification: Annotated[bool, typer.Option(help="Also report verification metrics (AUC, EER, TAR at FAR 1e-2/1e-3) on seeded same/different pairs.")] = False,
    pairs: Annotated[int, typer.Option(help="Same/different pairs for --verification (half each).")] = 20000,
    similarity: Annotated[str, typer.Option(help="Pair similarity for --verification: auto (the method's own), cosine or neg-sqdist.")] = "auto",
    roc_png: Annotated[Optional[Path], typer.Option(help="Save the verification ROC curve as a PNG (implies --verification).")] = None,
    det_png: Annotated[Optional[Path], typer.Option(help="Save the verification DET curve as a PNG (implies --verification).")] = None,
    option: MethodOptions = [],
    seed: Annotated[int, typer.Option(help="Evaluation seed: fixes the episodes, so the same checkpoint prints the same number.")] = 0,
    data_dir: DataDir = None,
    device: Device = "auto",
    as_json: Json = False,
    domain: DomainOpt = "omniglot",
    encoder: Annotated[str, typer.Option(help="--domain text: 'text' (the shipped MiniLM) or a model folder.")] = "text",
    seeds: Annotated[int, typer.Option(help="--domain text: seeded support draws from CLINC150 train per shot count.")] = 10,
) -> None:
    """N-way K-shot accuracy with a 95% confidence interval over seeded test episodes.

    With --domain text: CLINC150 150-way K-shot accuracy (nearest template) on the whole test (or val) split,
    mean and 95% CI over --seeds support draws.
    """
    if domain == "text":
        from oneshot.modalities.text.commands import evaluate_text

        res = evaluate_text(encoder, shots, seeds, split, data_dir)
        if as_json:
            typer.echo(json.dumps(res))
            return
        table = Table(title=f"{encoder} on CLINC150 {split} (nearest template, {seeds} support draws)")
        for col in ("ways", "shots", "accuracy", "95% CI"):
            table.add_column(col, justify="right")
        for r in res["results"]:
            table.add_row(str(r["ways"]), str(r["shots"]), f"{100 * r['accuracy']:.2f}%", f"+- {100 * r['ci95']:.2f}")
        Console().print(table)
        return
    if domain != "omniglot":
        raise OneshotError(f"unknown --domain {domain!r}: use omniglot or text")
    from oneshot.experiment import evaluate_checkpoint

    from oneshot.checkpoint import load_checkpoint

    shapes = _parse_shapes(ways, shots, standard)
    load_checkpoint(checkpoint)  # a missing, truncated or foreign file fails here, before any progress bar
    with _progress(as_json) as bar:
        task = bar.add_task("evaluating", total=episodes * len(shapes), info="")
        res = evaluate_checkpoint(
            checkpoint, shapes, episodes=episodes, queries=queries, split=protocol, part=split, seed=seed,
            lake_runs=lake_runs, data_dir=data_dir, device=device, progress=lambda n: bar.advance(task, n),
            method_options=_parse_options(option), verification=verification, verification_pairs=pairs,
            similarity=similarity, roc_png=roc_png, det_png=det_png,
        )
    rows = res["results"]
    if as_json:
        if len(rows) == 1:
            obj = dict(rows[0], split=split, protocol=res["split"], checkpoint=str(checkpoint), method=res["method"])
        else:
            obj = {"split": split, "protocol": res["split"], "checkpoint": str(checkpoint), "method": res["method"], "results": rows}
        if "lake_runs" in res:
            obj["lake_runs"] = res["lake_runs"]
        if "verification" in res:
            obj["verification"] = res["verification"]
        typer.echo(json.dumps(obj))
        return
    table = Table(title=f"{res['method']} on {res['dataset']} {res['split']} {split} ({episodes} episodes, seed {seed})")
    for col in ("ways", "shots", "accuracy", "95% CI"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["ways"]), str(r["shots"]), f"{100 * r['accuracy']:.2f}%", f"+- {100 * r['ci95']:.2f}")
    Console().print(table)
    if "lake_runs" in res:
        typer.echo(f"Lake's 20 official runs (20-way 1-shot within alphabet): {100 * res['lake_runs']['accuracy']:.2f}% correct")
    if "verification" in res:
        v = res["verification"]
        typer.echo(
            f"verification ({v['pairs']} pairs, {v['similarity']} similarity): AUC {v['auc']:.4f}, EER {100 * v['eer']:.2f}%, "
            f"TAR {100 * v['tar_at_far_1e-2']:.2f}% at FAR 1e-2, {100 * v['tar_at_far_1e-3']:.2f}% at FAR 1e-3"
        )
        for key in ("roc_png", "det_png"):
            if key in v:
                typer.echo(f"{key.split('_')[0].upper()} curve: {v[key]}")


@app.command()
@user_errors
def predict(
    support: Annotated[Path, typer.Option(help="Folder with one example per class: image files named by class, or one sub-folder per class.")],
    query: Annotated[Optional[list[Path]], typer.Argument(help="Query images or folders of images (text: files holding one query each).")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint (.safetensors).")] = DEFAULT_CHECKPOINT,
    device: Device = "auto",
    as_json: Json = False,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="A query text (repeat); --support is then a CSV / JSON lines file of label, text[, description].")] = None,
    encoder: Annotated[str, typer.Option(help="Text: 'text' (the shipped MiniLM) or a model folder.")] = "text",
) -> None:
    """Classify query images given one example per class, with no retraining (or texts: --text with a CSV support)."""
    from oneshot.modalities.text.files import is_table

    if text or is_table(support):
        from oneshot.modalities.text.commands import predict_text
        from oneshot.modalities.text.files import read_lines

        qs = list(text or []) + [t for q in (query or []) for t in [" ".join(read_lines(q))]]
        classes, preds = predict_text(support, qs, encoder)
        if as_json:
            typer.echo(json.dumps({"encoder": encoder, "classes": classes, "predictions": preds}))
            return
        table = Table(title=f"{len(preds)} queries, {len(classes)} classes")
        for col in ("query", "class", "score", "probability"):
            table.add_column(col)
        for p in preds:
            table.add_row(p["query"], p["class"], f"{p['score']:.3f}", f"{p['probability']:.3f}")
        Console().print(table)
        return
    if not query:
        raise OneshotError("give at least one query image or folder")
    from oneshot.checkpoint import load_checkpoint
    from oneshot.predict import load_support, predict as run_predict, query_files
    from oneshot.runtime import select_device

    dev = select_device(device)
    ck = load_checkpoint(checkpoint, device=dev)
    sup = load_support(support, ck.preprocessing)
    preds = run_predict(ck, sup, query_files(query), dev)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "classes": sup.class_names, "predictions": preds}))
        return
    table = Table(title=f"{len(preds)} queries, {len(sup.class_names)} classes")
    for col in ("query", "class", "probability"):
        table.add_column(col)
    for p in preds:
        table.add_row(p["query"], p["class"], f"{p['probability']:.3f}")
    Console().print(table)


@app.command()
@user_errors
def demo(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint to demonstrate; trained briefly when it does not exist.")] = DEFAULT_CHECKPOINT,
    out: Annotated[Path, typer.Option(help="Folder for the demo's picture and results.")] = Path("demo-output"),
    episodes: Annotated[int, typer.Option(help="Test episodes per shape.")] = 1000,
    train_minutes: Annotated[float, typer.Option(help="Training budget when no checkpoint exists.")] = 3.0,
    data_dir: DataDir = None,
    device: Device = "auto",
) -> None:
    """Train (if needed), evaluate one-shot accuracy on unseen alphabets, and draw predicted episodes."""
    import torch

    from oneshot.checkpoint import load_checkpoint
    from oneshot.experiment import evaluate_checkpoint, load_split, train_model
    from oneshot.runtime import select_device
    from oneshot.training import TrainConfig
    from oneshot.viz import EpisodePicture, plot_episodes

    out.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        typer.echo(f"{checkpoint} not found: training a ProtoNet for {train_minutes:g} minutes")
        checkpoint = out / "protonet_demo.safetensors"
        cfg = TrainConfig(episodes=100000, eval_every=250, val_episodes=200, max_minutes=train_minutes, device=device)
        with _progress(False) as bar:
            task = bar.add_task("training", total=None, info="")
            train_model("protonet", cfg, checkpoint, data_dir=data_dir, command="oneshot demo",
                        on_progress=lambda e, s: bar.update(task, completed=e, info=f"loss {s['loss']:.3f}") if e % 10 == 0 else None)
    t0 = time.perf_counter()
    shapes = [(5, 1), (20, 1)]
    with _progress(False) as bar:
        task = bar.add_task("evaluating", total=episodes * len(shapes), info="")
        res = evaluate_checkpoint(checkpoint, shapes, episodes=episodes, seed=0, data_dir=data_dir, device=device,
                                  progress=lambda n: bar.advance(task, n))
    typer.echo(f"checkpoint: {checkpoint}")
    for r in res["results"]:
        typer.echo(f"{r['ways']}-way {r['shots']}-shot on unseen Omniglot alphabets: {100 * r['accuracy']:.2f}% +- {100 * r['ci95']:.2f} (95% CI, {r['episodes']} episodes)")
    # Picture: three 5-way 1-shot test episodes, 2 queries per class.
    dev = select_device(device)
    ck = load_checkpoint(checkpoint, device=dev)
    test = load_split("omniglot", res["split"], "test", ck.preprocessing.size, data_dir)
    from oneshot.data.samplers import EpisodeSampler

    sampler = EpisodeSampler(test.class_indices, 5, 1, 2, 3, seed=7)
    pictures = []
    for i, ep in enumerate(sampler):
        s = test.gather(ep.support, dev)
        q = test.gather(ep.query, dev)
        with torch.no_grad():
            pred = ck.method.classify(s, torch.arange(5, device=dev), q, 5).argmax(1).tolist()
        truth = torch.arange(5).repeat_interleave(2).tolist()
        pictures.append(EpisodePicture(test.images[ep.support], test.images[ep.query], pred, truth, f"episode {i + 1}: 5-way 1-shot"))
    png = plot_episodes(pictures, out / "episodes.png")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    typer.echo(f"picture of one-shot episodes: {png} (evaluation took {time.perf_counter() - t0:.0f}s)")


from oneshot.gallery.cli import app as gallery_app  # noqa: E402  (below user_errors, which it uses)
app.add_typer(gallery_app, name="gallery")


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
