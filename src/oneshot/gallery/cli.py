"""``oneshot gallery ...``: the gallery's command line, a thin layer over :class:`oneshot.gallery.Gallery`.

Every command takes the gallery file first, prints tables (or one JSON object with ``--json``) and turns
user mistakes into ``error: ...`` with exit status 2. This module holds the commands on classes (create,
enrol, identify, verify, forget, rename, list); :mod:`oneshot.gallery.cli_admin` those on the decision rules
and the file (calibrate, threshold, adapt, export, import, reembed); their option types are in
:mod:`oneshot.gallery.cli_options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from oneshot.cli_common import Json, check_range, command, echo_json
from oneshot.errors import OneshotError
from oneshot.gallery.cli_admin import admin
from oneshot.gallery.cli_options import (
    ApproxAbove,
    Augment,
    ClassFolder,
    CsvOpt,
    Description,
    EncoderOpt,
    FromFile,
    GalleryPath,
    IndexKind,
    LabelColumn,
    NewEncoder,
    RuleOpt,
    SaltsOpt,
    ScoreOpt,
    SmilesColumn,
    SmilesOpt,
    StoreMode,
    TextOpt,
    open_gallery,
)

app = typer.Typer(
    no_args_is_help=True,
    help="A persistent gallery: enrol classes from one example, identify, verify.",
    pretty_exceptions_enable=False,
)


def _molecules(
    g, smiles: Optional[list[str]], csv_path: Optional[Path], column: str, label_column: Optional[str], salts: str
) -> list[tuple[Any, str, Optional[str]]]:
    """--smiles values and --csv rows as (Inline example, where, label); every one checked before anything is stored."""
    from oneshot.modalities import Inline
    from oneshot.modalities.molecule.smiles import SALT_POLICIES

    if salts not in SALT_POLICIES:
        raise OneshotError(f"unknown --salts {salts!r}: choose one of {', '.join(SALT_POLICIES)}")
    rows: list[tuple[str, str, Optional[str]]] = [(v, f"--smiles {v[:40]!r}", None) for v in smiles or []]
    if csv_path is not None:
        from oneshot.data.molecules import read_smiles_column

        rows += read_smiles_column(csv_path, column, label_column)
    enc = g.encoder
    if hasattr(enc, "salts"):
        enc.salts = salts
    out = []
    for value, where, label in rows:
        example = Inline(value, "molecule")
        try:
            enc.read(example)
        except OneshotError as exc:
            raise OneshotError(f"{where}: {exc}; nothing was stored") from None
        out.append((example, where, label))
    return out


@command(app)
def create(
    gallery: GalleryPath,
    encoder: NewEncoder,
    store: StoreMode = "inputs",
    approx_above: ApproxAbove = None,
    index: IndexKind = None,
    rule: RuleOpt = None,
    score: ScoreOpt = None,
    as_json: Json = False,
) -> None:
    """Create an empty gallery bound to an encoder checkpoint."""
    from oneshot.gallery import Gallery

    if gallery.exists():
        raise OneshotError(f"{gallery} already exists: use it, or choose another path")
    if score == "snorm":
        raise OneshotError(
            f"a new gallery has no cohort for snorm yet: create it without --score, store one with `oneshot gallery "
            f"cohort {gallery} FOLDER`, then `oneshot gallery score {gallery} snorm`"
        )
    try:
        with Gallery.open(gallery, encoder=encoder, store=store, approx_above=approx_above, approx_kind=index) as g:
            if rule is not None:
                g.set_identify_rule(rule)
            if score is not None:
                g.set_rejection_score(score)
            info = g.info()
    except BaseException:
        for leftover in (gallery, Path(f"{gallery}.faiss"), Path(f"{gallery}-wal"), Path(f"{gallery}-shm")):
            leftover.unlink(missing_ok=True)  # a failed create leaves nothing behind
        raise
    if as_json:
        echo_json(info)
    else:
        typer.echo(
            f"created {gallery}: encoder {info['encoder']} ({info['dim']}-d embeddings), stores {store}, "
            f"identify rule {info['identify_rule']}, rejection score {info['rejection_score']}"
        )


@command(app)
def enrol(
    gallery: GalleryPath,
    label: Annotated[Optional[str], typer.Argument(help="Class label (omit with --folder).")] = None,
    files: Annotated[Optional[list[Path]], typer.Argument(help="One or more example files of the class.")] = None,
    folder: ClassFolder = None,
    text: TextOpt = None,
    description: Description = None,
    from_file: FromFile = None,
    smiles: SmilesOpt = None,
    csv: CsvOpt = None,
    smiles_column: SmilesColumn = "smiles",
    label_column: LabelColumn = None,
    salts: SaltsOpt = "largest",
    augment: Augment = None,
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Enrol a class from one or more examples (an existing label is refined), with a quality report."""
    from oneshot.data.folder import list_class_folders

    if smiles or csv is not None:
        if folder is not None or files:
            raise OneshotError("give molecules (--smiles/--csv) or files, not both")
        if label is None and label_column is None:
            raise OneshotError("give a LABEL for the molecules, or --label-column with --csv")
        with open_gallery(gallery, encoder) as g:
            mols = _molecules(g, smiles, csv, smiles_column, label_column, salts)
            groups: dict[str, list] = {}
            for example, where, lab in mols:
                lab = lab if label_column else label
                if not lab:
                    raise OneshotError(f"{where} has an empty label: fill in the {label_column} column; nothing was stored")
                groups.setdefault(lab, []).append(example)
            reports = [r.to_dict() for r in g.enrol_batch([(lab, exs, None) for lab, exs in groups.items()])]
        _print_enrolments(gallery, reports, as_json)
        return
    metas: list = []
    if text or description is not None or from_file is not None:
        from oneshot.modalities.text.enrol import text_jobs

        if folder is not None:
            raise OneshotError("give either --folder or text examples, not both")
        tj = text_jobs(label, text, description, from_file)
        jobs = [(lab, ex) for lab, ex, _ in tj] + ([(label, list(files))] if files else [])  # type: ignore[list-item]
        metas = [m for _, _, m in tj]
    elif folder is not None:
        if label is not None:
            raise OneshotError("give either LABEL FILES... or --folder, not both")
        jobs = list(list_class_folders(folder).items())
    else:
        if not label or not files:
            raise OneshotError("give a LABEL and at least one example file (or --folder with one sub-folder per class)")
        jobs = [(label, files)]
    with open_gallery(gallery, encoder) as g:  # every class read and checked first, then one transaction
        batch = [(lab, list(fs), metas[i] if i < len(metas) else None) for i, (lab, fs) in enumerate(jobs)]
        reports = [r.to_dict() for r in g.enrol_batch(batch, augment=augment)]
    _print_enrolments(gallery, reports, as_json)


def _print_enrolments(gallery: Path, reports: list[dict], as_json: bool) -> None:
    if as_json:
        echo_json({"gallery": str(gallery), "enrolments": reports})
        return
    for r in reports:
        what = "enrolled" if r["created"] else "refined"
        typer.echo(f"{what} {r['label']!r}: +{r['examples_added']} example(s), {r['n_examples']} in total")
        for w in r["warnings"]:
            typer.echo(f"  warning: {w}")
        for n in r["notes"]:
            typer.echo(f"  note: {n}")


@command(app)
def identify(
    gallery: GalleryPath,
    queries: Annotated[Optional[list[Path]], typer.Argument(help="Query files.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many candidate classes to show (>= 1).")] = 3,
    text: TextOpt = None,
    smiles: SmilesOpt = None,
    csv: CsvOpt = None,
    smiles_column: SmilesColumn = "smiles",
    salts: SaltsOpt = "largest",
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Top-k classes for each query, or "unknown" when the best score is below the gallery's threshold (by the
    gallery's identify rule, `oneshot gallery rule`; scores are cosines to the classes' templates, or for a text
    gallery rejecting on mean_distance, `oneshot gallery score`, minus squared distances to the class means)."""
    check_range("k", k, 1)
    items: list = list(queries or [])
    if text:
        from oneshot.modalities.text.enrol import text_queries

        items += text_queries(text)
    with open_gallery(gallery, encoder) as g:
        if smiles or csv is not None:
            mols = _molecules(g, smiles, csv, smiles_column, None, salts)
            items += [m[0] for m in mols]
        if not items:
            raise OneshotError(
                'give at least one query: files, --text "..." (text galleries) or --smiles / --csv (molecule galleries)'
            )
        res = g.identify(items, k=k)
    rows = [dict(r.to_dict(), query=getattr(q, "value", str(q))) for q, r in zip(items, res, strict=False)]
    if as_json:
        echo_json({"gallery": str(gallery), "results": rows})
        return
    th = res[0].threshold if res else None
    table = Table(title=f"identify (threshold {th:.3f})" if th is not None else "identify (no threshold: run calibrate)")
    kind = res[0].score_kind if res else None
    for col in ("query", "class", f"score ({kind})" if kind else "score", "candidates"):
        table.add_column(col)
    for r in rows:
        cands = ", ".join(f"{c['label']} {c['score']:.3f}" for c in r["candidates"])
        table.add_row(r["query"], r["label"], f"{r['score']:.3f}", cands)
    Console().print(table)


@command(app)
def verify(
    gallery: GalleryPath,
    query: Annotated[Path, typer.Argument(help="The query file.")],
    label: Annotated[str, typer.Option(help="The claimed class.")],
    confirm: Annotated[bool, typer.Option(help="The claim is confirmed: let an adapting class follow this example.")] = False,
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Accept or reject a query as a claimed class; exit status 1 when rejected."""
    with open_gallery(gallery, encoder) as g:
        res = g.verify(query, label, confirm=confirm)
    if as_json:
        echo_json(res.to_dict())
    else:
        verdict = "accept" if res.accepted else "reject"
        typer.echo(
            f"{verdict} {label!r}: score {res.score:.3f} vs threshold {res.threshold:.3f}"
            + (" (template adapted)" if res.adapted else "")
        )
    if not res.accepted:
        raise typer.Exit(1)


@command(app)
def forget(gallery: GalleryPath, label: Annotated[str, typer.Argument(help="The class to remove.")]) -> None:
    """Remove a class and its examples."""
    with open_gallery(gallery) as g:
        n = g.forget(label)
    typer.echo(f"forgot {label!r} ({n} examples)")


@command(app)
def rename(gallery: GalleryPath, old: Annotated[str, typer.Argument()], new: Annotated[str, typer.Argument()]) -> None:
    """Rename a class."""
    with open_gallery(gallery) as g:
        g.rename(old, new)
    typer.echo(f"renamed {old!r} to {new!r}")


@command(app, "list")
def list_classes(gallery: GalleryPath, as_json: Json = False) -> None:
    """The gallery's classes, encoder, thresholds and calibration."""
    from dataclasses import asdict

    with open_gallery(gallery) as g:
        info = g.info()
        classes = g.list()
    if as_json:
        echo_json(dict(info, class_list=[asdict(c) for c in classes]))
        return
    table = Table(
        title=f"{gallery}: {info['classes']} classes, {info['examples']} examples, encoder {info['encoder']}, {info['index']['kind']} index"
    )
    for col in ("label", "examples", "adaptation", "updated"):
        table.add_column(col)
    for c in classes:
        table.add_row(
            c.label, str(c.n_examples), f"rate {c.adapt_rate:g}, {c.adaptations} updates" if c.adapt_rate else "off", c.updated
        )
    Console().print(table)
    typer.echo(f"identify rule: {info['identify_rule']}, rejection score: {info['rejection_score']}")
    if info.get("cohort"):
        typer.echo(f"cohort: {info['cohort']['size']} examples, k = {info['cohort']['k']} ({info['cohort']['source']})")
    th, cal = info["threshold"], info["calibration"]
    if th:
        typer.echo(f"thresholds: identify {th['identify']}, verify {th['verify']} ({th['source']})")
    else:
        typer.echo("thresholds: none (run `oneshot gallery calibrate`)")
    if cal and th and th.get("source") == "calibrated":
        m = cal["measured"]
        typer.echo(
            f"calibrated for FAR {cal['target_far']:g}"
            + (f" with confidence {cal['confidence']:g}" if cal.get("confidence") else "")
            + f" on {cal['validation_classes']} validation classes "
            f"(gallery of {cal['gallery_size']}): identify FAR {m['identify_far']:.2e} TAR {m['identify_tar']:.3f}; "
            f"verify FAR {m['verify_far']:.2e} TAR {m['verify_tar']:.3f}"
            + (f"; strangers within {cal['families']['count']} families" if cal.get("families") else "")
            + (
                "; verify threshold from the gallery's own enrolments"
                if (cal.get("verify_source") or {}).get("source") == "enrolments"
                else ""
            )
        )
    if "warning" in info:
        typer.echo(f"warning: {info['warning']}")


app.registered_commands.extend(admin.registered_commands)  # calibrate ... reembed, listed after these
