"""Many labelled texts from one file: one example per line, a CSV, or JSON lines.

- ``.csv`` (or ``.tsv``): a header row with a ``label`` column and a ``text`` column (``description`` optional);
- ``.jsonl``: one object per line with ``label`` and ``text`` (and/or ``description``) keys;
- anything else: one example per line, all of one class (the caller gives its label).

Every problem is a one-line :class:`OneshotError` naming the file, the line and what to do: invalid UTF-8, a
missing column, a row with neither text nor description, an empty file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from oneshot.errors import OneshotError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")


@dataclass
class LabelledTexts:
    """One class read from a file: its examples and (optionally) its description."""

    examples: list[str] = field(default_factory=list)
    description: str | None = None


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OneshotError(f"{path} does not exist: check the path") from None
    except IsADirectoryError:
        raise OneshotError(f"{path} is a folder: give a text, CSV or JSON lines file") from None
    try:
        return data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise OneshotError(f"{path} is not valid UTF-8 (line {line}, byte {exc.start}): save it as UTF-8") from None


def is_table(path: Path) -> bool:
    """True for files read as label/text tables (by suffix)."""
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 file, stripped; an error when there are none."""
    lines = [ln.strip() for ln in _read_utf8(path).splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise OneshotError(f"{path} holds no text (every line is empty): give one example per line")
    return lines


def read_table(path: Path) -> dict[str, LabelledTexts]:
    """label -> its examples and description, from a CSV/TSV (header ``label,text[,description]``) or JSON lines."""
    path = Path(path)
    text = _read_utf8(path)
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OneshotError(f"{path} line {n} is not JSON ({exc.msg}): write one JSON object per line") from None
            if not isinstance(obj, dict):
                raise OneshotError(f'{path} line {n} is not a JSON object: write {{"label": ..., "text": ...}} per line')
            rows.append((n, obj))
    else:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in ("label",) if c not in cols] + ([] if {"text", "description"} & set(cols) else ["text"])
        if missing:
            raise OneshotError(
                f"{path} has no {' or '.join(repr(m) for m in missing)} column (columns: {', '.join(cols) or 'none'}): "
                "give a header row with label and text (description optional)"
            )
        for n, row in enumerate(reader, 2):
            rows.append((n, {(k or "").strip().lower(): v for k, v in row.items()}))
    if not rows:
        raise OneshotError(f"{path} holds no rows: give at least one label with a text or description")
    out: dict[str, LabelledTexts] = {}
    for n, row in rows:
        label = str(row.get("label") or "").strip()
        if "label" not in row:
            raise OneshotError(f"{path} line {n} has no 'label': every row needs a label and a text or description")
        if not label:
            raise OneshotError(f"{path} line {n} has an empty label: give every row a label")
        txt = str(row.get("text") or "").strip()
        desc = str(row.get("description") or "").strip()
        entry = out.setdefault(label, LabelledTexts())
        if txt:
            entry.examples.append(txt)
        if desc:
            if entry.description and entry.description != desc:
                raise OneshotError(f"{path} line {n} gives {label!r} a second, different description: keep one per label")
            entry.description = desc
    empty = [lab for lab, e in out.items() if not e.examples and not e.description]
    if empty:
        raise OneshotError(f"{path}: label {empty[0]!r} has no example and no description: give it a text or a description")
    return out
