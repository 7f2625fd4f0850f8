"""``oneshot gallery ...``: the gallery's command line, a thin layer over :class:`oneshot.gallery.Gallery`.

Every command takes the gallery file first, prints tables (or one JSON object with ``--json``) and turns
user mistakes into ``error: ...`` with exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from oneshot.cli_common import Json, check_range, command, echo_json
from oneshot.errors import OneshotError

app = typer.Typer(
    no_args_is_help=True,
    help="A persistent gallery: enrol classes from one example, identify, verify.",
    pretty_exceptions_enable=False,
)

GalleryPath = Annotated[Path, typer.Argument(help="The gallery file (SQLite).")]
ENCODER_HELP = "A built-in encoder name, a checkpoint file (.safetensors) or a model folder"
EncoderOpt = Annotated[
    Optional[str], typer.Option("--encoder", help=f"{ENCODER_HELP}; default: the one the gallery was created with.")
]
TextOpt = Annotated[Optional[list[str]], typer.Option("--text", help="Text gallery: the text itself (repeat for several).")]


def Cosine(what: str) -> object:  # noqa: N802  (an option type, named like one)
    """An optional cosine-threshold option's type, its help naming ``what`` threshold it sets."""
    return Annotated[Optional[float], typer.Option(help=f"{what} threshold (cosine).")]


def _open(path: Path, encoder: Optional[str] = None):
    from oneshot.gallery import Gallery

    return Gallery.open(path, encoder=encoder, create=False)


SmilesOpt = Annotated[
    Optional[list[str]], typer.Option("--smiles", help="A molecule as SMILES (repeatable); for molecule galleries.")
]
CsvOpt = Annotated[
    Optional[Path], typer.Option("--csv", help="A CSV of molecules, one per row (see --smiles-column, --label-column).")
]
SmilesColumn = Annotated[str, typer.Option(help="The --csv column holding SMILES.")]
SaltsOpt = Annotated[
    str, typer.Option(help="Molecules of several fragments (salts): largest (keep the largest fragment) or refuse.")
]


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
    encoder: Annotated[str, typer.Option("--encoder", help=f"{ENCODER_HELP} the gallery will use.")],
    store: Annotated[
        str, typer.Option(help="What to keep of each example: inputs (bytes, for reembed), paths, or none.")
    ] = "inputs",
    approx_above: Annotated[
        Optional[int], typer.Option(help="Search approximately above this many classes, in [0, 2147483648].")
    ] = None,
    index: Annotated[
        Optional[str],
        typer.Option(
            help="Approximate index kind: hnsw (default), hnsw_sq8, ivf_flat, ivf_sq8 (least memory at 1e6 with recall@1 >= 0.99, docs/gallery.md), ivf_pq."
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Create an empty gallery bound to an encoder checkpoint."""
    from oneshot.gallery import Gallery

    if gallery.exists():
        raise OneshotError(f"{gallery} already exists: use it, or choose another path")
    try:
        with Gallery.open(gallery, encoder=encoder, store=store, approx_above=approx_above, approx_kind=index) as g:
            info = g.info()
    except BaseException:
        for leftover in (gallery, Path(f"{gallery}.faiss"), Path(f"{gallery}-wal"), Path(f"{gallery}-shm")):
            leftover.unlink(missing_ok=True)  # a failed create leaves nothing behind
        raise
    if as_json:
        echo_json(info)
    else:
        typer.echo(f"created {gallery}: encoder {info['encoder']} ({info['dim']}-d embeddings), stores {store}")


@command(app)
def enrol(
    gallery: GalleryPath,
    label: Annotated[Optional[str], typer.Argument(help="Class label (omit with --folder).")] = None,
    files: Annotated[Optional[list[Path]], typer.Argument(help="One or more example files of the class.")] = None,
    folder: Annotated[
        Optional[Path], typer.Option(help="Enrol every sub-folder of this folder as a class named after it.")
    ] = None,
    text: TextOpt = None,
    description: Annotated[
        Optional[str], typer.Option(help="Text gallery: what the class means (enrolled as one more example).")
    ] = None,
    from_file: Annotated[
        Optional[Path],
        typer.Option(
            help="Text gallery: a CSV/TSV/JSON lines file (label, text[, description]) "
            "enrolling many classes, or a file with one example of LABEL per line."
        ),
    ] = None,
    smiles: SmilesOpt = None,
    csv: CsvOpt = None,
    smiles_column: SmilesColumn = "smiles",
    label_column: Annotated[
        Optional[str], typer.Option(help="The --csv column naming each row's class (else LABEL for all rows).")
    ] = None,
    salts: SaltsOpt = "largest",
    augment: Annotated[
        Optional[int],
        typer.Option(
            min=0,
            max=100,
            help="Synthetic examples per example from the encoder's generator (0: none; default: on only where validation showed it helps, docs/images.md).",
        ),
    ] = None,
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
        with _open(gallery, encoder) as g:
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
    with _open(gallery, encoder) as g:  # every class read and checked first, then one transaction
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
    """Top-k classes for each query, or "unknown" when the best score is below the gallery's threshold."""
    check_range("k", k, 1)
    items: list = list(queries or [])
    if text:
        from oneshot.modalities.text.enrol import text_queries

        items += text_queries(text)
    with _open(gallery, encoder) as g:
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
    for col in ("query", "class", "score", "candidates"):
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
    with _open(gallery, encoder) as g:
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
    with _open(gallery) as g:
        n = g.forget(label)
    typer.echo(f"forgot {label!r} ({n} examples)")


@command(app)
def rename(gallery: GalleryPath, old: Annotated[str, typer.Argument()], new: Annotated[str, typer.Argument()]) -> None:
    """Rename a class."""
    with _open(gallery) as g:
        g.rename(old, new)
    typer.echo(f"renamed {old!r} to {new!r}")


@command(app, "list")
def list_classes(gallery: GalleryPath, as_json: Json = False) -> None:
    """The gallery's classes, encoder, thresholds and calibration."""
    from dataclasses import asdict

    with _open(gallery) as g:
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
    th, cal = info["threshold"], info["calibration"]
    if th:
        typer.echo(f"thresholds: identify {th['identify']}, verify {th['verify']} ({th['source']})")
    else:
        typer.echo("thresholds: none (run `oneshot gallery calibrate`)")
    if cal and th and th.get("source") == "calibrated":
        m = cal["measured"]
        typer.echo(
            f"calibrated for FAR {cal['target_far']:g} on {cal['validation_classes']} validation classes "
            f"(gallery of {cal['gallery_size']}): identify FAR {m['identify_far']:.2e} TAR {m['identify_tar']:.3f}; "
            f"verify FAR {m['verify_far']:.2e} TAR {m['verify_tar']:.3f}"
        )
    if "warning" in info:
        typer.echo(f"warning: {info['warning']}")


@command(app)
def calibrate(
    gallery: GalleryPath,
    folder: Annotated[
        Optional[Path], typer.Option(help="Validation classes: one sub-folder of examples per class, none of them enrolled.")
    ] = None,
    omniglot: Annotated[
        Optional[str],
        typer.Option(help="Use Omniglot validation classes instead: lake-val (the Lake split's validation alphabets)."),
    ] = None,
    far: Annotated[float, typer.Option(help="Target false-accept rate, in (0, 1).")] = 1e-3,
    gallery_size: Annotated[
        Optional[int], typer.Option(help="Gallery size the identify threshold is for (>= 1; default: the current size).")
    ] = None,
    trials: Annotated[int, typer.Option(help="Random gallery/stranger splits simulated, in [1, 100000].")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the simulated splits.")] = 0,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset folder for --omniglot (else $ONESHOT_DATA).")] = None,
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Measure genuine and impostor scores on validation classes; set thresholds for a target false-accept rate."""
    check_range("far", far, 0, 1, low_open=True, high_open=True)
    check_range("gallery_size", gallery_size, 1)
    check_range("trials", trials, 1, 100000)
    with _open(gallery, encoder) as g:
        if (folder is None) == (omniglot is None):
            raise OneshotError("give exactly one of --folder DIR or --omniglot lake-val")
        if folder is not None:
            rec = g.calibrate_folder(folder, target_far=far, gallery_size=gallery_size, trials=trials, seed=seed)
        else:
            if omniglot != "lake-val":
                raise OneshotError(f"unknown --omniglot {omniglot!r}: use lake-val")
            from oneshot.data import load_omniglot

            enc = g.encoder
            if not hasattr(enc, "embed_images"):
                raise OneshotError("--omniglot needs an image checkpoint encoder")
            if getattr(enc, "domain", "omniglot") != "omniglot":
                raise OneshotError(
                    f"the gallery's encoder was trained on {enc.domain}, not handwriting: an Omniglot "  # type: ignore[attr-defined]
                    "threshold would be meaningless; calibrate with --folder on validation classes of its domain"
                )
            val = load_omniglot("lake", "val", enc.preprocessing.size, data_dir)  # type: ignore[attr-defined]
            x = enc.embed_images(val.images.numpy())  # type: ignore[attr-defined]
            rec = g.calibrate(
                x,
                val.labels.numpy(),
                target_far=far,
                gallery_size=gallery_size,
                trials=trials,
                seed=seed,
                source="omniglot lake val",
                domain="omniglot",
            )
    if as_json:
        echo_json(rec)
        return
    m = rec["measured"]
    typer.echo(
        f"target false-accept rate {far:g} on {rec['validation_classes']} validation classes "
        f"({rec['validation_examples']} examples), gallery of {rec['gallery_size']} classes:"
    )
    typer.echo(
        f"  identify threshold {rec['identify_threshold']:.4f} ({rec['identify_method']}): measured FAR {m['identify_far']:.2e}, "
        f"TAR {m['identify_tar']:.4f}, closed-set accuracy {m['closed_set_accuracy']:.4f}"
    )
    typer.echo(f"  verify threshold {rec['verify_threshold']:.4f}: measured FAR {m['verify_far']:.2e}, TAR {m['verify_tar']:.4f}")
    for n in rec["notes"]:
        typer.echo(f"  note: {n}")


@command(app)
def threshold(gallery: GalleryPath, identify: Cosine("Identify") = None, verify: Cosine("Verify") = None) -> None:
    """Set thresholds by hand (recorded as manual); prefer `calibrate`."""
    check_range("identify", identify, -1, 1)
    check_range("verify", verify, -1, 1)
    if identify is None and verify is None:
        raise OneshotError("give --identify and/or --verify")
    with _open(gallery) as g:
        g.set_threshold(identify=identify, verify=verify)
        t = g.thresholds()
    typer.echo(f"thresholds: identify {t['identify']}, verify {t['verify']} (manual)")


@command(app)
def adapt(
    gallery: GalleryPath,
    label: Annotated[str, typer.Argument(help="The class.")],
    rate: Annotated[float, typer.Option(help="Rate in [0, 0.5]; 0 turns adaptation off.")],
    min_score: Annotated[
        Optional[float], typer.Option(help="Only confirmed matches scoring at least this adapt (cosine, in [-1, 1]).")
    ] = None,
    max_drift: Annotated[
        float, typer.Option(help="Keep at least this cosine to the enrolled examples' prototype, in [-1, 1].")
    ] = 0.8,
) -> None:
    """Turn template adaptation on or off for one class (off by default)."""
    check_range("rate", rate, 0, 0.5)
    check_range("min_score", min_score, -1, 1)
    check_range("max_drift", max_drift, -1, 1)
    with _open(gallery) as g:
        g.set_adaptation(label, rate, min_score=min_score, max_drift=max_drift)
    typer.echo(f"adaptation of {label!r}: " + (f"rate {rate:g}" if rate else "off"))


@command(app)
def export(gallery: GalleryPath, out: Annotated[Path, typer.Argument(help="New file for the copy.")]) -> None:
    """Write a consistent copy of the gallery (itself a gallery file)."""
    with _open(gallery) as g:
        g.export(out)
    typer.echo(f"exported {gallery} to {out}")


@command(app)
def check(gallery: GalleryPath, as_json: Json = False) -> None:
    """Verify the whole file: SQLite's integrity check and every row against its checksum."""
    from oneshot.gallery.integrity import check_file, problem, sound

    report = check_file(gallery)
    if as_json:
        echo_json(report)
    if problem(report):
        raise OneshotError(problem(report))  # type: ignore[arg-type]
    if not as_json:
        typer.echo(sound(report))


@command(app, "import")
def import_(
    gallery: GalleryPath,
    source: Annotated[Path, typer.Argument(help="A gallery (or export) with the same encoder.")],
    on_conflict: Annotated[str, typer.Option(help="For labels in both: error, skip or merge.")] = "error",
) -> None:
    """Add another gallery's classes (same encoder fingerprint), all or nothing."""
    with _open(gallery) as g:
        n = g.import_from(source, on_conflict=on_conflict)
    typer.echo(f"imported {n} classes from {source}")


@command(app)
def reembed(
    gallery: GalleryPath,
    encoder: Annotated[str, typer.Option("--encoder", help=f"The new encoder: {ENCODER_HELP}.")],
) -> None:
    """Rebuild every template with a new encoder from the stored examples; thresholds are cleared."""
    from oneshot.gallery import Gallery

    with Gallery.open(gallery, create=False) as g:
        n = g.reembed(encoder)
        fp = g.info()["encoder"]
    typer.echo(f"re-embedded {n} examples with encoder {fp}; run `oneshot gallery calibrate` again")
