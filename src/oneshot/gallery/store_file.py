"""The gallery file: its SQLite schema, the checks made before anything is written, and creation.

Tables:
    * ``schema_version(version)`` -- one row; a file from a newer oneshot is refused, never touched.
    * ``meta(key, value, digest)`` -- JSON values: ``format``, the encoder ``fingerprint``, ``dim``, ``store``
      (what is kept of example inputs), ``threshold`` and ``calibration`` records, ``epoch`` (bumped when every
      template is rebuilt, e.g. by ``reembed``), ``index`` settings; ``digest`` is the row's checksum (schema 3).
    * ``classes(id, label, template, ...)`` -- one row per class; ``id`` is AUTOINCREMENT, so an id is never
      reused after a class is forgotten (the FAISS index uses these ids); ``template`` is a float32 blob (D,),
      L2-normalised; ``digest`` is the row's checksum (:mod:`oneshot.gallery.integrity`, schema 2).
    * ``examples(id, class_id, embedding, input, input_path, ..., digest)`` -- the enrolled examples: float32 (D,)
      embedding, and the raw input bytes or its path when the gallery stores them (for ``reembed``).
    * ``changes(seq, class_id)`` -- the change log: every write that alters a class's template (or removes
      the class) appends the class id. ``MAX(seq)`` is the gallery's *generation*; an index built at
      generation g catches up by re-reading the classes named after g.

Opening checks the file before writing anything: an SQLite header, the expected page count (truncation),
our tables and format, and a schema version we understand; anything else is a :class:`OneshotError` and the
file is left exactly as it was.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError
from oneshot.files import atomic_path
from oneshot.gallery import integrity

FORMAT = "oneshot-gallery"
SCHEMA_VERSION = 3  # 2: row digests, 3: meta digests (oneshot.gallery.integrity); older files migrated on open
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Files up to this size get a structural ``PRAGMA quick_check`` on open (larger ones: header checks only).
QUICK_CHECK_MAX_BYTES = 1 << 30

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, digest BLOB);
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
    updated TEXT NOT NULL,
    digest BLOB
);
CREATE TABLE examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    input BLOB,
    input_path TEXT,
    source TEXT,
    added TEXT NOT NULL,
    digest BLOB
);
CREATE INDEX examples_by_class ON examples(class_id);
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, class_id INTEGER NOT NULL);
"""
#: Store one meta row ``(key, JSON text, digest)`` (see :func:`oneshot.gallery.integrity.meta_row`).
UPSERT_META = (
    "INSERT INTO meta (key, value, digest) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, digest = excluded.digest"
)


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) that waits up to a minute for a lock."""
    conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None, timeout=60.0, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.text_factory = _text  # a damaged text cell reads with U+FFFD, never as a UnicodeDecodeError
    return conn


def _one_line(x: object, limit: int = 200) -> str:
    """SQLite's words for a problem, on one line (its messages and ``quick_check`` verdicts may span several)."""
    return " ".join(str(x).split())[:limit]


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def open_checked(path: Path, migrate: bool = True) -> tuple[sqlite3.Connection, bool]:
    """A WAL connection to an existing gallery, after checking it read-only, and whether it can write.

    On a read-only file system (or a file or folder this user cannot write) the gallery opens read-only:
    reads work, writes are refused with a message saying why (see :func:`write_error`). A writable file
    of an older schema is migrated to row and meta checksums (:func:`oneshot.gallery.integrity.migrate`) unless
    ``migrate`` is False: a file only read (an import's source, ``gallery check``) opens read-only, so it
    stays byte-identical (not even switched to WAL mode)."""
    if not path.is_file():
        raise OneshotError(f"gallery {path} does not exist: create it with `oneshot gallery create`")
    _check_file(path)
    try:
        ro = _connect_ro(path)
        try:
            _check_tables(path, ro)
        except BaseException:
            ro.close()
            raise
        if not migrate or _read_only_fs(path):
            return ro, False
        try:
            conn = connect(path, "rw")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.OperationalError:
            return ro, False  # cannot write here: serve reads from the read-only connection
        ro.close()
        if migrate and not integrity.sealed_throughout(conn):
            integrity.migrate(conn)  # a schema-1 or -2 file: its rows get their digests now
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        if isinstance(exc, sqlite3.OperationalError) and _disk_full(path):
            raise OneshotError(
                f"cannot open gallery {path}: no space left on the device (SQLite needs room for its "
                "-wal and -shm files); free some space"
            ) from None
        raise OneshotError(f"gallery {path} is corrupt or not a gallery ({_one_line(exc)}): restore it from an export") from None
    return conn, True


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection; on a read-only file system an ``immutable`` one (nothing can change the file
    there, and a WAL database otherwise needs to create its ``-shm`` file to be read)."""
    if _read_only_fs(path):
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        conn.text_factory = _text
    else:
        conn = connect(path, "ro")
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return conn


def write_error(path: Path, exc: sqlite3.Error) -> OneshotError:
    """The one-line error for a write SQLite refused (full disk, read-only, locked ...); nothing was written."""
    text = str(exc)
    if "full" in text:
        why = "no space left on the device: free some space and run it again"
    elif "readonly" in text or "read-only" in text:
        why = "the gallery or its folder is read-only: use a writable copy (`oneshot gallery export`)"
    elif "locked" in text or "busy" in text:
        why = "another process held the gallery for more than a minute: try again"
    else:
        why = f"{text}: check the disk and the file"
    return OneshotError(f"cannot write gallery {path} ({why}); nothing was written")


def create_file(path: Path, meta: dict[str, Any]) -> None:
    """Create a new gallery file holding ``meta``; refuses to touch an existing file.

    The file appears under its name only once complete (a crash leaves no half-made gallery), and a
    gallery another process created meanwhile is never replaced."""
    if path.exists():
        raise OneshotError(f"{path} already exists: open it, or choose another path")
    with atomic_path(path, replace=False) as tmp:
        try:
            conn = connect(tmp, "rwc")
            try:
                conn.execute("BEGIN")
                for stmt in SCHEMA.strip().split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                rows = dict(meta, format=FORMAT, epoch=0)
                conn.executemany(UPSERT_META, [integrity.meta_row(k, v) for k, v in rows.items()])
                conn.execute("COMMIT")
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
        finally:
            for side in ("-wal", "-shm", "-journal"):
                Path(f"{tmp}{side}").unlink(missing_ok=True)


def backup(conn: sqlite3.Connection, dest: Path, gallery_id: str) -> None:
    """Write a consistent copy of the database behind ``conn`` to ``dest`` (atomically; SQLite's backup API),
    under a new ``gallery_id`` (a copy is another gallery: it must not adopt the original's index cache)."""
    with atomic_path(dest) as tmp:
        out = sqlite3.connect(tmp)
        try:
            conn.backup(out)
            if integrity.meta_sealed(out):
                out.execute(UPSERT_META, integrity.meta_row("gallery_id", gallery_id))
            else:  # a copy of an older file opened read-only: it is migrated when first opened for writing
                out.execute(
                    "INSERT INTO meta VALUES ('gallery_id', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (json.dumps(gallery_id),),
                )
            out.commit()
            out.execute("PRAGMA journal_mode = DELETE")
        finally:
            out.close()


def _check_file(path: Path) -> None:
    """Refuse, without writing, a file that is not a complete SQLite database."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise OneshotError(f"cannot read gallery {path} ({exc.strerror}): check the path and permissions") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise OneshotError(
            f"{path} is not a oneshot gallery (not an SQLite database, or its header is damaged): "
            "give the right file or restore it from an export"
        )
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", header[28:32])[0]
    change_counter, valid_for = struct.unpack(">I", header[24:28])[0], struct.unpack(">I", header[92:96])[0]
    if change_counter == valid_for and pages and size < page_size * pages:
        raise OneshotError(f"gallery {path} is truncated ({size} of {page_size * pages} bytes): restore it from an export")


def _check_tables(path: Path, ro: sqlite3.Connection) -> None:
    """Refuse, on a read-only connection, a database that is not a gallery this oneshot reads."""
    tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"schema_version", "meta", "classes", "examples", "changes"} <= tables:
        raise OneshotError(f"{path} is an SQLite database but not a oneshot gallery: give the right file")
    fmt = ro.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    try:
        fmt_value = None if fmt is None else json.loads(fmt[0])
    except (TypeError, ValueError):
        fmt_value = None
    if fmt_value != FORMAT:
        raise OneshotError(f"{path} is an SQLite database but not a oneshot gallery: give the right file")
    row = ro.execute("SELECT version FROM schema_version").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise OneshotError(
            f"gallery {path} was written by a newer oneshot (schema {version}, this one reads {SCHEMA_VERSION}): upgrade oneshot"
        )
    if version < 1:
        raise OneshotError(f"gallery {path} has no valid schema version: it is damaged; restore it from an export")
    ro.execute("SELECT COUNT(*) FROM classes").fetchone()
    if path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
        verdict = ro.execute("PRAGMA quick_check(1)").fetchone()[0]
        if verdict != "ok":
            raise OneshotError(f"gallery {path} is corrupt ({_one_line(verdict)}): restore it from an export")
