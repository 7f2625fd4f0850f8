"""The option and argument types of ``oneshot gallery ...`` (defined once, shared by :mod:`oneshot.gallery.cli`
and :mod:`oneshot.gallery.cli_admin`), and opening the gallery a command names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from oneshot.gallery import Gallery

GalleryPath = Annotated[Path, typer.Argument(help="The gallery file (SQLite).")]
ENCODER_HELP = "A built-in encoder name, a checkpoint file (.safetensors) or a model folder"
EncoderOpt = Annotated[
    Optional[str], typer.Option("--encoder", help=f"{ENCODER_HELP}; default: the one the gallery was created with.")
]
TextOpt = Annotated[Optional[list[str]], typer.Option("--text", help="Text gallery: the text itself (repeat for several).")]
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

# `create`
NewEncoder = Annotated[str, typer.Option("--encoder", help=f"{ENCODER_HELP} the gallery will use.")]
StoreMode = Annotated[str, typer.Option(help="What to keep of each example: inputs (bytes, for reembed), paths, or none.")]
ApproxAbove = Annotated[Optional[int], typer.Option(help="Search approximately above this many classes, in [0, 2147483648].")]
IndexKind = Annotated[
    Optional[str],
    typer.Option(
        help="Approximate index kind: hnsw (default), hnsw_sq8, ivf_flat, ivf_sq8 (least memory at 1e6 with recall@1 >= 0.99, docs/gallery.md), ivf_pq."
    ),
]
RuleOpt = Annotated[
    Optional[str],
    typer.Option(
        "--rule",
        help="How identify answers: classifier (text only: the few-shot intent classifier fitted on the enrolled "
        "examples, docs/text.md) or nearest_template; default: classifier for text galleries, else nearest_template.",
    ),
]
SCORE_HELP = (
    "What the identify threshold is compared with: template_cosine (the cosine to the first candidate's template) "
    "or mean_distance (text only: minus the squared distance to the nearest class mean, in [-4, 0], docs/text.md) "
    "or snorm (S-norm of the cosine against the gallery's cohort, `oneshot gallery cohort`; verify uses it too)"
)
ScoreOpt = Annotated[Optional[str], typer.Option("--score", help=f"{SCORE_HELP}; default: template_cosine.")]

# `enrol`
ClassFolder = Annotated[Optional[Path], typer.Option(help="Enrol every sub-folder of this folder as a class named after it.")]
Description = Annotated[Optional[str], typer.Option(help="Text gallery: what the class means (enrolled as one more example).")]
FromFile = Annotated[
    Optional[Path],
    typer.Option(
        help="Text gallery: a CSV/TSV/JSON lines file (label, text[, description]) "
        "enrolling many classes, or a file with one example of LABEL per line."
    ),
]
LabelColumn = Annotated[Optional[str], typer.Option(help="The --csv column naming each row's class (else LABEL for all rows).")]
Augment = Annotated[
    Optional[int],
    typer.Option(
        min=0,
        max=100,
        help="Synthetic examples per example from the encoder's generator (0: none; default: on only where validation showed it helps, docs/images.md).",
    ),
]

# `threshold`
IdentifyCosine = Annotated[
    Optional[float],
    typer.Option(help="Identify threshold, on the gallery's rejection score (cosine, mean_distance in [-4, 0], or snorm)."),
]
VerifyCosine = Annotated[
    Optional[float], typer.Option(help="Verify threshold (cosine; S-norm when the gallery rejects on snorm).")
]


def open_gallery(path: Path, encoder: Optional[str] = None) -> Gallery:
    """The existing gallery at ``path`` (FAISS and the embedder are imported only now)."""
    from oneshot.gallery import Gallery

    return Gallery.open(path, encoder=encoder, create=False)
