"""Approximate index kinds (issue 16): each answers like exact search, survives forget / refine / reopen,
is recorded per gallery, and galleries made before the setting keep today's HNSW index."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_util import unit

from oneshot import Gallery
from oneshot.errors import OneshotError
from oneshot.gallery.index import APPROX_KINDS, IndexSettings, TemplateIndex

D = 32
N = 1500  # IVF kinds need MIN_IVF (1000) classes to train on


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(N, D)))
    q = unit(x[:300] + 0.35 * unit(rng.normal(size=(300, D))))  # new examples of enrolled classes
    return x, q


@pytest.mark.parametrize("kind", APPROX_KINDS)
def test_kind_matches_exact_search_and_keeps_up(kind, data, tmp_path):
    x, q = data
    labels = [f"c{i}" for i in range(N)]
    path = tmp_path / "g.db"
    with Gallery.open(path, dim=D, approx_above=100, approx_kind=kind) as g:
        g.enrol_vectors(labels, x)
        assert g.info()["index"]["kind"] == kind and g.info()["index"]["approx_kind"] == kind
        res = g.identify(q, k=1)
        assert np.mean([r.label == f"c{i}" for i, r in enumerate(res)]) >= 0.97
        if kind in ("hnsw", "hnsw_sq8") or g.settings.refines or kind == "ivf_flat":  # exact scores
            for i, r in enumerate(res[:50]):
                if r.label == f"c{i}":
                    assert r.score == pytest.approx(float(q[i] @ x[i]), abs=1e-5)
        for i in range(10):
            g.forget(f"c{i}")
        g.enrol("c20", -x[20], check=False)  # refine c20 far away: its template becomes (x - x) -> new example only
        got = [r.label for r in g.identify(q[:30], k=1)]
        assert not any(lab in {f"c{i}" for i in range(10)} for lab in got)
        assert got[20] != "c20"
        assert len(g) == N - 10
    with Gallery.open(path) as g:  # the saved index reloads as the same kind and gives the same answers
        assert g.settings.approx_kind == kind
        assert [r.label for r in g.identify(q[:30], k=1)] == got
        assert g.index_cache.index is not None and g.index_cache.index.kind == kind


def test_old_gallery_settings_reproduce_todays_index():
    old = {"approx_above": 20000, "hnsw_m": 32, "ef_construction": 80, "ef_search": 128, "rebuild_fraction": 0.1}
    s = IndexSettings.from_dict(old)
    assert s.approx_kind == "hnsw" and s.kind_for(30000) == "hnsw" and s.kind_for(20000) == "exact"
    assert IndexSettings.from_dict(None) == IndexSettings()


def test_changing_the_kind_rebuilds_and_bad_settings_are_refused(data, tmp_path):
    x, _ = data
    path = tmp_path / "g.db"
    with Gallery.open(path, dim=D, approx_above=100) as g:
        g.enrol_vectors([f"c{i}" for i in range(N)], x)
        assert g.info()["index"]["kind"] == "hnsw"
        g.set_index_settings(approx_kind="ivf_sq8", nprobe=8)
        assert g.info()["index"]["kind"] == "ivf_sq8"
        before = path.read_bytes()
        with pytest.raises(OneshotError, match="unknown index kind"):
            g.set_index_settings(approx_kind="lsh")
        with pytest.raises(OneshotError, match="nprobe"):
            g.set_index_settings(nprobe=0)
        assert g.settings.approx_kind == "ivf_sq8"
    assert Gallery.open(path).settings.nprobe == 8
    with pytest.raises(OneshotError, match="unknown index kind"):
        Gallery.open(tmp_path / "new.db", dim=D, approx_kind="lsh")
    assert not (tmp_path / "new.db").exists()
    assert len(before) > 0


def test_quantised_memory_and_rerank(data):
    """Re-ranking restores exact scores; without it the 8-bit index holds a quarter of the float vectors."""
    x, q = data
    ids = np.arange(1, N + 1)
    exact = TemplateIndex.build(D, ids, x, IndexSettings(approx_above=10**9))
    es, ei = exact.search(q, 5)
    refined = TemplateIndex.build(D, ids, x, IndexSettings(approx_above=0, approx_kind="ivf_sq8", refine_factor=4, nprobe=64))
    rs, ri = refined.search(q, 5)
    assert np.array_equal(ri[:, 0], ei[:, 0]) and np.allclose(rs[:, 0], es[:, 0], atol=1e-5)
    plain = TemplateIndex.build(D, ids, x, IndexSettings(approx_above=0, approx_kind="ivf_sq8", refine_factor=0, nprobe=64))
    assert plain.vectors is None and plain.nbytes() < 0.5 * x.nbytes < refined.nbytes()
