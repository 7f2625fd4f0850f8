"""Gallery reliability: killed writers, concurrent processes, damaged or foreign files, bad input."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from gallery_util import file_digest, make_checkpoint, snapshot, unit, write_pngs

from oneshot import Gallery
from oneshot.errors import OneshotError

D = 8

BULK_WORKER = """
import sys
import numpy as np
from oneshot import Gallery

g = Gallery.open(sys.argv[1], dim=8)
i = len(g)
while True:
    items = [(f"c{i + j}", np.random.default_rng(i + j).normal(size=(3, 8))) for j in range(7)]
    g.enrol_many(items, batch=7)
    i += 7
    if i == 70:
        g.identify(np.ones((1, 8)))
        g.save_index()  # leave an index file behind that the kill makes stale
    print(i, flush=True)
"""


def _check_consistent(path):
    with Gallery.open(path) as g:
        classes = g.list()
        n = len(classes)
        assert n % 7 == 0  # whole transactions only
        assert sorted(c.label for c in classes) == sorted(f"c{i}" for i in range(n))
        for c in classes:
            i = int(c.label[1:])
            want = unit(np.random.default_rng(i).normal(size=(3, 8)))
            rows = g.store.conn.execute("SELECT embedding FROM examples WHERE class_id = ? ORDER BY id", (c.id,)).fetchall()
            assert c.n_examples == 3 and len(rows) == 3  # every enrolment wholly present
            np.testing.assert_allclose(np.stack([np.frombuffer(r[0], np.float32) for r in rows]), want, atol=1e-6)
        templates = unit(np.stack([unit(np.random.default_rng(i).normal(size=(3, 8))).mean(0) for i in range(n)]))
        res = g.identify(templates, k=1)
        assert [r.label for r in res] == [f"c{i}" for i in range(n)]  # the index matches the store
        assert g.index_cache.index.live == n
        return n


def test_sigkill_during_bulk_enrolment_leaves_whole_enrolments(tmp_path):
    path = tmp_path / "g.db"
    script = tmp_path / "worker.py"
    script.write_text(BULK_WORKER)
    counts = []
    for round_, wait_for in enumerate((140, 280, 420)):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if int(line) >= wait_for:
                    break
            time.sleep(0.003 * round_)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        counts.append(_check_consistent(path))
    assert counts[0] >= 140 and counts[-1] > counts[0]
    assert (tmp_path / "g.db.faiss").is_file()


CONCURRENT_WORKER = """
import sys
import numpy as np
from oneshot import Gallery

w = int(sys.argv[2])
with Gallery.open(sys.argv[1]) as g:
    for i in range(24):
        v = np.random.default_rng((w, i)).normal(size=8)
        g.enrol(f"w{w}-{i}", v)
        if i % 3 == 0:
            g.enrol("shared", np.random.default_rng((w, i, 1)).normal(size=8), check=False)
        got = g.identify(v[None], k=1)[0]
        if got.label != f"w{w}-{i}" or got.score < 0.9999:
            raise SystemExit(f"worker {w} lost its own class {i}: {got}")
"""


def test_concurrent_processes_lose_nothing(tmp_path):
    path = tmp_path / "g.db"
    Gallery.open(path, dim=D).close()
    script = tmp_path / "worker.py"
    script.write_text(CONCURRENT_WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(path), str(w)], stderr=subprocess.PIPE, text=True) for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=170)
        assert p.returncode == 0, err
    with Gallery.open(path) as g:
        assert len(g) == 3 * 24 + 1
        for w in range(3):
            v = unit(np.stack([np.random.default_rng((w, i)).normal(size=8) for i in range(24)]))
            assert [r.label for r in g.identify(v, k=1)] == [f"w{w}-{i}" for i in range(24)]
        shared = [c for c in g.list() if c.label == "shared"][0]
        assert shared.n_examples == 3 * 8
        want = unit(
            np.stack([unit(np.random.default_rng((w, i, 1)).normal(size=8)) for w in range(3) for i in range(0, 24, 3)]).mean(0)
        )
        t = np.frombuffer(
            g.store.conn.execute("SELECT template FROM classes WHERE id = ?", (shared.id,)).fetchone()[0], np.float32
        )
        np.testing.assert_allclose(t, want, atol=1e-5)


@pytest.fixture
def full_gallery(tmp_path):
    path = tmp_path / "g.db"
    with Gallery.open(path, dim=64) as g:
        g.enrol_vectors([f"c{i}" for i in range(300)], np.random.default_rng(0).normal(size=(300, 64)))
    return path


def _refused(path, match):
    before = file_digest(path)
    with pytest.raises(OneshotError, match=match):
        Gallery.open(path)
    assert file_digest(path) == before  # nothing overwritten
    assert not os.path.exists(f"{path}-wal") or os.path.getsize(f"{path}-wal") == 0


def test_truncated_gallery_is_refused_untouched(full_gallery):
    data = full_gallery.read_bytes()
    full_gallery.write_bytes(data[: len(data) // 2])
    _refused(full_gallery, "truncated")
    full_gallery.write_bytes(data[:50])
    _refused(full_gallery, "not a oneshot gallery")
    full_gallery.write_bytes(b"")
    _refused(full_gallery, "not a oneshot gallery")


def test_corrupt_gallery_is_refused_untouched(full_gallery):
    data = bytearray(full_gallery.read_bytes())
    data[:16] = b"garbage garbage!"
    full_gallery.write_bytes(bytes(data))
    _refused(full_gallery, "not a oneshot gallery")
    data[:16] = b"SQLite format 3\x00"
    page = int.from_bytes(data[16:18], "big")
    data[page * 2 : page * 4] = np.random.default_rng(0).integers(0, 256, page * 2, dtype=np.uint8).tobytes()
    full_gallery.write_bytes(bytes(data))
    _refused(full_gallery, "corrupt")


def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('x', '1')")
    conn.commit()
    conn.close()
    _refused(path, "not a oneshot gallery")
    assert not os.path.exists(f"{path}-wal")


def test_gallery_from_newer_schema_is_refused_untouched(full_gallery):
    conn = sqlite3.connect(full_gallery)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    _refused(full_gallery, "newer oneshot")


def test_bad_input_gives_clear_errors_and_leaves_gallery_unchanged(tmp_path):
    enc = make_checkpoint(tmp_path / "a.safetensors", 0)
    other = make_checkpoint(tmp_path / "b.safetensors", 1)
    rng = np.random.default_rng(0)
    files = write_pngs(tmp_path / "img", (rng.random((2, 1, 28, 28)) * 255).astype(np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    path = tmp_path / "g.db"
    with Gallery.open(path, encoder=enc) as g:
        g.enrol("x", [files[0]])
        dim = g.dim
    before = snapshot(path)
    nan = np.full(dim, np.nan)
    cases = [
        (lambda g: g.enrol("y", [files[1], bad]), "not a readable image"),
        (lambda g: g.enrol("y", [tmp_path / "missing.png"]), "does not exist"),
        (lambda g: g.enrol("y", []), "no examples"),
        (lambda g: g.enrol("x", [rng.normal(size=dim), nan]), "NaN"),
        (lambda g: g.enrol("y", rng.normal(size=dim + 1)), "shape"),
        (lambda g: g.enrol("y", np.zeros(dim)), "all-zero"),
        (lambda g: g.enrol("  ", [files[1]]), "non-empty"),
        (lambda g: g.identify(rng.normal(size=(2, dim - 1))), "shape"),
        (lambda g: g.identify([bad]), "not a readable image"),
        (lambda g: g.forget("nobody"), "no class 'nobody'"),
        (lambda g: g.set_threshold(identify=3.0), "cosine"),
    ]
    with Gallery.open(path) as g:
        for fn, match in cases:
            with pytest.raises(OneshotError, match=match):
                fn(g)
        g.set_threshold(verify=0.5)
    with Gallery.open(path) as g:
        with pytest.raises(OneshotError, match="no class 'nobody'"):
            g.verify(files[0], "nobody")
        with g.store.write() as tx:  # the threshold cleared again (meta rows carry digests: written through the store)
            tx.set_meta("threshold", None)
    with pytest.raises(OneshotError, match="reembed"):  # the same label from another encoder
        Gallery.open(path, encoder=other).enrol("x", [files[1]])
    after = snapshot(path)
    assert after["classes"] == before["classes"] and after["examples"] == before["examples"]
    assert after["generation"] == before["generation"]
