"""Command bodies for the non-image domains that ``oneshot train`` / ``evaluate`` / ``predict`` route to: SetFit-style
text fine-tuning, CLINC150 evaluation and text prediction (docs/text.md), and the Tox21 few-shot evaluation and
the queries of molecule checkpoints (docs/molecules.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from oneshot.cli_common import command_line, echo_json, echo_result, parse_options, print_table, progress
from oneshot.errors import OneshotError


def train_text_command(
    out: Path,
    examples: Optional[Path],
    shots: Optional[int],
    encoder: str,
    option: list[str],
    seed: int,
    max_minutes: float,
    data_dir: Optional[Path],
    as_json: bool,
) -> None:
    from oneshot.modalities.text.commands import finetune_config, train_text, training_examples

    if out.suffix == ".safetensors":
        raise OneshotError("--domain text writes a model folder: give --out a folder name, e.g. runs/text-model")
    options = parse_options(option)
    finetune_config(options, seed, max_minutes)  # an unknown -o option fails before any work
    ex, data = training_examples(examples, shots, seed, data_dir)
    with progress(as_json) as bar:
        tasks: dict[str, object] = {}

        def on_progress(stage: str, step: int, total: int, loss: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"fine-tuning ({stage})", total=total, info="")
            bar.update(tasks[stage], completed=step, info=f"loss {loss:.3f}")  # type: ignore[arg-type]

        res = train_text(
            out,
            ex,
            data,
            encoder=encoder,
            options=options,
            seed=seed,
            max_minutes=max_minutes,
            command=command_line(),
            progress=on_progress,
        )
    echo_result(
        as_json,
        res,
        f"fine-tuned {res['base_encoder']['spec']} on {res['examples']} texts of {res['classes']} classes in "
        f"{res['seconds']:.0f}s; model folder {res['out']} (encoder {res['fingerprint']})",
    )


def evaluate_text_command(
    encoder: str, shots: list[int], seeds: int, split: str, data_dir: Optional[Path], as_json: bool
) -> None:
    """``oneshot evaluate --domain text``: CLINC150 150-way K-shot accuracy over ``seeds`` support draws, the nearest
    template and the few-shot intent classifier side by side."""
    from oneshot.modalities.text.commands import evaluate_text

    res = evaluate_text(encoder, shots, seeds, split, data_dir)
    if as_json:
        return echo_json(res)
    rows = [
        (
            str(r["ways"]),
            str(r["shots"]),
            f"{100 * r['accuracy']:.2f}% +- {100 * r['ci95']:.2f}",
            f"{100 * r['classifier_accuracy']:.2f}% +- {100 * r['classifier_ci95']:.2f}",
        )
        for r in res["results"]
    ]
    title = f"{encoder} on CLINC150 {split} ({seeds} support draws; accuracy and 95% CI)"
    print_table(title, ("ways", "shots", "nearest template", "classifier"), rows, justify="right")


def predict_text_command(
    support: Path,
    texts: list[str],
    files: list[Path],
    encoder: str,
    as_json: bool,
    nearest_template: bool = False,
    score: str = "template_cosine",
    unlabeled: Path | None = None,
) -> None:
    """``oneshot predict`` with texts: each query (a ``--text``, or a file holding one query) to its class by the
    few-shot intent classifier (or, with ``nearest_template``, the nearest template); ``unlabeled``: a file of
    unlabeled utterances, one per line, the classifier is self-trained on."""
    from oneshot.modalities.text.commands import predict_text
    from oneshot.modalities.text.files import read_lines

    queries = texts + [" ".join(read_lines(f)) for f in files]
    pool = read_lines(unlabeled) if unlabeled is not None else None
    classes, preds = predict_text(support, queries, encoder, nearest_template, score, pool)
    if as_json:
        return echo_json({"encoder": encoder, "classes": classes, "predictions": preds})
    rows = [(p["query"], p["class"], f"{p['score']:.3f}", f"{p['probability']:.3f}") for p in preds]
    print_table(f"{len(preds)} queries, {len(classes)} classes", ("query", "class", f"score ({score})", "probability"), rows)


def predict_molecules_command(checkpoint: Path, support: Path, smiles: list[str], files: list[Path]) -> dict[str, Any]:
    """``oneshot predict`` for a molecule checkpoint: ``{"classes", "predictions"}`` for the ``--smiles`` and the
    smiles column of each CSV file."""
    from oneshot.data.molecules import read_smiles_column
    from oneshot.modalities.molecule.commands import predict_molecules

    queries = [(v, v) for v in smiles] + [(s, w) for f in files for s, w, _ in read_smiles_column(f)]
    if not queries:
        raise OneshotError("give query molecules: CSV files with a smiles column, or --smiles")
    return predict_molecules(checkpoint, support, queries)


def evaluate_molecules_command(
    checkpoint: Path,
    shots: list[int],
    draws: int,
    seed: int,
    assays: Optional[list[str]],
    data_dir: Optional[Path],
    as_json: bool,
) -> None:
    """``oneshot evaluate`` for a molecule checkpoint: Tox21 few-shot ROC-AUC (see docs/molecules.md)."""
    from oneshot.modalities.molecule.commands import evaluate_molecule_checkpoint

    n = len(assays) if assays else 3
    with progress(as_json) as bar:
        task = bar.add_task("evaluating", total=draws * n * len(shots), info="")
        res = evaluate_molecule_checkpoint(checkpoint, shots, draws, seed, assays, data_dir, lambda k: bar.advance(task, k))
    if as_json:
        return echo_json(res)
    rows = [
        (
            f"{r['shots']}+/{r['shots']}-",
            *(f"{100 * r['assays'][a]['roc_auc']:.2f}" for a in res["assays"]),
            f"{100 * r['mean_roc_auc']:.2f}",
            f"+- {100 * r['ci95']:.2f}",
        )
        for r in res["results"]
    ]
    title = f"{checkpoint.name} on Tox21 ({draws} support draws per assay, seed {seed}): ROC-AUC %"
    print_table(title, ["shots", *res["assays"], "mean", "95% CI"], rows, justify="right")
    if res["seen_in_training"]:
        typer.echo(f"warning: the checkpoint was trained on {', '.join(res['seen_in_training'])}: not a few-shot test for those")
