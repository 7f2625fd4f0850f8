"""``oneshot predict``: classify query images, molecules or texts given one example per class, with no
retraining. :mod:`oneshot.cli` registers it; the text and molecule bodies are in :mod:`oneshot.cli_domains`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from oneshot.cli_common import CHECKPOINT_HELP, DEFAULT_CHECKPOINT, Device, Json, echo_json, print_table
from oneshot.cli_domains import predict_molecules_command, predict_text_command
from oneshot.errors import OneshotError


def predict(
    support: Annotated[
        Path,
        typer.Option(
            help="Folder with one example per class: image files named by class, or one sub-folder per class; for a molecule checkpoint, a CSV with smiles and label columns; for --text, a CSV / JSON lines file of label, text."
        ),
    ],
    query: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help="Query images or folders of images (text: files holding one query each; molecules: CSV files with a smiles column)."
        ),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help=f"Checkpoint: {CHECKPOINT_HELP}.")] = DEFAULT_CHECKPOINT,
    smiles: Annotated[
        Optional[list[str]], typer.Option("--smiles", help="A query molecule as SMILES (repeatable; molecule checkpoints).")
    ] = None,
    device: Device = "auto",
    as_json: Json = False,
    text: Annotated[
        Optional[list[str]],
        typer.Option(
            "--text", help="A query text (repeat); --support is then a CSV / JSON lines file of label, text[, description]."
        ),
    ] = None,
    encoder: Annotated[str, typer.Option(help="Text: 'text' (the shipped MiniLM) or a model folder.")] = "text",
    nearest_template: Annotated[
        bool,
        typer.Option(
            "--nearest-template",
            help="Text: the nearest template instead of the few-shot intent classifier (templates + lexical view, docs/text.md).",
        ),
    ] = False,
    score: Annotated[
        str,
        typer.Option(
            "--score",
            help="Text: the score reported, template_cosine (to the predicted class's template) or mean_distance "
            "(minus the squared distance to the nearest class mean, in [-4, 0]; the better out-of-scope score, docs/text.md).",
        ),
    ] = "template_cosine",
    unlabeled: Annotated[
        Optional[Path],
        typer.Option(
            "--unlabeled",
            help="Text: a UTF-8 file of unlabeled utterances, one per line (e.g. past queries); the classifier is "
            "self-trained on its confident pseudo-labels (docs/text.md, 'Unlabeled utterances').",
        ),
    ] = None,
) -> None:
    """Classify query images (or molecules; or texts: --text with a CSV support) given one example per class, with no retraining."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.modalities import checkpoint_modality
    from oneshot.modalities.text.files import is_table
    from oneshot.predict import load_support, query_files
    from oneshot.predict import predict as run_predict
    from oneshot.runtime import select_device
    from oneshot.weights import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    is_molecule = path.is_file() and checkpoint_modality(path) == "molecule"
    if not is_molecule and (text or is_table(support)):
        return predict_text_command(
            support, list(text or []), list(query or []), encoder, as_json, nearest_template, score, unlabeled
        )
    if unlabeled is not None:
        raise OneshotError("--unlabeled is for texts (--text with a CSV / JSON lines support): images and molecules take none")
    if is_molecule:
        res = predict_molecules_command(path, support, list(smiles or []), list(query or []))
        preds, classes = res["predictions"], res["classes"]
    else:
        if not query:
            raise OneshotError("give query images or folders")
        dev = select_device(device)
        ck = load_checkpoint(path, device=dev)
        sup = load_support(support, ck.preprocessing)
        preds = run_predict(ck, sup, query_files(query), dev)
        classes = sup.class_names
    if as_json:
        return echo_json({"checkpoint": str(path), "classes": classes, "predictions": preds})
    rows = [(p["query"], p["class"], f"{p['probability']:.3f}") for p in preds]
    print_table(f"{len(preds)} queries, {len(classes)} classes", ("query", "class", "probability"), rows)
