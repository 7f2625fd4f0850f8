"""``oneshot gallery calibrate | threshold | rule | score | cohort | adapt | export | check | import | reembed``: the commands on a gallery's
decision rules and on the file as a whole (the commands on classes are in :mod:`oneshot.gallery.cli`, which
lists these after its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from oneshot.cli_common import Json, check_range, command, echo_json
from oneshot.errors import OneshotError
from oneshot.gallery.cli_options import (
    ENCODER_HELP,
    SCORE_HELP,
    EncoderOpt,
    GalleryPath,
    IdentifyCosine,
    VerifyCosine,
    open_gallery,
)

#: The commands of this module; :mod:`oneshot.gallery.cli` adds them to ``oneshot gallery``.
admin = typer.Typer()


@command(admin)
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
    shots: Annotated[
        Optional[int],
        typer.Option(help="Examples averaged into each simulated template (>= 1; default: the gallery's median per class)."),
    ] = None,
    families: Annotated[
        bool,
        typer.Option(
            help="Strangers are siblings: draw impostors and strangers within families (--folder: one sub-folder per "
            "family, each with one per class; --omniglot: alphabets). For galleries enrolled from one family."
        ),
    ] = False,
    verify_from: Annotated[
        str,
        typer.Option(
            help="Where the verify threshold comes from: validation (the classes given), or enrolments (the gallery's "
            "own classes scored against each other: strangers like the enrolled; needs about 100+ classes at 1e-2)."
        ),
    ] = "validation",
    confidence: Annotated[
        Optional[float],
        typer.Option(
            help="Keep each false-accept rate at most --far with this confidence (e.g. 0.95; a Clopper-Pearson bound "
            "on the measured comparisons), not only on the comparisons measured: stricter, fewer true accepts."
        ),
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset folder for --omniglot (else $ONESHOT_DATA).")] = None,
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Measure genuine and impostor scores on validation classes; set thresholds for a target false-accept rate."""
    check_range("far", far, 0, 1, low_open=True, high_open=True)
    check_range("shots", shots, 1)
    check_range("gallery_size", gallery_size, 1)
    check_range("trials", trials, 1, 100000)
    check_range("confidence", confidence, 0.5, 1, high_open=True)
    with open_gallery(gallery, encoder) as g:
        if (folder is None) == (omniglot is None):
            raise OneshotError("give exactly one of --folder DIR or --omniglot lake-val")
        if folder is not None:
            rec = g.calibrate_folder(
                folder,
                families=families,
                target_far=far,
                gallery_size=gallery_size,
                trials=trials,
                seed=seed,
                shots=shots,
                verify_from=verify_from,
                confidence=confidence,
            )
        else:
            if omniglot != "lake-val":
                raise OneshotError(f"unknown --omniglot {omniglot!r}: use lake-val")
            import numpy as np

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
                source="omniglot lake val" + (", within alphabets" if families else ""),
                domain="omniglot",
                shots=shots,
                groups=np.array([n.split("/")[0] for n in val.class_names])[val.labels.numpy()] if families else None,
                verify_from=verify_from,
                confidence=confidence,
            )
    if as_json:
        echo_json(rec)
        return
    m = rec["measured"]
    typer.echo(
        f"target false-accept rate {far:g} on {rec['validation_classes']} validation classes "
        f"({rec['validation_examples']} examples), gallery of {rec['gallery_size']} classes, "
        f"templates of {rec.get('shots', 1)} example{'s' if rec.get('shots', 1) != 1 else ''}:"
    )
    typer.echo(
        f"  identify threshold {rec['identify_threshold']:.4f} ({rec['identify_method']}): measured FAR {m['identify_far']:.2e}, "
        f"TAR {m['identify_tar']:.4f}, closed-set accuracy {m['closed_set_accuracy']:.4f}"
    )
    typer.echo(f"  (the identify threshold is on {rec.get('identify_score', 'template_cosine')})")
    own = rec["verify_source"] if rec["verify_source"]["source"] == "enrolments" else None
    typer.echo(
        f"  verify threshold {rec['verify_threshold']:.4f}"
        + (f" (from the gallery's {own['comparisons']} impostor comparisons: FAR {own['measured_far']:.2e})" if own else "")
        + f": measured on validation FAR {m['verify_far']:.2e}, TAR {m['verify_tar']:.4f}"
    )
    if rec.get("families"):
        typer.echo(
            f"  (strangers drawn within {rec['families']['count']} families, simulated in {rec['families']['simulated_in']})"
        )
    if rec.get("confidence") is not None:
        typer.echo(f"  (both thresholds keep their rate at most {far:g} with confidence {rec['confidence']:g})")
    for n in rec["notes"]:
        typer.echo(f"  note: {n}")


@command(admin)
def threshold(gallery: GalleryPath, identify: IdentifyCosine = None, verify: VerifyCosine = None) -> None:
    """Set thresholds by hand (recorded as manual); prefer `calibrate`."""
    check_range("verify", verify, -1, 1)
    if identify is None and verify is None:
        raise OneshotError("give --identify and/or --verify")
    with open_gallery(gallery) as g:  # the identify threshold's range is its score's: the gallery checks it
        g.set_threshold(identify=identify, verify=verify)
        t, score = g.thresholds(), g.rejection_score
    typer.echo(f"thresholds: identify {t['identify']} ({score}), verify {t['verify']} (manual)")


@command(admin)
def rule(
    gallery: GalleryPath,
    name: Annotated[
        Optional[str],
        typer.Argument(
            help="classifier (text galleries) or nearest_template; omit to show the current rule.", show_default=False
        ),
    ] = None,
) -> None:
    """Show or set how identify answers: the few-shot intent classifier (text) or the nearest template."""
    with open_gallery(gallery) as g:
        if name is not None:
            g.set_identify_rule(name)
        current = g.identify_rule
    typer.echo(f"identify rule of {gallery}: {current}")


@command(admin)
def score(
    gallery: GalleryPath,
    name: Annotated[
        Optional[str],
        typer.Argument(help=f"{SCORE_HELP}; omit to show the current score.", show_default=False),
    ] = None,
) -> None:
    """Show or set the score identify's threshold is compared with; switching clears a threshold set on the other."""
    import warnings

    with open_gallery(gallery) as g:
        if name is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                said = g.set_rejection_score(name)
            if said:
                typer.echo(f"warning: {said}", err=True)
            if name == "snorm":
                typer.echo(
                    "note: snorm thresholds hold for strangers as varied as the validation classes, not for siblings of "
                    "the enrolled classes (docs/gallery.md); calibrate again now",
                    err=True,
                )
        current = g.rejection_score
    typer.echo(f"rejection score of {gallery}: {current}")


def _cohort_files(paths: list[Path]) -> list[Path]:
    """Files given, and every non-hidden file under folders given (recursively, sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts))
        elif p.is_file():
            out.append(p)
        else:
            raise OneshotError(f"{p} is neither a file nor a folder")
    return out


@command(admin)
def cohort(
    gallery: GalleryPath,
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Files, or folders of files (searched recursively), of classes that will never be enrolled."),
    ] = None,
    omniglot: Annotated[
        Optional[str],
        typer.Option(
            help="Use one drawing of each Omniglot background character instead: lake-background (the 761 Lake training characters)."
        ),
    ] = None,
    k: Annotated[
        Optional[int], typer.Option(help="Top cohort scores each side's statistics use (default 200, at most the cohort's size).")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset folder for --omniglot (else $ONESHOT_DATA).")] = None,
    encoder: EncoderOpt = None,
    as_json: Json = False,
) -> None:
    """Store the cohort the snorm rejection score normalises by (then `oneshot gallery score GALLERY snorm`, and
    calibrate); with snorm set, a new cohort clears the thresholds."""
    import warnings

    check_range("k", k, 1)
    with open_gallery(gallery, encoder) as g:
        if bool(paths) == (omniglot is not None):
            raise OneshotError("give either files / folders of cohort examples or --omniglot lake-background")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            if omniglot is not None:
                if omniglot != "lake-background":
                    raise OneshotError(f"unknown --omniglot {omniglot!r}: use lake-background")
                from oneshot.data import load_omniglot

                enc = g.encoder
                if not hasattr(enc, "embed_images"):
                    raise OneshotError("--omniglot needs an image checkpoint encoder")
                bg = load_omniglot("lake", "train", enc.preprocessing.size, data_dir)  # type: ignore[attr-defined]
                first = [int(m[0]) for m in bg.class_indices]
                vectors = enc.embed_images(bg.images.numpy()[first])  # type: ignore[attr-defined]
                info = g.set_cohort(vectors, k=k, source="omniglot lake background, first drawing of each character")
            else:
                files = _cohort_files(list(paths or []))
                info = g.set_cohort(files, k=k, source=", ".join(str(p) for p in paths or []))
    for w in said:
        typer.echo(f"warning: {w.message}", err=True)
    if as_json:
        echo_json(info)
        return
    typer.echo(f"cohort of {gallery}: {info['size']} examples, k = {info['k']} ({info['source']})")


@command(admin)
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
    with open_gallery(gallery) as g:
        g.set_adaptation(label, rate, min_score=min_score, max_drift=max_drift)
    typer.echo(f"adaptation of {label!r}: " + (f"rate {rate:g}" if rate else "off"))


@command(admin)
def export(gallery: GalleryPath, out: Annotated[Path, typer.Argument(help="New file for the copy.")]) -> None:
    """Write a consistent copy of the gallery (itself a gallery file)."""
    with open_gallery(gallery) as g:
        g.export(out)
    typer.echo(f"exported {gallery} to {out}")


@command(admin)
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


@command(admin, "import")
def import_(
    gallery: GalleryPath,
    source: Annotated[Path, typer.Argument(help="A gallery (or export) with the same encoder.")],
    on_conflict: Annotated[str, typer.Option(help="For labels in both: error, skip or merge.")] = "error",
) -> None:
    """Add another gallery's classes (same encoder fingerprint), all or nothing."""
    with open_gallery(gallery) as g:
        n = g.import_from(source, on_conflict=on_conflict)
    typer.echo(f"imported {n} classes from {source}")


@command(admin)
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
