"""What ``oneshot gallery enrol`` / ``identify`` turn text options into: (label, examples, metadata) jobs.

All texts are read and checked here, before the gallery is touched, so a bad row or an empty ``--text``
leaves the gallery unchanged.
"""

from __future__ import annotations

from pathlib import Path

from oneshot.errors import OneshotError
from oneshot.modalities.base import Inline
from oneshot.modalities.text.embedder import read_text_example
from oneshot.modalities.text.files import is_table, read_lines, read_table

#: One enrolment: label, its examples (``Inline`` texts), class metadata (the description, when given).
Job = tuple[str, list[Inline], dict | None]


def _inline(text: str) -> Inline:
    read_text_example(text)  # empty / whitespace-only / invalid text fails here
    return Inline(text.strip(), "text")


def text_jobs(label: str | None, texts: list[str] | None, description: str | None, from_file: Path | None) -> list[Job]:
    """Jobs for ``enrol [LABEL] [--text T]... [--description D] [--from-file F]``.

    A CSV / TSV / JSON lines ``--from-file`` enrols every label in it (no LABEL); any other file is one example
    per line for LABEL. The description is enrolled as one more example of the class (docs/text.md: the
    description is a prior that examples refine) and kept in the class metadata.
    """
    jobs: list[Job] = []
    if from_file is not None and is_table(from_file):
        if label is not None or texts or description:
            raise OneshotError(f"{from_file} names its own labels: give it alone, without LABEL, --text or --description")
        for lab, entry in read_table(from_file).items():
            ex = [_inline(t) for t in entry.examples]
            if entry.description:
                ex.append(_inline(entry.description))
            jobs.append((lab, ex, {"description": entry.description} if entry.description else None))
        return jobs
    if not label:
        raise OneshotError("give a LABEL for the --text / --description / --from-file examples")
    ex = [_inline(t) for t in (texts or [])]
    if from_file is not None:
        ex += [_inline(t) for t in read_lines(from_file)]
    if description is not None:
        ex.append(_inline(description))
    if not ex:
        raise OneshotError(f"label {label!r} has no example and no description: give --text and/or --description")
    return [(label, ex, {"description": description.strip()} if description else None)]


def text_queries(texts: list[str] | None) -> list[Inline]:
    """``--text`` query values as checked ``Inline`` texts."""
    return [_inline(t) for t in (texts or [])]
