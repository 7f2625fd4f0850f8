"""What a gallery stores -- its classes, their templates and examples, its meta and change log -- in one
SQLite file (WAL mode, every write one transaction). Every SQL statement of the gallery is in this module
or in :mod:`oneshot.gallery.store_file`.

The file itself -- its schema, the checks before opening, creation, backup -- is that module's job.

Writes happen only inside :meth:`ClassStore.write`, whose :class:`Transaction` is the one place that enforces
the rule "a write that changes a template appends to the change log in the same transaction": each write
method that changes or removes a template names the class, and the transaction appends the names on commit.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery import integrity, store_file
from oneshot.gallery.integrity import check_class, check_example, class_digest, example_digest

#: Ids per ``IN (...)`` query (below SQLite's bound on host parameters).
CHUNK = 500


def to_blob(v: np.ndarray) -> bytes:
    """float32 bytes of a (D,) vector."""
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def from_blob(b: bytes, dim: int) -> np.ndarray:
    """(D,) float32 vector from its blob; a wrong length means a damaged row."""
    if not isinstance(b, bytes):
        raise OneshotError(f"gallery row holds a {type(b).__name__} where a vector belongs: the gallery is damaged")
    v = np.frombuffer(b, dtype=np.float32)
    if v.shape != (dim,):
        raise OneshotError(f"gallery row holds a {v.size}-value vector, expected {dim}: the gallery is damaged")
    return v


def _json_or_none(text: Any) -> Any:
    """A JSON column's value, or None when it does not parse (the caller says what is damaged)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


@dataclass
class ClassRow:
    """One class as verification and adaptation need it: ``template`` is the float32 blob of a (D,) vector."""

    id: int
    n_examples: int
    template: bytes
    adapt_rate: float
    adapt_min_score: float | None
    metadata: dict[str, Any]


@dataclass
class ExampleRow:
    """One stored example as re-embedding needs it (``input`` bytes or ``input_path``, either may be None)."""

    id: int
    class_id: int
    input: bytes | None
    input_path: str | None
    source: str | None


class ClassStore:
    """The classes, templates, examples, meta and change log of one gallery file. Use :meth:`open` or
    :meth:`create`; read with the methods below (inside :meth:`read` for one consistent snapshot), write
    inside :meth:`write`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, writable: bool = True) -> None:
        self.path = path
        self.conn = conn
        #: False when the file could only be opened read-only (read-only file system, no permission).
        self.writable = writable
        #: True when rows carry digests (:mod:`~oneshot.gallery.integrity`); False only for an unmigrated
        #: schema-1 file opened read-only, whose rows are read unverified.
        self.sealed = integrity.columns(conn)
        self._dg = "digest" if self.sealed else "NULL"
        #: True when meta rows carry digests (schema 3); False only for an older file opened read-only.
        self.meta_sealed = integrity.meta_sealed(conn)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, migrate: bool = True) -> ClassStore:
        """Open an existing gallery once checked, read-only, as usable (``migrate``: see ``open_checked``)."""
        return cls(Path(path), *store_file.open_checked(Path(path), migrate))

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any]) -> ClassStore:
        """Create a new gallery file holding ``meta`` (see :func:`~oneshot.gallery.store_file.create_file`)."""
        store_file.create_file(Path(path), meta)
        return cls.open(path)

    def close(self) -> None:
        self.conn.close()

    def backup_to(self, dest: Path, gallery_id: str) -> None:
        """Write a consistent copy of the whole file to ``dest``, atomically, under a new ``gallery_id``."""
        store_file.backup(self.conn, dest, gallery_id)

    # ---------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def write(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, readers are never blocked); the change
        log entries of the template writes made in it are appended just before it commits."""
        if not self.writable:
            raise OneshotError(
                f"gallery {self.path} is on a read-only file system or not writable by you: reads work, "
                "writes need a writable copy (`oneshot gallery export`); nothing was written"
            )
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise store_file.write_error(self.path, exc) from None
        tx = Transaction(self)
        try:
            yield tx
            tx.log_changes()
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise store_file.write_error(self.path, exc) from None
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[ClassStore]:
        """One consistent snapshot for several reads; damage SQLite finds on the way (a malformed page, an
        undecodable cell) becomes a one-line :class:`OneshotError`."""
        try:
            self.conn.execute("BEGIN")
            try:
                yield self
            finally:
                self.conn.execute("COMMIT")
        except (UnicodeDecodeError, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise OneshotError(
                f"gallery {self.path} is damaged ({' '.join(str(exc).split())[:120]}): restore it from an export"
            ) from None

    # ---------------------------------------------------------------- meta and counts
    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (checked against its digest), or ``default`` when there is none."""
        return next(iter(self._meta("WHERE key = ?", (key,)).values()), default)

    def all_meta(self) -> dict[str, Any]:
        """Every meta key and its value, each checked against its digest."""
        return self._meta("", ())

    def _meta(self, where: str, args: tuple) -> dict[str, Any]:
        sql = f"SELECT key, value, {'digest' if self.meta_sealed else 'NULL'} FROM meta {where}"
        return {r[0]: integrity.meta_value(self.path, self.meta_sealed, *r) for r in self.conn.execute(sql, args)}

    def generation(self) -> int:
        """The gallery's generation: the last change-log sequence number (0 when empty)."""
        row = self.conn.execute("SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def changed_since(self, generation: int, upto: int) -> np.ndarray:
        """Ids (N,) of the classes named in the change log after ``generation`` up to ``upto``."""
        rows = self.conn.execute("SELECT DISTINCT class_id FROM changes WHERE seq > ? AND seq <= ?", (generation, upto))
        return np.array([r[0] for r in rows], np.int64)

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0])

    def count_examples(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM examples").fetchone()[0])

    # ---------------------------------------------------------------- classes
    def _in_chunks(self, sql: str, keys: Sequence[Any]) -> Iterator[tuple]:
        """Rows of ``sql`` (holding one ``IN ({})``) for all ``keys``, :data:`CHUNK` keys per query."""
        for s in range(0, len(keys), CHUNK):
            part = list(keys[s : s + CHUNK])
            yield from self.conn.execute(sql.format(",".join("?" * len(part))), part)

    def class_by_label(self, label: str) -> ClassRow:
        """The class named ``label``; a :class:`OneshotError` when there is none."""
        row = self.conn.execute(
            f"SELECT id, n_examples, template, adapt_rate, adapt_min_score, metadata, label, {self._dg} FROM classes "
            "WHERE label = ?",
            (label,),
        ).fetchone()
        if row is None:
            raise OneshotError(f"no class {label!r} in gallery {self.path}: see `oneshot gallery list`")
        check_class(self.path, self.sealed, row[0], row[6], row[2], row[7])
        return ClassRow(row[0], row[1], row[2], row[3], row[4], _json_or_none(row[5]) or {})

    def class_id(self, label: str) -> int | None:
        row = self.conn.execute("SELECT id FROM classes WHERE label = ?", (label,)).fetchone()
        return None if row is None else int(row[0])

    def find_labels(self, labels: Sequence[str]) -> dict[str, tuple[int, int]]:
        """label -> (class id, number of examples) for those of ``labels`` that exist."""
        sql = "SELECT label, id, n_examples FROM classes WHERE label IN ({})"
        return {lab: (i, n) for lab, i, n in self._in_chunks(sql, labels)}

    def labels_of(self, ids: Iterable[int]) -> dict[int, str]:
        """class id -> label for the ids (negative ids, FAISS's padding, are skipped) that exist."""
        keys = sorted({int(i) for i in ids if i >= 0})
        sql = f"SELECT id, label, template, {self._dg} FROM classes WHERE id IN ({{}})"
        return {i: lab for i, lab, _ in self._verified(self._in_chunks(sql, keys))}

    def _verified(self, rows: Iterable[tuple]) -> Iterator[tuple]:
        """``(id, label, template, digest)`` rows, each checked against its digest, as ``(id, label, template)``."""
        return integrity.verified_classes(self.path, self.sealed, rows)  # type: ignore[return-value]

    def templates_of(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(M,) ids and (M, D) templates of those of ``ids`` that exist."""
        got_ids, got = [], []
        sql = f"SELECT id, label, template, {self._dg} FROM classes WHERE id IN ({{}})"
        for i, _, b in self._verified(self._in_chunks(sql, list(ids))):
            got_ids.append(i)
            got.append(from_blob(b, dim))
        return np.asarray(got_ids, np.int64), (np.stack(got) if got else np.zeros((0, dim), np.float32))

    def all_templates(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Every class: ids (N,) and templates (N, D), in id order."""
        ids: list[int] = []
        blobs: list[bytes] = []
        cur = self.conn.execute(f"SELECT id, label, template, {self._dg} FROM classes ORDER BY id")
        while rows := cur.fetchmany(65536):
            for i, _, b in self._verified(rows):
                ids.append(i)
                blobs.append(b)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        t = np.frombuffer(b"".join(blobs), dtype=np.float32)
        if t.size != len(ids) * dim:
            raise OneshotError(f"gallery {self.path} holds templates of the wrong size: it is damaged; restore it from an export")
        return np.asarray(ids, np.int64), t.reshape(len(ids), dim)

    def next_class_id(self) -> int:
        """The id the next new class gets (AUTOINCREMENT never reuses one)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'classes'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def list_classes(self) -> list[tuple]:
        """(id, label, n_examples, adapt_rate, adaptations, created, updated, metadata dict) per class, by id."""
        rows = self.conn.execute(
            "SELECT id, label, n_examples, adapt_rate, adaptations, created, updated, metadata, template, "
            f"{self._dg} FROM classes ORDER BY id"
        )
        out = []
        for r in rows:
            check_class(self.path, self.sealed, r[0], r[1], r[8], r[9])
            out.append((*r[:7], _json_or_none(r[7]) or {}))
        return out

    # ---------------------------------------------------------------- examples
    def example_vectors(self, class_id: int, dim: int) -> np.ndarray:
        """The stored embeddings (n, D) of a class's examples, in enrolment order."""
        rows = self._examples("class_id, embedding", "WHERE class_id = ?", (class_id,))
        return np.stack([from_blob(r[1], dim) for r in rows]) if rows else np.zeros((0, dim), np.float32)

    def _examples(self, cols: str, where: str, args: tuple = ()) -> list[tuple]:
        """Rows ``cols`` of the examples ``where`` selects (by id), each checked against its digest."""
        sql = f"SELECT class_id, embedding, input, input_path, {self._dg}, {cols} FROM examples {where} ORDER BY id"
        rows = self.conn.execute(sql, args).fetchall()
        for r in rows:
            check_example(self.path, self.sealed, r[:5], lambda cid: self.labels_of([cid]).get(cid))
        return [r[5:] for r in rows]

    def all_examples(self) -> list[ExampleRow]:
        """Every example's stored input or path, by id (what re-embedding reads)."""
        return [ExampleRow(*r) for r in self._examples("id, class_id, input, input_path, source", "")]

    def class_examples(self, dim: int) -> Iterator[tuple[str, dict[str, Any], list[tuple]]]:
        """For each class with examples, by id: label, metadata and its examples' (embedding (D,), input, path,
        source) in enrolment order (what importing into another gallery reads)."""
        classes = self.conn.execute(f"SELECT id, label, metadata, template, {self._dg} FROM classes ORDER BY id")
        for cid, label, meta, template, digest in classes.fetchall():
            check_class(self.path, self.sealed, cid, label, template, digest)
            ex = self._examples("embedding, input, input_path, source", "WHERE class_id = ?", (cid,))
            if ex:
                yield label, _json_or_none(meta), [(from_blob(e[0], dim), *e[1:]) for e in ex]


class Transaction:
    """The writes of one :meth:`ClassStore.write` transaction. Methods that change or remove a template
    record the class; :meth:`log_changes` appends them to the change log before the commit."""

    def __init__(self, store: ClassStore) -> None:
        self.store = store
        self.conn = store.conn
        self._changed: dict[int, None] = {}  # ordered set

    def _touch(self, ids: Iterable[int]) -> None:
        self._changed.update(dict.fromkeys(int(i) for i in ids))

    def log_changes(self) -> None:
        """Append every class whose template changed to the change log (called once, at commit)."""
        self.conn.executemany("INSERT INTO changes (class_id) VALUES (?)", [(cid,) for cid in self._changed])
        self._changed = {}

    def _class_digest(self, class_id: int, template: np.ndarray) -> bytes:
        """The digest of a class with a new template (its label read and checked first)."""
        return class_digest(class_id, self.store.labels_of([class_id])[class_id], to_blob(template))

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` with its digest, in the same statement."""
        self.conn.execute(store_file.UPSERT_META, integrity.meta_row(key, value))

    def insert_classes(self, rows: Sequence[tuple[int, str, np.ndarray, int, dict[str, Any] | None]], now: str) -> None:
        """New classes: (id, label, template (D,), number of examples, metadata or None) each."""
        self.conn.executemany(
            "INSERT INTO classes (id, label, template, n_examples, metadata, created, updated, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (c, lab, to_blob(t), n, json.dumps(m) if m else "{}", now, now, class_digest(c, lab, to_blob(t)))
                for c, lab, t, n, m in rows
            ],
        )
        self._touch(r[0] for r in rows)

    def refine_class(
        self, class_id: int, template: np.ndarray, n_examples: int, now: str, metadata: dict[str, Any] | None
    ) -> None:
        """A class's new template after more examples (adaptation restarts; ``metadata`` replaces the old when given)."""
        meta_sql, meta_args = ("", ()) if metadata is None else (", metadata = ?", (json.dumps(metadata),))
        self.conn.execute(
            f"UPDATE classes SET template = ?, n_examples = ?, adaptations = 0, updated = ?, digest = ?{meta_sql} WHERE id = ?",
            (to_blob(template), n_examples, now, self._class_digest(class_id, template), *meta_args, class_id),
        )
        self._touch([class_id])

    def add_examples(self, rows: Iterable[tuple[int, np.ndarray, bytes | None, str | None, str]], now: str) -> None:
        """Examples: (class id, embedding (D,), input bytes or None, path or None, source) each."""
        self.conn.executemany(
            "INSERT INTO examples (class_id, embedding, input, input_path, source, added, digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (cid, b, inp, p, src, now, example_digest(cid, b, inp, p))
                for cid, b, inp, p, src in ((r[0], to_blob(r[1]), *r[2:]) for r in rows)
            ],
        )

    def adapt_template(self, class_id: int, template: np.ndarray, now: str) -> None:
        """One template adaptation step (counted)."""
        self.conn.execute(
            "UPDATE classes SET template = ?, adaptations = adaptations + 1, updated = ?, digest = ? WHERE id = ?",
            (to_blob(template), now, self._class_digest(class_id, template), class_id),
        )
        self._touch([class_id])

    def set_adaptation(self, class_id: int, rate: float, min_score: float | None, metadata: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE classes SET adapt_rate = ?, adapt_min_score = ?, metadata = ? WHERE id = ?",
            (rate, min_score, json.dumps(metadata), class_id),
        )

    def delete_class(self, class_id: int) -> None:
        """Remove a class and its examples."""
        self.conn.execute("DELETE FROM examples WHERE class_id = ?", (class_id,))
        self.conn.execute("DELETE FROM classes WHERE id = ?", (class_id,))
        self._touch([class_id])

    def rename(self, old: str, new: str, now: str) -> None:
        """Rename class ``old`` (which must exist) to ``new`` (which must not)."""
        row = self.store.class_by_label(old)
        if self.store.class_id(new) is not None:
            raise OneshotError(f"class {new!r} already exists: forget it first or choose another name")
        digest = class_digest(row.id, new, row.template)
        self.conn.execute("UPDATE classes SET label = ?, updated = ?, digest = ? WHERE label = ?", (new, now, digest, old))

    def replace_embeddings(
        self, example_ids: Sequence[int], vectors: np.ndarray, templates: dict[int, np.ndarray], now: str
    ) -> None:
        """Re-embedding: examples' new embeddings (N, D), classes' new templates (adaptations reset)."""
        new = dict(zip((int(i) for i in example_ids), vectors, strict=False))
        old = {}  # example id -> (class id, input, path), each old row checked before it is resealed
        for s in range(0, len(new), CHUNK):
            part = tuple(new)[s : s + CHUNK]
            where = f"WHERE id IN ({','.join('?' * len(part))})"
            old.update({r[0]: r[1:] for r in self.store._examples("id, class_id, input, input_path", where, part)})
        self.conn.executemany(
            "UPDATE examples SET embedding = ?, digest = ? WHERE id = ?",
            [(to_blob(v), example_digest(old[i][0], to_blob(v), *old[i][1:]), i) for i, v in new.items()],
        )
        self.conn.executemany(
            "UPDATE classes SET template = ?, adaptations = 0, updated = ?, digest = ? WHERE id = ?",
            [(to_blob(t), now, self._class_digest(cid, t), cid) for cid, t in templates.items()],
        )
        self._touch(templates)
