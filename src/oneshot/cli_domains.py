"""Command bodies for the non-image domains that ``oneshot train`` / ``oneshot evaluate`` route to: SetFit-style
text fine-tuning (docs/text.md) and the Tox21 few-shot evaluation of molecule checkpoints (docs/molecules.md)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from oneshot.cli_common import parse_options, progress
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
    finetune_config(parse_options(option), seed, max_minutes)  # an unknown -o option fails before any work
    ex, data = training_examples(examples, shots, seed, data_dir)
    command = "oneshot " + " ".join(shlex.quote(a) for a in sys.argv[1:])
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
            options=parse_options(option),
            seed=seed,
            max_minutes=max_minutes,
            command=command,
            progress=on_progress,
        )
    if as_json:
        typer.echo(json.dumps(res))
    else:
        typer.echo(
            f"fine-tuned {res['base_encoder']['spec']} on {res['examples']} texts of {res['classes']} classes in "
            f"{res['seconds']:.0f}s; model folder {res['out']} (encoder {res['fingerprint']})"
        )


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
        typer.echo(json.dumps(res))
        return
    table = Table(title=f"{checkpoint.name} on Tox21 ({draws} support draws per assay, seed {seed}): ROC-AUC %")
    for col in ["shots", *res["assays"], "mean", "95% CI"]:
        table.add_column(col, justify="right")
    for r in res["results"]:
        table.add_row(
            f"{r['shots']}+/{r['shots']}-",
            *(f"{100 * r['assays'][a]['roc_auc']:.2f}" for a in res["assays"]),
            f"{100 * r['mean_roc_auc']:.2f}",
            f"+- {100 * r['ci95']:.2f}",
        )
    Console().print(table)
    if res["seen_in_training"]:
        typer.echo(f"warning: the checkpoint was trained on {', '.join(res['seen_in_training'])}: not a few-shot test for those")
