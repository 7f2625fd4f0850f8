"""Moving a gallery's contents: re-embedding every example with a new embedder, exporting a consistent copy,
importing another gallery's classes. Each is all or nothing (one transaction, or an atomic file)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery import cohort
from oneshot.gallery.class_store import ClassStore, ExampleRow
from oneshot.gallery.enrolment import Prepared, write_enrolments
from oneshot.gallery.examples import check_label, class_template
from oneshot.modalities import Embedder, check_vectors, fingerprint_id
from oneshot.modalities.base import read_file

CONFLICT_POLICIES = ("error", "skip", "merge")


def _embed_rows(enc: Embedder, rows: list[ExampleRow], batch: int) -> np.ndarray:
    """The new embeddings (N, D) of stored examples ``rows`` (their input bytes, else their file)."""
    out = np.zeros((len(rows), enc.dim), np.float32)
    for s in range(0, len(rows), batch):
        part = rows[s : s + batch]
        data = [r.input if r.input is not None else read_file(r.input_path).data for r in part]  # type: ignore[arg-type]
        names = [r.source or r.input_path or "<stored>" for r in part]
        out[s : s + len(part)] = check_vectors(enc.embed(data, names), enc.dim, "embedding")
    return out


def _check_inputs(rows: list[ExampleRow]) -> None:
    missing = [r for r in rows if r.input is None and r.input_path is None]
    if missing:
        raise OneshotError(
            f"{len(missing)} examples have neither a stored input nor a path (e.g. {missing[0].source!r}): "
            "they cannot be re-embedded; forget their classes or re-enrol them"
        )


def reembed(store: ClassStore, enc: Embedder, epoch: int, batch: int, now: str) -> int:
    """Re-embed every stored input (or path) with ``enc`` and rebuild every template, in one transaction;
    records the new fingerprint, dim and spec, clears the thresholds and the cohort, and bumps the epoch to ``epoch + 1``.
    Returns the number of examples re-embedded.

    Atomic with respect to concurrent writers: the bulk of the embedding runs outside the write lock (writers
    are not held up for minutes), then, holding the lock (``BEGIN IMMEDIATE``: other writers queue), the
    examples enrolled meanwhile are embedded too and every template is rebuilt from the examples present at
    commit -- so no example keeps the old encoder's embedding under the new fingerprint. Writers that
    embedded with the old encoder and commit after this are refused by :meth:`~oneshot.gallery.handle.GalleryHandle._write`."""
    with store.read():
        rows = store.all_examples()
    _check_inputs(rows)
    done = dict(zip((r.id for r in rows), _embed_rows(enc, rows, batch), strict=False))
    with store.write() as tx:
        current = store.all_examples()  # the examples as they are now, with the write lock held
        _check_inputs(current)
        late = [r for r in current if r.id not in done]
        if late:
            done.update(zip((r.id for r in late), _embed_rows(enc, late, batch), strict=False))
        new_vecs = np.stack([done[r.id] for r in current]) if current else np.zeros((0, enc.dim), np.float32)
        by_class: dict[int, list[int]] = {}
        for j, r in enumerate(current):
            by_class.setdefault(r.class_id, []).append(j)
        tx.replace_embeddings(
            [r.id for r in current], new_vecs, {cid: class_template(new_vecs[js]) for cid, js in by_class.items()}, now
        )
        tx.set_meta("fingerprint", enc.fingerprint)
        tx.set_meta("dim", enc.dim)
        tx.set_meta("encoder_path", enc.spec)
        tx.set_meta("threshold", None)
        if store.get_meta(cohort.INFO_KEY) is not None:
            cohort.clear_cohort(tx)  # embedded with the old encoder: set it again
        tx.set_meta("epoch", int(store.get_meta("epoch", epoch)) + 1)
    return len(current)


def export(store: ClassStore, dest: str | Path) -> Path:
    """Write a consistent copy of the gallery (a gallery file itself) to ``dest``, which must not exist."""
    dest = Path(dest)
    if dest.exists():
        raise OneshotError(f"{dest} already exists: choose a new file for the export")
    store.backup_to(dest, uuid.uuid4().hex)
    return dest


def import_classes(store: ClassStore, source: str | Path, fingerprint: dict, dim: int, on_conflict: str, now: str) -> int:
    """Add the classes of the gallery at ``source`` (same fingerprint) to ``store`` in one transaction.

    ``on_conflict`` for a label in both: ``error`` (nothing imported), ``skip`` or ``merge`` (add the imported
    examples to the existing class). Returns the number of classes imported or merged."""
    if on_conflict not in CONFLICT_POLICIES:
        raise OneshotError(f"unknown conflict policy {on_conflict!r}: choose error, skip or merge")
    source = Path(source)
    if source.exists() and source.resolve() == store.path.resolve():
        raise OneshotError(f"{source} is this gallery: importing a gallery into itself would double every class")
    src = ClassStore.open(source, migrate=False)  # only read: a schema-1 source is not rewritten
    try:
        if src.get_meta("gallery_id") is not None and src.get_meta("gallery_id") == store.get_meta("gallery_id"):
            raise OneshotError(
                f"{source} is this gallery (a copy of the same file): importing it would double "
                "every class; import an export instead"
            )
        fp = src.get_meta("fingerprint")
        if not isinstance(fp, dict) or fingerprint_id(fp) != fingerprint_id(fingerprint):
            raise OneshotError(
                f"{source} was built with another encoder than this gallery "
                f"({fingerprint_id(fingerprint)}): re-embed one of them first"
            )
        with src.read():
            items = [_checked_class(source, label, meta, ex, dim) for label, meta, ex in src.class_examples(dim)]
    finally:
        src.close()
    with store.write() as tx:
        existing = store.find_labels([it.label for it in items])
        if existing and on_conflict == "error":
            raise OneshotError(
                f"{len(existing)} labels exist in both galleries (e.g. {next(iter(existing))!r}): use --on-conflict skip or merge"
            )
        if on_conflict == "skip":
            items = [it for it in items if it.label not in existing]
        if items:
            write_enrolments(tx, items, dim, now)
    return len(items)


def _checked_class(source: Path, label: Any, meta: Any, examples: list[tuple], dim: int) -> Prepared:
    """One imported class validated as ``enrol`` validates it: label (NFC, no invisible characters), finite
    non-zero embeddings of the gallery's size (re-normalised), JSON-object metadata, bytes / text columns of
    the right types. Any failure is a :class:`OneshotError` naming the class; nothing has been written yet."""
    try:
        label = check_label(label)
    except OneshotError as exc:
        raise OneshotError(f"{source} holds a class label this gallery refuses ({exc}); nothing was imported") from None
    if not isinstance(meta, dict):
        raise OneshotError(f"class {label!r} of {source} has malformed metadata: nothing was imported; fix or forget it there")
    vecs = check_vectors(np.stack([e[0] for e in examples]), dim, f"class {label!r} of {source}")
    inputs, paths, sources = [], [], []
    for _, inp, path, src in examples:
        if (
            not (inp is None or isinstance(inp, bytes))
            or not (path is None or isinstance(path, str))
            or not (src is None or isinstance(src, str))
        ):
            raise OneshotError(f"class {label!r} of {source} has a damaged example row: nothing was imported")
        inputs.append(inp)
        paths.append(path)
        sources.append(src or "imported")
    return Prepared(label, vecs, inputs, paths, sources, meta or None)
