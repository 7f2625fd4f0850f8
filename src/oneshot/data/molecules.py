"""MoleculeNet assay tables (Tox21, ClinTox) and SMILES CSVs, read with every row accounted for.

A table keeps blank labels as missing (NaN), never as inactive. A SMILES RDKit cannot parse is an error
naming its file and line, unless the caller asks to skip such rows -- then the skipped rows are returned in
:attr:`AssayTable.skipped` (file, line, SMILES) so that nothing disappears silently.

The few-shot Tox21 split (Altae-Tran et al., "Low Data Drug Discovery with One-Shot Learning", ACS Cent.
Sci. 2017, and the meta-learning papers after it): train on the first nine assays, test on SR-HSE, SR-MMP,
SR-p53.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.data.paths import candidate_roots
from oneshot.errors import OneshotError

TOX21_TASKS = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
    "SR-HSE",
    "SR-MMP",
    "SR-p53",
)
TOX21_TRAIN = TOX21_TASKS[:9]
TOX21_TEST = ("SR-HSE", "SR-MMP", "SR-p53")
CLINTOX_TASKS = ("FDA_APPROVED", "CT_TOX")
#: Where the MoleculeNet CSVs come from (gzipped there; put the unzipped CSV in ``<data>/molecules/``).
SOURCES = {
    "tox21.csv": "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/tox21.csv.gz",
    "clintox.csv": "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/clintox.csv.gz",
}
#: Structure a local copy must have (validated; the CSVs here are not byte copies of the gzipped originals).
EXPECTED_ROWS = {"tox21.csv": 7831, "clintox.csv": 1478}


@dataclass
class AssayTable:
    """Molecules and their labels on several assays.

    Attributes:
        smiles: (N,) SMILES as written in the file.
        labels: float32 (N, T): 1 active, 0 inactive, NaN not measured.
        tasks: the T assay names.
        source: the file read.
        lines: (N,) the file line of each molecule (header is line 1).
        skipped: (file, line, SMILES) of rows left out because RDKit cannot parse them.
        mols: RDKit molecules (largest fragment), parallel to ``smiles``.
    """

    smiles: list[str]
    labels: np.ndarray
    tasks: tuple[str, ...]
    source: str
    lines: np.ndarray
    skipped: list[tuple[str, int, str]] = field(default_factory=list)
    mols: list[Any] = field(default_factory=list, repr=False)

    def task(self, name: str) -> int:
        if name not in self.tasks:
            raise OneshotError(f"{self.source} has no assay {name!r}: choose one of {', '.join(self.tasks)}")
        return self.tasks.index(name)

    def labelled(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a label on assay ``name`` and their 0/1 labels: int64 (M,), int64 (M,)."""
        col = self.labels[:, self.task(name)]
        rows = np.flatnonzero(~np.isnan(col))
        return rows, col[rows].astype(np.int64)


def find_molecule_file(name: str, data_dir: str | Path | None = None) -> Path:
    """``<root>/molecules/<name>`` in the first data root holding it, else an error saying where to put it."""
    for root in candidate_roots(data_dir):
        p = root / "molecules" / name
        if p.is_file():
            return p
    roots = ", ".join(str(r / "molecules") for r in candidate_roots(data_dir))
    raise OneshotError(
        f"{name} not found in {roots}: download {SOURCES.get(name, name)}, unzip it into one of them "
        "(or set ONESHOT_DATA / --data-dir)"
    )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OneshotError(f"{path} is not a UTF-8 CSV file") from None
    except OSError as exc:
        raise OneshotError(f"cannot read {path} ({exc.strerror})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise OneshotError(f"{path} is empty: give a CSV with a header row")
    return [h.strip() for h in rows[0]], rows[1:]


def parse_all(
    smiles: list[str], where: list[str], on_invalid: str = "error", salts: str = "largest"
) -> tuple[list[Any], list[int]]:
    """Parse SMILES; returns (molecules, indices of the invalid ones). ``on_invalid``: error or skip."""
    from oneshot.modalities.molecule.smiles import parse_smiles

    mols, bad = [], []
    for i, (s, w) in enumerate(zip(smiles, where, strict=True)):
        try:
            mols.append(parse_smiles(s, w, salts))
        except OneshotError:
            if on_invalid == "error":
                raise
            bad.append(i)
    return mols, bad


def read_assay_csv(
    path: str | Path,
    tasks: tuple[str, ...] | None = None,
    smiles_column: str = "smiles",
    on_invalid: str = "error",
    expected_rows: int | None = None,
) -> AssayTable:
    """A CSV with a SMILES column and 0/1/blank assay columns -> :class:`AssayTable` (molecules parsed)."""
    path = Path(path)
    header, rows = _read_rows(path)
    if smiles_column not in header:
        raise OneshotError(f"{path} has no column {smiles_column!r} (columns: {', '.join(header)}): name the SMILES column")
    tasks = tuple(tasks) if tasks is not None else tuple(h for h in header if h != smiles_column)
    missing = [t for t in tasks if t not in header]
    if missing:
        raise OneshotError(f"{path} lacks assay column(s) {', '.join(missing)}: is it the right file?")
    if expected_rows is not None and len(rows) != expected_rows:
        raise OneshotError(f"{path} has {len(rows)} rows, expected {expected_rows}: the file is truncated or another version")
    si = header.index(smiles_column)
    ti = [header.index(t) for t in tasks]
    labels = np.full((len(rows), len(tasks)), np.nan, np.float32)
    smiles = []
    for r, row in enumerate(rows):
        line = r + 2
        if len(row) != len(header):
            raise OneshotError(f"{path} line {line} has {len(row)} fields, the header {len(header)}: fix the row")
        smiles.append(row[si])
        for j, c in enumerate(ti):
            v = row[c].strip()
            if v == "":
                continue
            try:
                f = float(v)
            except ValueError:
                f = -1.0
            if f not in (0.0, 1.0):
                raise OneshotError(f"{path} line {line}, column {tasks[j]}: label {v!r} is not 0, 1 or blank")
            labels[r, j] = f
    lines = np.arange(2, len(rows) + 2)
    mols, bad = parse_all(smiles, [f"{path} line {n}" for n in lines], on_invalid)
    skipped = [(str(path), int(lines[i]), smiles[i]) for i in bad]
    keep = np.setdiff1d(np.arange(len(rows)), np.array(bad, dtype=np.int64))
    return AssayTable([smiles[i] for i in keep], labels[keep], tasks, str(path), lines[keep], skipped, mols)


def load_tox21(data_dir: str | Path | None = None, on_invalid: str = "error") -> AssayTable:
    """Tox21 (7831 molecules x 12 assays) from ``<data>/molecules/tox21.csv``."""
    return read_assay_csv(
        find_molecule_file("tox21.csv", data_dir), TOX21_TASKS, on_invalid=on_invalid, expected_rows=EXPECTED_ROWS["tox21.csv"]
    )


def load_clintox(data_dir: str | Path | None = None, on_invalid: str = "error") -> AssayTable:
    """ClinTox (1478 molecules: FDA_APPROVED, CT_TOX) from ``<data>/molecules/clintox.csv``."""
    return read_assay_csv(
        find_molecule_file("clintox.csv", data_dir),
        CLINTOX_TASKS,
        on_invalid=on_invalid,
        expected_rows=EXPECTED_ROWS["clintox.csv"],
    )


def read_smiles_column(
    path: str | Path, column: str = "smiles", label_column: str | None = None
) -> list[tuple[str, str, str | None]]:
    """A CSV of molecules for the CLI: (SMILES, "file line N", label or None) per row; every row kept."""
    path = Path(path)
    header, rows = _read_rows(path)
    for col in (column, label_column):
        if col is not None and col not in header:
            raise OneshotError(
                f"{path} has no column {col!r} (columns: {', '.join(header)}): name it with --smiles-column/--label-column"
            )
    si = header.index(column)
    li = header.index(label_column) if label_column else None
    out = []
    for r, row in enumerate(rows):
        if not row:
            continue
        if len(row) != len(header):
            raise OneshotError(f"{path} line {r + 2} has {len(row)} fields, the header {len(header)}: fix the row")
        out.append((row[si], f"{path} line {r + 2}", row[li].strip() if li is not None else None))
    if not out:
        raise OneshotError(f"{path} has a header but no rows")
    return out
