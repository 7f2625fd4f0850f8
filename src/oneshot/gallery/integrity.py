"""Row checksums: a stored class or example that no longer matches what oneshot wrote is refused, never used.

SQLite checks its pages' structure (``PRAGMA quick_check`` on open) but not their content: a flipped byte
inside an embedding, a template or a label would silently change answers. Since schema 2 every row carries a
``digest`` column -- 8 bytes of BLAKE2b, written in the same statement as the row:

    * class: its id, label (UTF-8) and template blob;
    * example: its class id, embedding blob, stored input bytes and input path.

Rows are verified where they are read into results: every template read into the FAISS index (rebuild and
catch-up), the labels an answer names, a class's row for ``verify`` / ``adapt``, examples read to refine a
template, to re-embed or to import; ``oneshot gallery check`` verifies every row. A mismatch is a one-line
:class:`OneshotError` naming the class and saying to restore from an export.

Since schema 3 every ``meta`` row (thresholds, calibration, index settings, the encoder binding ...) carries one
too -- over its key and its JSON text, written in the same statement -- and every meta read is verified: a
mismatch names the key (``meta entry 'threshold'``). Deleting a whole meta row is not detected by this.

Older files are migrated on their first open that can write: schema 1 (no ``digest`` column anywhere) and
schema 2 (none in ``meta``) get the missing columns and every row's digest computed from the row as it is, in
one transaction (damage already there is sealed in; ``PRAGMA quick_check`` runs first). Opened read-only, or
only read (an import's source, ``gallery check``), such a file is read unverified where it has no digests and
left as it is.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError

#: Bytes of BLAKE2b per row.
DIGEST_SIZE = 8
#: The schema version that added the ``digest`` columns of ``classes`` and ``examples``.
SEALED_SCHEMA = 2
#: The schema version that added the ``digest`` column of ``meta`` (what a migration records).
META_SEALED_SCHEMA = 3


_HEAD = struct.Struct("<qQ")  # an id and the length of the blob after it
_LEN = struct.Struct("<Q")
_NONE = b"\xff" * 8  # the length field of a missing value (None and b"" differ)


def _field(b: bytes | None) -> bytes:
    return _NONE if b is None else _LEN.pack(len(b)) + b


def class_digest(class_id: int, label: str, template: bytes) -> bytes:
    """The digest of a class row: id, label and template (the float32 blob of a (D,) vector)."""
    data = b"".join((_HEAD.pack(int(class_id), len(template)), template, _field(label.encode("utf-8", "surrogatepass"))))
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE, person=b"class").digest()


def example_digest(class_id: int, embedding: bytes, inp: bytes | None, path: str | None) -> bytes:
    """The digest of an example row: class id, embedding (float32 blob), stored input bytes and path."""
    p = None if path is None else path.encode("utf-8", "surrogatepass")
    data = b"".join((_HEAD.pack(int(class_id), len(embedding)), embedding, _field(p), _field(inp)))
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE, person=b"example").digest()


def meta_digest(key: str, text: str) -> bytes:
    """The digest of a meta row: its key and its value's JSON text."""
    data = _field(key.encode("utf-8", "surrogatepass")) + _field(text.encode("utf-8", "surrogatepass"))
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE, person=b"meta").digest()


def meta_row(key: str, value: Any) -> tuple[str, str, bytes]:
    """``(key, JSON text, digest)``: the meta row that stores ``value`` under ``key``."""
    text = json.dumps(value)
    return key, text, meta_digest(key, text)


def _meta_seal(key: Any, text: Any) -> bytes | None:
    """The digest of a meta row as it is (None for a row of the wrong types: it is refused when read)."""
    return meta_digest(key, text) if isinstance(key, str) and isinstance(text, str) else None


def meta_value(path: Path, sealed: bool, key: Any, text: Any, digest: Any) -> Any:
    """The value of a meta row ``(key, JSON text, digest)``, refused when its digest is missing or wrong (not
    checked in an unsealed file) or its text is not JSON: one line naming the key."""
    if sealed and _meta_seal(key, text) != digest:
        raise damaged(path, f"meta entry {str(key)[:60]!r}")
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise OneshotError(f"gallery {path} has a damaged meta entry {str(key)[:60]!r}: restore it from an export") from None


def damaged(path: Path, what: str) -> OneshotError:
    """The one error for a row that does not match its checksum."""
    return OneshotError(
        f"gallery {path}: {what} does not match its checksum (the file was damaged or edited outside "
        "oneshot): restore it from an export"
    )


def _name(label: Any, class_id: int) -> str:
    return f"class {str(label)[:60]!r} (id {class_id})"


def check_class(path: Path, sealed: bool, class_id: int, label: Any, template: Any, digest: Any) -> None:
    """Refuse a class row whose digest is missing or wrong (nothing to check in an unsealed file)."""
    if sealed and (
        not isinstance(label, str) or not isinstance(template, bytes) or digest != class_digest(class_id, label, template)
    ):
        raise damaged(path, _name(label, class_id))


def check_example(path: Path, sealed: bool, row: tuple, label_of: Callable[[int], Any]) -> None:
    """Refuse an example row ``(class id, embedding, input, path, digest)`` that does not match its digest;
    ``label_of(class_id)`` names the class in the error."""
    if not sealed:
        return
    cid, emb, inp, p, digest = row
    ok = isinstance(emb, bytes) and isinstance(inp, (bytes, type(None))) and isinstance(p, (str, type(None)))
    if not ok or digest != example_digest(cid, emb, inp, p):
        raise damaged(path, f"an example of {_name(label_of(cid), cid)}")


def columns(conn: sqlite3.Connection) -> bool:
    """True when both tables have the ``digest`` column (a sealed file), False when neither has it."""
    have = [
        "digest" in {r[1] for r in conn.execute(f"PRAGMA table_info({t})")}  # noqa: S608 - fixed names
        for t in ("classes", "examples")
    ]
    if all(have) != any(have):
        raise OneshotError("gallery has a digest column in one table only: it is damaged; restore it from an export")
    return all(have)


def meta_sealed(conn: sqlite3.Connection) -> bool:
    """True when the ``meta`` table has the ``digest`` column (schema 3 on)."""
    return "digest" in {r[1] for r in conn.execute("PRAGMA table_info(meta)")}


def sealed_throughout(conn: sqlite3.Connection) -> bool:
    """True when every table that carries digests has them (nothing for :func:`migrate` to do)."""
    return columns(conn) and meta_sealed(conn)


def migrate(conn: sqlite3.Connection) -> None:
    """Seal a schema-1 or schema-2 gallery: add the missing ``digest`` columns, compute every row's, record
    schema 3 -- one transaction, skipped when another process did it first. ``conn`` is a writable
    autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not columns(conn):
            conn.execute("ALTER TABLE classes ADD COLUMN digest BLOB")
            conn.execute("ALTER TABLE examples ADD COLUMN digest BLOB")
            rows = conn.execute("SELECT id, label, template FROM classes").fetchall()
            conn.executemany("UPDATE classes SET digest = ? WHERE id = ?", [(class_digest(*r), r[0]) for r in rows])
            cur = conn.execute("SELECT id, class_id, embedding, input, input_path FROM examples")
            while part := cur.fetchmany(4096):
                conn.executemany("UPDATE examples SET digest = ? WHERE id = ?", [(example_digest(*r[1:]), r[0]) for r in part])
        if not meta_sealed(conn):
            conn.execute("ALTER TABLE meta ADD COLUMN digest BLOB")
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
            conn.executemany("UPDATE meta SET digest = ? WHERE key = ?", [(_meta_seal(k, v), k) for k, v in rows])
        conn.execute("UPDATE schema_version SET version = ? WHERE version < ?", (META_SEALED_SCHEMA, META_SEALED_SCHEMA))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def check_all(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """Verify the whole file (``oneshot gallery check``): SQLite's ``integrity_check``, then every meta entry,
    class and example row against its digest. Returns counts and the names of the damaged meta keys and classes
    (at most 20 each)."""
    verdict = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    sealed, msealed = columns(conn), meta_sealed(conn)
    report: dict[str, Any] = {"path": str(path), "sqlite": "ok" if verdict == ["ok"] else verdict, "sealed": sealed}
    report["meta_sealed"] = msealed
    bad_meta: list[str] = []
    rows = conn.execute(f"SELECT key, value, {'digest' if msealed else 'NULL'} FROM meta").fetchall()  # noqa: S608
    for key, text, digest in rows:
        try:
            meta_value(path, msealed, key, text, digest)
        except OneshotError:
            bad_meta.append(str(key)[:60])
    report.update(meta=len(rows), damaged_meta=bad_meta[:20])
    labels: dict[int, str] = {}
    bad_classes: list[str] = []
    dg = "digest" if sealed else "NULL"
    n = 0
    for cid, label, template, digest in conn.execute(f"SELECT id, label, template, {dg} FROM classes"):  # noqa: S608
        n += 1
        labels[cid] = label
        try:
            check_class(path, sealed, cid, label, template, digest)
        except OneshotError:
            bad_classes.append(_name(label, cid))
    bad_examples: list[str] = []
    m = 0
    sql = f"SELECT class_id, embedding, input, input_path, {dg} FROM examples"  # noqa: S608
    for row in conn.execute(sql):
        m += 1
        try:
            check_example(path, sealed, row, labels.get)
        except OneshotError:
            bad_examples.append(_name(labels.get(row[0]), row[0]))
    report.update(
        classes=n,
        examples=m,
        damaged_classes=bad_classes[:20],
        damaged_examples=len(bad_examples),
        damaged_example_classes=sorted(set(bad_examples))[:20],
    )
    report["ok"] = report["sqlite"] == "ok" and not bad_classes and not bad_examples and not bad_meta
    return report


def verified_classes(path: Path, sealed: bool, rows: Iterable[tuple]) -> Iterable[tuple]:
    """``(id, label, template, digest)`` rows, each checked, as ``(id, label, template)``."""
    for cid, label, template, digest in rows:
        check_class(path, sealed, cid, label, template, digest)
        yield cid, label, template


def check_file(path: Path) -> dict[str, Any]:
    """Open the gallery at ``path`` (the opening checks; an older file is not migrated: rows without digests
    get only SQLite's check and the JSON check) and :func:`check_all` it, in one read snapshot."""
    from oneshot.gallery.class_store import ClassStore

    store = ClassStore.open(path, migrate=False)
    try:
        with store.read():
            return check_all(store.conn, store.path)
    finally:
        store.close()


def problem(report: dict[str, Any]) -> str | None:
    """One line saying what :func:`check_all` found damaged, or None when the file is sound."""
    if report["ok"]:
        return None
    parts = [] if report["sqlite"] == "ok" else [f"SQLite reports {'; '.join(report['sqlite'])[:200]}"]
    if report["damaged_meta"]:
        keys = ", ".join(repr(k) for k in report["damaged_meta"][:5])
        parts.append(f"{len(report['damaged_meta'])} meta entries damaged ({keys})")
    if report["damaged_classes"]:
        parts.append(f"{len(report['damaged_classes'])} class rows damaged ({', '.join(report['damaged_classes'][:5])})")
    if report["damaged_examples"]:
        names = ", ".join(report["damaged_example_classes"][:5])
        parts.append(f"{report['damaged_examples']} example rows damaged (of {names})")
    return f"gallery {report['path']} is damaged: {'; '.join(parts)}: restore it from an export"


def sound(report: dict[str, Any]) -> str:
    """One line for a file :func:`check_all` found sound."""
    later = "carry no checksums yet (added when it is next opened for writing)"
    if not report["sealed"]:
        return (
            f"{report['path']}: SQLite structure ok; schema 1, so its {report['classes']} classes, "
            f"{report['examples']} examples and {report['meta']} meta entries {later}"
        )
    counts = f"{report['classes']} classes, {report['examples']} examples"
    if not report["meta_sealed"]:
        return f"{report['path']}: ok ({counts} verified); schema 2, so its {report['meta']} meta entries {later}"
    return f"{report['path']}: ok ({counts}, {report['meta']} meta entries verified)"
