"""Row checksums (issue 11): a flipped byte in a stored template, label, embedding or meta value (a threshold, the
encoder binding ...) is refused, never answered."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from oneshot import Gallery
from oneshot.cli import app
from oneshot.errors import OneshotError
from oneshot.gallery import integrity, store_file

D = 8


@pytest.fixture
def gallery(tmp_path):
    path = tmp_path / "g.db"
    v = np.random.default_rng(0).normal(size=(5, D)).astype(np.float32)
    with Gallery.open(path, dim=D) as g:
        g.enrol_vectors([f"c{i}" for i in range(5)], v)
    for side in (".faiss", ".faiss.check"):
        (tmp_path / f"g.db{side}").unlink(missing_ok=True)
    return path, v


def _flip_in_file(path, needle: bytes, offset: int = 0) -> None:
    """Flip one byte of the file wherever ``needle`` is stored, as a damaged disk would (no SQLite involved)."""
    data = bytearray(path.read_bytes())
    pos = data.find(needle)
    assert pos >= 0
    while pos >= 0:
        data[pos + offset] ^= 0x10
        pos = data.find(needle, pos + 1)
    path.write_bytes(bytes(data))


def _checkpoint(path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _refused(path, v, what: str) -> None:
    before = path.read_bytes()
    with pytest.raises(OneshotError, match=rf"{what}.*does not match its checksum.*restore it from an export"):
        with Gallery.open(path, create=False) as g:
            g.identify(v, k=1)
    assert path.read_bytes() == before


def test_flipped_template_byte_is_refused(gallery):
    path, v = gallery
    with Gallery.open(path) as g:
        template = g.store.class_by_label("c3").template
    _checkpoint(path)
    _flip_in_file(path, template, offset=5)
    _refused(path, v, r"class 'c3' \(id 4\)")


def test_flipped_label_byte_is_refused(gallery):
    path, v = gallery
    conn = sqlite3.connect(path)
    conn.execute("UPDATE classes SET label = 'c3-edited' WHERE id = 4")  # an edit outside oneshot
    conn.commit()
    conn.close()
    _refused(path, v, "class 'c3-edited'")


def test_edited_example_embedding_is_refused_on_refine_and_by_check(gallery):
    path, v = gallery
    conn = sqlite3.connect(path)
    conn.execute("UPDATE examples SET embedding = ? WHERE class_id = 2", (np.ones(D, np.float32).tobytes(),))
    conn.commit()
    conn.close()
    with Gallery.open(path) as g, pytest.raises(OneshotError, match="an example of class 'c1' .*restore it from an export"):
        g.enrol_vectors(["c1"], v[1:2])
    res = CliRunner().invoke(app, ["gallery", "check", str(path)])
    assert res.exit_code == 2 and "1 example rows damaged (of class 'c1' (id 2))" in res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output


def test_writes_keep_rows_sealed(gallery):
    path, v = gallery
    with Gallery.open(path) as g:
        g.enrol_vectors(["c0"], v[1:2])  # refine
        g.rename("c2", "two")
        g.set_threshold(verify=0.0)
        g.set_adaptation("c4", 0.2)
        g.verify(v[4], "c4", confirm=True)  # an adaptation step
        g.forget("c3")
    assert integrity.check_file(path)["ok"]
    res = CliRunner().invoke(app, ["gallery", "check", str(path)])
    assert res.exit_code == 0 and "ok (4 classes, 5 examples, 11 meta entries verified)" in res.output
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM meta WHERE digest IS NULL").fetchone()[0] == 0
    conn.close()


def _as_schema(path, version: int) -> None:
    """Make ``path`` look as a gallery of an older schema wrote it: 2 has no meta digests, 1 no digests at all."""
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE meta DROP COLUMN digest")
    if version == 1:
        conn.execute("ALTER TABLE classes DROP COLUMN digest")
        conn.execute("ALTER TABLE examples DROP COLUMN digest")
    conn.execute("UPDATE schema_version SET version = ?", (version,))
    conn.commit()
    conn.close()


def _as_schema_1(path) -> None:
    _as_schema(path, 1)


def test_schema_1_gallery_is_migrated_on_first_writable_open(gallery):
    path, v = gallery
    _as_schema_1(path)
    before = path.read_bytes()
    res = CliRunner().invoke(app, ["gallery", "check", str(path)])  # only reads: no migration
    assert (
        res.exit_code == 0 and "schema 1, so its 5 classes, 5 examples and 11 meta entries carry no checksums yet" in res.output
    )
    with Gallery.open(path.with_name("dest.db"), dim=D) as dest:
        assert dest.import_from(path) == 5  # the source is only read: not migrated
    assert path.read_bytes() == before
    with Gallery.open(path, create=False) as g:
        assert [r.label for r in g.identify(v, k=1)] == [f"c{i}" for i in range(5)]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == store_file.SCHEMA_VERSION == 3
    assert conn.execute("SELECT COUNT(*) FROM classes WHERE digest IS NULL").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM examples WHERE digest IS NULL").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM meta WHERE digest IS NULL").fetchone()[0] == 0
    conn.close()
    assert integrity.check_file(path)["ok"]


def test_schema_1_gallery_opened_read_only_reads_unverified(gallery, monkeypatch):
    path, v = gallery
    _as_schema_1(path)
    monkeypatch.setattr(store_file, "_read_only_fs", lambda p: True)
    before = path.read_bytes()
    with Gallery.open(path, create=False) as g:
        assert not g.store.sealed and not g.store.writable
        assert [r.label for r in g.identify(v, k=1)] == [f"c{i}" for i in range(5)]
    assert path.read_bytes() == before


def test_missing_digest_in_a_sealed_file_is_refused(gallery):
    path, v = gallery
    conn = sqlite3.connect(path)
    conn.execute("UPDATE classes SET digest = NULL WHERE id = 1")
    conn.commit()
    conn.close()
    _refused(path, v, r"class 'c0' \(id 1\)")


# ---------------------------------------------------------------- meta (schema 3)
META_REFUSED = r"meta entry {}.*does not match its checksum.*restore it from an export"


def _with_threshold(path) -> None:
    with Gallery.open(path) as g:
        g.set_threshold(identify=0.4375, verify=0.625)  # exact in binary: their JSON text is known
    _checkpoint(path)


def test_flipped_threshold_byte_in_meta_is_refused(gallery):
    path, v = gallery
    _with_threshold(path)
    data = bytearray(path.read_bytes())
    pos = data.find(b"0.4375")
    assert pos >= 0 and data.find(b"0.4375", pos + 1) < 0
    data[pos + 5] ^= 0x04  # 0.4375 -> 0.4371: still valid JSON, a quietly lower threshold without the digest
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(OneshotError, match=META_REFUSED.format("'threshold'")) as err:
        Gallery.open(path, create=False)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    res = CliRunner().invoke(app, ["gallery", "check", str(path)])
    assert res.exit_code == 2 and "1 meta entries damaged ('threshold')" in res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert path.read_bytes() == before


def test_meta_edited_while_open_is_refused_when_read(gallery):
    path, v = gallery
    _with_threshold(path)
    with Gallery.open(path) as g:
        assert g.thresholds() == {"identify": 0.4375, "verify": 0.625}
        conn = sqlite3.connect(path)  # an edit outside oneshot, after the gallery was opened
        conn.execute("UPDATE meta SET value = replace(value, '0.625', '0.125') WHERE key = 'threshold'")
        conn.commit()
        conn.close()
        with pytest.raises(OneshotError, match=META_REFUSED.format("'threshold'")):
            g.verify(v[0], "c0")
        with pytest.raises(OneshotError, match=META_REFUSED.format("'threshold'")):
            g.identify(v, k=1)


@pytest.mark.parametrize("key", ["dim", "fingerprint", "index", "gallery_id"])
def test_meta_row_without_its_digest_is_refused(gallery, key):
    path, v = gallery
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET digest = NULL WHERE key = ?", (key,))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(OneshotError, match=META_REFUSED.format(f"'{key}'")):
        with Gallery.open(path, create=False) as g:
            g.identify(v, k=1)
    assert path.read_bytes() == before


def test_schema_2_gallery_is_migrated_on_first_writable_open(gallery, tmp_path):
    path, v = gallery
    _with_threshold(path)
    _as_schema(path, 2)
    before = path.read_bytes()
    res = CliRunner().invoke(app, ["gallery", "check", str(path)])  # only reads: no migration
    assert res.exit_code == 0 and "ok (5 classes, 5 examples verified); schema 2, so its 11 meta entries" in res.output
    with Gallery.open(tmp_path / "dest.db", dim=D) as dest:
        assert dest.import_from(path) == 5  # the source is only read: not migrated
    assert path.read_bytes() == before
    with Gallery.open(path, create=False) as g:
        assert g.thresholds() == {"identify": 0.4375, "verify": 0.625}
        assert [r.label for r in g.identify(v, k=1)] == [f"c{i}" for i in range(5)]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 3
    assert conn.execute("SELECT COUNT(*) FROM meta WHERE digest IS NULL").fetchone()[0] == 0
    conn.execute("UPDATE meta SET value = replace(value, '0.4375', '0.0625') WHERE key = 'threshold'")
    conn.commit()
    conn.close()
    with pytest.raises(OneshotError, match=META_REFUSED.format("'threshold'")):
        Gallery.open(path, create=False)


def test_schema_2_gallery_opened_read_only_is_left_unchanged(gallery, tmp_path, monkeypatch):
    path, v = gallery
    _with_threshold(path)
    _as_schema(path, 2)
    monkeypatch.setattr(store_file, "_read_only_fs", lambda p: True)
    before = path.read_bytes()
    with Gallery.open(path, create=False) as g:
        assert g.store.sealed and not g.store.meta_sealed and not g.store.writable
        assert g.thresholds() == {"identify": 0.4375, "verify": 0.625}
        assert [r.label for r in g.identify(v, k=1)] == [f"c{i}" for i in range(5)]
        copy = g.export(tmp_path / "copy.db")  # the copy is as old as its source ...
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("g.db")) == ["g.db"]
    monkeypatch.undo()
    with Gallery.open(copy, create=False) as c:  # ... and is migrated when first opened for writing
        assert c.store.meta_sealed and [r.label for r in c.identify(v, k=1)] == [f"c{i}" for i in range(5)]
    assert integrity.check_file(copy)["ok"]


def test_a_newer_schema_is_refused_untouched(gallery):
    path, _ = gallery
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 4")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(OneshotError, match=r"newer oneshot \(schema 4, this one reads 3\)"):
        Gallery.open(path, create=False)
    assert path.read_bytes() == before


def test_check_and_import_leave_an_exported_gallery_byte_identical(gallery, tmp_path):
    """Reading a file (``gallery check``, an import's source) never rewrites it, not even its journal mode."""
    path, v = gallery
    with Gallery.open(path, create=False) as g:
        export = g.export(tmp_path / "export.db")
    before = export.read_bytes()
    res = CliRunner().invoke(app, ["gallery", "check", str(export)])
    assert res.exit_code == 0 and "ok (5 classes, 5 examples" in res.output
    with Gallery.open(tmp_path / "dest.db", dim=D) as dest:
        assert dest.import_from(export) == 5
        assert [r.label for r in dest.identify(v, k=1)] == [f"c{i}" for i in range(5)]
    assert export.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("export.db")) == ["export.db"]
