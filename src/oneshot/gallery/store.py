"""The gallery's source of truth: one SQLite file (WAL mode, every write one transaction).

Tables:
    * ``schema_version(version)`` -- one row; a file from a newer oneshot is refused, never touched.
    * ``meta(key, value)`` -- JSON values: ``format``, the encoder ``fingerprint``, ``dim``, ``store`` (what is
      kept of example inputs), ``threshold`` and ``calibration`` records, ``epoch`` (bumped when every
      template is rebuilt, e.g. by ``reembed``), ``index`` settings.
    * ``classes(id, label, template, ...)`` -- one row per class; ``id`` is AUTOINCREMENT, so an id is never
      reused after a class is forgotten (the FAISS index uses these ids); ``template`` is a float32 blob (D,),
      L2-normalised.
    * ``examples(id, class_id, embedding, input, input_path, ...)`` -- the enrolled examples: float32 (D,)
      embedding, and the raw input bytes or its path when the gallery stores them (for ``reembed``).
    * ``changes(seq, class_id)`` -- the change log: every write that alters a class's template (or removes
      the class) appends the class id. ``MAX(seq)`` is the gallery's *generation*; an index built at
      generation g catches up by re-reading the classes named after g.

Opening checks the file before writing anything: an SQLite header, the expected page count (truncation),
our tables and format, and a schema version we understand; anything else is a :class:`OneshotError` and the
file is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError

FORMAT = "oneshot-gallery"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Files up to this size get a structural ``PRAGMA quick_check`` on open (larger ones: header checks only).
QUICK_CHECK_MAX_BYTES = 1 << 30

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL UNIQUE,
    template BLOB NOT NULL,
    n_examples INTEGER NOT NULL,
    adapt_rate REAL NOT NULL DEFAULT 0,
    adapt_min_score REAL,
    adaptations INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    input BLOB,
    input_path TEXT,
    source TEXT,
    added TEXT NOT NULL
);
CREATE INDEX examples_by_class ON examples(class_id);
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, class_id INTEGER NOT NULL);
"""


def to_blob(v: np.ndarray) -> bytes:
    """float32 bytes of a (D,) vector."""
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def from_blob(b: bytes, dim: int) -> np.ndarray:
    """(D,) float32 vector from its blob; a wrong length means a damaged row."""
    v = np.frombuffer(b, dtype=np.float32)
    if v.shape != (dim,):
        raise OneshotError(f"gallery row holds a {v.size}-value vector, expected {dim}: the gallery is damaged")
    return v


def _check_file(path: Path) -> None:
    """Refuse, without writing, a file that is not a complete SQLite database."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise OneshotError(f"cannot read gallery {path} ({exc.strerror}): check the path and permissions") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise OneshotError(f"{path} is not a oneshot gallery (not an SQLite database, or its header is damaged): "
                           "give the right file or restore it from an export")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", header[28:32])[0]
    change_counter, valid_for = struct.unpack(">I", header[24:28])[0], struct.unpack(">I", header[92:96])[0]
    if change_counter == valid_for and pages and size < page_size * pages:
        raise OneshotError(f"gallery {path} is truncated ({size} of {page_size * pages} bytes): restore it from an export")


class Store:
    """SQLite access for one gallery file. Use :meth:`open` or :meth:`create`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # ---------------------------------------------------------------- opening
    @staticmethod
    def _connect(path: Path, mode: str) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None, timeout=60.0,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        """Open an existing gallery after checking, read-only, that it is one we can use."""
        path = Path(path)
        if not path.is_file():
            raise OneshotError(f"gallery {path} does not exist: create it with `oneshot gallery create`")
        _check_file(path)
        try:
            ro = cls._connect(path, "ro")
            try:
                tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"schema_version", "meta", "classes", "examples", "changes"} <= tables:
                    raise OneshotError(f"{path} is an SQLite database but not a oneshot gallery: give the right file")
                fmt = ro.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if fmt is None or json.loads(fmt[0]) != FORMAT:
                    raise OneshotError(f"{path} is an SQLite database but not a oneshot gallery: give the right file")
                row = ro.execute("SELECT version FROM schema_version").fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise OneshotError(f"gallery {path} was written by a newer oneshot (schema {version}, this one reads "
                                       f"{SCHEMA_VERSION}): upgrade oneshot")
                if version < 1:
                    raise OneshotError(f"gallery {path} has no valid schema version: it is damaged; restore it from an export")
                ro.execute("SELECT COUNT(*) FROM classes").fetchone()
                if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
                    verdict = ro.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if verdict != "ok":
                        raise OneshotError(f"gallery {path} is corrupt ({verdict}): restore it from an export")
            finally:
                ro.close()
            conn = cls._connect(path, "rw")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise OneshotError(f"gallery {path} is corrupt or not a gallery ({exc}): restore it from an export") from None
        return cls(path, conn)

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any]) -> "Store":
        """Create a new gallery file holding ``meta``; refuses to touch an existing file."""
        path = Path(path)
        if path.exists():
            raise OneshotError(f"{path} already exists: open it, or choose another path")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
        conn = cls._connect(tmp, "rwc")
        try:
            conn.execute("BEGIN")
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            rows = dict(meta, format=FORMAT, epoch=0)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        # The file appears under its name only once complete (a crash leaves no half-made gallery), and a
        # gallery another process created meanwhile is never replaced (link fails on an existing name).
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- transactions
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, readers are never blocked)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several reads."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def all_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (key, json.dumps(value)))

    def generation(self, conn: sqlite3.Connection | None = None) -> int:
        """The gallery's generation: the last change-log sequence number (0 when empty)."""
        row = (conn or self.conn).execute("SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0])
