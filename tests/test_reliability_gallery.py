"""Issue 11, gallery side: re-embedding against concurrent writers, the index cache bound to its gallery and
checked, imports validated all or nothing, failing commands that leave stored data as it was."""

from __future__ import annotations

import numpy as np
import pytest
from reliability_util import HashEmbedder

from oneshot import Gallery
from oneshot.errors import OneshotError


def _stored(g: Gallery) -> list[tuple[int, bytes, bytes]]:
    return g.store.conn.execute("SELECT class_id, input, embedding FROM examples ORDER BY id").fetchall()


def test_reembed_racing_an_enrolment_spoils_nothing(tmp_path):
    """An enrolment committed while a re-embed is embedding is re-embedded too (failed on the old code: the
    late example kept the old encoder's vector under the new fingerprint)."""
    path = tmp_path / "g.db"
    old, new = HashEmbedder(1), HashEmbedder(2)
    with Gallery.open(path, old) as g:
        for i in range(6):
            g.enrol(f"c{i}", [f"c{i}-a".encode(), f"c{i}-b".encode()], check=False)

    def enrol_meanwhile() -> None:  # another writer (own connection) enrols with the old encoder
        with Gallery.open(path, HashEmbedder(1)) as other:
            other.enrol("late", [b"late-a", b"late-b"], check=False)
            other.enrol("c0", [b"c0-c"], check=False)

    with Gallery.open(path, old) as g:
        g.reembed(HashEmbedder(2, hook=enrol_meanwhile))
    with Gallery.open(path, new) as g:
        rows = _stored(g)
        assert len(rows) == 15
        for _, data, emb in rows:  # every example holds the new encoder's vector of its own input
            np.testing.assert_allclose(np.frombuffer(emb, np.float32), new.vector(data), atol=1e-6)
        for label, first in [("late", b"late-a"), ("c0", b"c0-a"), ("c3", b"c3-a")]:
            assert g.identify(new.vector(first)[None], k=1)[0].candidates[0].label == label


def test_enrolment_prepared_before_a_reembed_is_refused(tmp_path):
    """An enrolment embedded with the old encoder that commits after a re-embed is refused, nothing written."""
    path = tmp_path / "g.db"
    with Gallery.open(path, HashEmbedder(1)) as g:
        g.enrol("a", [b"a"], check=False)

    def reembed_meanwhile() -> None:
        with Gallery.open(path, HashEmbedder(1)) as other:
            other.reembed(HashEmbedder(2))

    with Gallery.open(path, HashEmbedder(1, hook=reembed_meanwhile)) as g:
        with pytest.raises(OneshotError, match="re-embedded"):
            g.enrol("b", [b"b"], check=False)
    with Gallery.open(path, HashEmbedder(2)) as g:
        assert [c.label for c in g.list()] == ["a"]
        np.testing.assert_allclose(np.frombuffer(_stored(g)[0][2], np.float32), HashEmbedder(2).vector(b"a"), atol=1e-6)


def _vector_gallery(path, labels, seed, dim=8):
    vecs = np.random.default_rng(seed).normal(size=(len(labels), dim)).astype(np.float32)
    with Gallery.open(path, dim=dim) as g:
        g.enrol_vectors(labels, vecs)
        g.identify(vecs[:1])  # builds the index; close() saves <path>.faiss
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _answers_correctly(path, labels, vecs):
    with Gallery.open(path, create=False) as g:
        res = g.identify(vecs, k=2)
    assert [r.label for r in res] == list(labels)
    assert all(c.score <= 1.0001 for r in res for c in r.candidates)


def test_index_cache_of_another_gallery_is_not_trusted(tmp_path):
    """A gallery file replaced by another of the same size: the old cache must not answer for it (failed on the
    old code: wrong labels and scores above 1)."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _vector_gallery(a, [f"a{i}" for i in range(20)], 0)
    vb = _vector_gallery(b, [f"b{i}" for i in range(20)], 1)
    assert a.stat().st_size == b.stat().st_size and (tmp_path / "a.db.faiss").is_file()
    a.write_bytes(b.read_bytes())  # a.db.faiss stays: another gallery's cache now sits beside it
    _answers_correctly(a, [f"b{i}" for i in range(20)], vb)


def test_export_is_another_gallery_for_the_cache(tmp_path):
    a = tmp_path / "a.db"
    v = _vector_gallery(a, [f"c{i}" for i in range(10)], 0)
    with Gallery.open(a) as g:
        g.export(tmp_path / "copy.db")
        g.forget("c3")
    (tmp_path / "copy.db.faiss").write_bytes((tmp_path / "a.db.faiss").read_bytes())
    _answers_correctly(tmp_path / "copy.db", [f"c{i}" for i in range(10)], v)


@pytest.mark.parametrize("damage", ["flip", "header", "sizes", "truncate", "append"])
def test_damaged_index_cache_is_rebuilt(tmp_path, damage):
    import json
    import struct

    path = tmp_path / "g.db"
    labels = [f"c{i}" for i in range(30)]
    v = _vector_gallery(path, labels, 0)
    cache = tmp_path / "g.db.faiss"
    data = bytearray(cache.read_bytes())
    rng = np.random.default_rng(0)
    if damage == "flip":
        for pos in rng.integers(200, len(data), 20):
            data[pos] ^= 0xFF
    elif damage == "header":  # an edited header field, the checksum left as it was
        n = struct.unpack("<Q", data[22:30])[0]
        head = json.loads(bytes(data[46 : 46 + n]))
        head["max_id"] = 1
        new = json.dumps(head).encode().ljust(n)[:n]
        data[46 : 46 + n] = new
    elif damage == "sizes":
        data[30:38] = struct.pack("<Q", 1 << 60)
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data += b"\0" * 100
    cache.write_bytes(bytes(data))
    _answers_correctly(path, labels, v)


def test_index_cache_that_cannot_be_written_says_why_and_reads_work(tmp_path, monkeypatch):
    import errno

    import oneshot.gallery.index as index_mod
    from oneshot.errors import OneshotWarning

    path = tmp_path / "g.db"
    labels = [f"c{i}" for i in range(5)]
    v = _vector_gallery(path, labels, 0)
    (tmp_path / "g.db.faiss").unlink()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_mod, "atomic_write_bytes", full)
    before = path.read_bytes()
    with pytest.warns(OneshotWarning, match="no space left"):
        _answers_correctly(path, labels, v)
    with pytest.warns(OneshotWarning), Gallery.open(path, create=False) as g:
        with pytest.raises(OneshotError, match="no space left"):
            g.save_index()
    assert not (tmp_path / "g.db.faiss").exists()
    assert path.read_bytes() == before


def _bad_source(tmp_path, name, edit):
    """A vector gallery of two good classes and one class made bad by ``edit(conn)`` (raw SQL, as an attacker)."""
    import sqlite3

    path = tmp_path / name
    with Gallery.open(path, dim=8) as g:
        g.enrol_vectors(["ok1", "ok2", "bad"], np.eye(8)[:3])
    conn = sqlite3.connect(path)
    edit(conn)
    conn.commit()
    conn.close()
    return path


NAN = np.full(8, np.nan, np.float32).tobytes()


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE examples SET embedding = ? WHERE class_id = 3",
        "UPDATE examples SET embedding = zeroblob(32) WHERE class_id = 3",
        "UPDATE examples SET embedding = zeroblob(12) WHERE class_id = 3",
        "UPDATE examples SET embedding = 'text' WHERE class_id = 3",
        "UPDATE classes SET label = 'a' || char(27) || '[31mred' WHERE id = 3",
        "UPDATE classes SET label = 'two' || char(10) || 'lines' WHERE id = 3",
        "UPDATE classes SET label = printf('%.5000c', 'x') WHERE id = 3",
        "UPDATE classes SET label = 'ev' || char(8238) || 'il' WHERE id = 3",
        "UPDATE classes SET metadata = '{not json' WHERE id = 3",
        "UPDATE classes SET metadata = '[1, 2]' WHERE id = 3",
    ],
)
def test_import_validates_every_row_all_or_nothing(tmp_path, edit):
    src = _bad_source(tmp_path, "src.db", lambda c: c.execute(edit, (NAN,)) if "?" in edit else c.execute(edit))
    dest = tmp_path / "dest.db"
    with Gallery.open(dest, dim=8) as g:
        g.enrol_vectors(["mine"], np.ones((1, 8)))
    from gallery_util import snapshot

    before = snapshot(dest)
    with Gallery.open(dest) as g:
        with pytest.raises(OneshotError):
            g.import_from(src, on_conflict="merge")
    assert snapshot(dest) == before


def test_import_into_itself_is_refused(tmp_path):
    from gallery_util import snapshot

    path = tmp_path / "g.db"
    with Gallery.open(path, dim=8) as g:
        g.enrol_vectors(["a", "b"], np.eye(8)[:2])
    before = snapshot(path)
    with Gallery.open(path) as g:
        with pytest.raises(OneshotError, match="this gallery"):
            g.import_from(path, on_conflict="merge")
        with pytest.raises(OneshotError, match="this gallery"):
            g.import_from(tmp_path / "." / "g.db", on_conflict="merge")
    import shutil

    shutil.copy(path, tmp_path / "copy.db")
    with Gallery.open(path) as g:
        with pytest.raises(OneshotError, match="same file"):
            g.import_from(tmp_path / "copy.db", on_conflict="merge")
    assert snapshot(path) == before


@pytest.mark.parametrize("label", ["a\u200bb", "ab\u202e", "x\ny", "\x1b[31mred", " lead", "trail ", "a\u00a0b", "x" * 257, ""])
def test_invisible_or_ambiguous_labels_are_refused(tmp_path, label):
    with Gallery.open(tmp_path / "g.db", dim=8) as g:
        with pytest.raises(OneshotError):
            g.enrol(label, np.ones(8))
        assert len(g) == 0


def test_labels_are_nfc_normalised(tmp_path):
    with Gallery.open(tmp_path / "g.db", dim=8) as g:
        g.enrol("Zo\u00eb", np.ones(8), check=False)  # composed
        g.enrol("Zoe\u0308", np.eye(8)[0], check=False)  # decomposed: the same label
        assert [(c.label, c.n_examples) for c in g.list()] == [("Zo\u00eb", 2)]
        g.forget("Zoe\u0308")
        assert len(g) == 0


def test_enrol_folder_with_a_bad_image_in_the_last_class_writes_nothing(tmp_path):
    """Failed on the old code: the first classes were committed before the bad image stopped the command."""
    from gallery_util import file_digest, make_checkpoint, write_pngs
    from typer.testing import CliRunner

    from oneshot.cli import app

    ckpt = make_checkpoint(tmp_path / "enc.safetensors", 0)
    imgs = (np.random.default_rng(0).random((6, 1, 28, 28)) * 255).astype(np.uint8)
    people = tmp_path / "people"
    for i, name in enumerate(["a", "b", "c"]):
        write_pngs(people / name, imgs[2 * i : 2 * i + 2])
    good = (people / "c" / "img0000.png").read_bytes()
    (people / "c" / "zz_bad.png").write_bytes(good[: len(good) // 2])  # a PNG cut in half
    gal = tmp_path / "g.db"
    runner = CliRunner()
    assert runner.invoke(app, ["gallery", "create", str(gal), "--encoder", str(ckpt)]).exit_code == 0
    before = file_digest(gal)
    res = runner.invoke(app, ["gallery", "enrol", str(gal), "--folder", str(people)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("error:")] == [res.output.splitlines()[-1]]
    assert file_digest(gal) == before
    with Gallery.open(gal) as g:
        assert len(g) == 0


@pytest.mark.parametrize("args", [["--approx-above", "-1"], ["--store", "everything"], ["--encoder", "no-such-encoder"]])
def test_failed_create_leaves_no_file(tmp_path, args):
    from gallery_util import make_checkpoint
    from typer.testing import CliRunner

    from oneshot.cli import app

    ckpt = make_checkpoint(tmp_path / "enc.safetensors", 0)
    gal = tmp_path / "g.db"
    cmd = ["gallery", "create", str(gal)] + (["--encoder", str(ckpt)] if "--encoder" not in args else []) + args
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 2 and "error:" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.safetensors"]
