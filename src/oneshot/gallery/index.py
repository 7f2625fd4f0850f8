"""The FAISS search index over class templates: a cache of the SQLite store, never the truth.

Exact below a size the user sets, approximate above it (the approximate kind is a per-gallery setting):
    * ``exact``: ``IndexIDMap2(IndexFlatIP)`` on L2-normalised templates -- inner product is cosine
      similarity; ids are the classes' SQLite ids, so they survive removals of other classes.
    * ``hnsw`` (the default approximate kind): ``IndexIDMap(IndexHNSWFlat(M, inner product))`` (Malkov &
      Yashunin 2018). HNSW cannot remove vectors, so a changed or forgotten class is *tombstoned* in the graph
      (excluded at search time with an ``IDSelectorNot``) and its current template lives in a small exact
      ``delta`` index; the graph is rebuilt when tombstones exceed a fraction of it.
    * ``hnsw_sq8``: the same graph over 8-bit scalar-quantised vectors (``IndexHNSWSQ``).
    * ``ivf_flat``, ``ivf_sq8``, ``ivf_pq``: an inverted file (Jegou et al. 2011; coarse k-means with
      ``sqrt(N)`` lists, ``nprobe`` of them scanned) holding the float vectors, 8-bit scalar codes or product
      codes (``pq_m`` bytes per vector). IVF removes vectors itself, so no tombstones are needed; the coarse
      quantiser is retrained (a rebuild) when the index has grown 4x since it was trained.

Quantised kinds (``hnsw_sq8``, ``ivf_sq8``, ``ivf_pq``) re-rank exactly when ``refine_factor`` > 0: the index
returns ``refine_factor * k`` candidates, which are rescored against float32 copies of the templates kept in
memory (an array indexed by class id), so returned scores are exact cosines.

New classes always have ids above every id already indexed (AUTOINCREMENT), so an update can tell in O(1)
whether an id may be in the index (``id <= max_id``) and pure additions never pay for a removal.

The index file holds a small JSON header (kind, dim, epoch, generation, max id, tombstones) and the
serialised FAISS indexes; it is written atomically and, when its epoch or dim differ from the gallery or it
does not load, it is ignored and rebuilt.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from oneshot.files import atomic_write_bytes
from oneshot.gallery.index_file import frame, header_fields, read_frame
from oneshot.gallery.index_settings import APPROX_KINDS, MIN_IVF, QUANTISED_KINDS, IndexSettings

FILE_MAGIC = b"ONESHOT-GALLERY-INDEX\x00"
INDEX_FORMAT = 1  # exact and hnsw files (unchanged, so older versions keep reading them)
INDEX_FORMAT_V2 = 2  # the other approximate kinds: the header also records the refine vectors' blob


def _exact(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _ivf(kind: str, dim: int, n: int, settings: IndexSettings) -> faiss.Index:
    """An untrained IVF index with ``round(sqrt(n))`` lists (ids stored in the lists themselves)."""
    nlist = max(1, int(round(np.sqrt(n))))
    quantiser = faiss.IndexFlatIP(dim)
    ip = faiss.METRIC_INNER_PRODUCT
    index: faiss.Index
    if kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantiser, dim, nlist, ip)
    elif kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(quantiser, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    else:
        if dim % settings.pq_m:
            raise ValueError(f"pq_m={settings.pq_m} does not divide the dimension {dim}")
        index = faiss.IndexIVFPQ(quantiser, dim, nlist, settings.pq_m, 8, ip)
    return index  # faiss's Python wrapper keeps the quantiser alive with the index


class TemplateIndex:
    """Top-k inner-product search over (id, template) pairs; ``templates`` are L2-normalised float32 (N, D)."""

    def __init__(self, dim: int, kind: str, settings: IndexSettings, train: np.ndarray | None = None) -> None:
        """An empty index; IVF and quantised kinds are trained on ``train`` (T, D) float32 (required for them)."""
        if kind not in ("exact", *APPROX_KINDS):
            raise ValueError(f"unknown index kind {kind!r}")
        self.dim = dim
        self.kind = kind
        self.settings = settings
        self.max_id = 0
        self.trained_n = 0
        self.tombstones: set[int] = set()
        self.delta = _exact(dim)
        # float32 copies indexed by class id, for exact re-ranking (quantised kinds with refine_factor > 0)
        self.vectors: np.ndarray | None = None
        self.main: Any  # an IndexIDMap(2) around flat or HNSW, or an IVF index (FAISS's stubs only know Index)
        if kind == "exact":
            self.main = _exact(dim)
        elif kind in ("hnsw", "hnsw_sq8"):
            hnsw: Any  # FAISS's type stubs know neither the graph attribute nor IndexHNSWSQ's arguments
            if kind == "hnsw":
                hnsw = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            else:
                hnsw = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)  # type: ignore[arg-type]
                hnsw.train(self._train_sample(train))
            hnsw.hnsw.efConstruction = settings.ef_construction
            hnsw.hnsw.efSearch = settings.ef_search
            self.main = faiss.IndexIDMap(hnsw)
        else:
            sample = self._train_sample(train)
            assert train is not None
            self.main = _ivf(kind, dim, len(train), settings)
            self.main.train(sample)
            self.trained_n = len(train)
        if kind in QUANTISED_KINDS and settings.refine_factor > 0:
            self.vectors = np.zeros((0, dim), np.float32)

    def _train_sample(self, train: np.ndarray | None) -> np.ndarray:
        """At most 100,000 rows of ``train`` (a fixed-seed subsample): enough for sqrt(N) lists or 8-bit codes."""
        if train is None or len(train) == 0:
            raise ValueError(f"a {self.kind} index needs training vectors")
        if len(train) > 100000:
            train = train[np.random.default_rng(0).choice(len(train), 100000, replace=False)]
        return np.ascontiguousarray(train, dtype=np.float32)

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, templates: np.ndarray, settings: IndexSettings) -> TemplateIndex:
        """A fresh index of the right kind for ``len(ids)`` classes. ids (N,) int64, templates (N, D) float32."""
        kind = settings.kind_for(len(ids))
        index = cls(dim, kind, settings, train=templates if kind not in ("exact", "hnsw") else None)
        index.add_new(ids, templates)
        return index

    @property
    def removes_in_place(self) -> bool:
        """Exact and IVF indexes remove vectors themselves; HNSW kinds tombstone them."""
        return self.kind == "exact" or self.kind.startswith("ivf")

    # ------------------------------------------------------------------ size
    @property
    def live(self) -> int:
        """Number of classes the index answers for."""
        return int(self.main.ntotal) - len(self.tombstones) + int(self.delta.ntotal)

    def nbytes(self) -> int:
        """Approximate memory held by the index (vectors, ids and graph links)."""
        n_main, n_delta = int(self.main.ntotal), int(self.delta.ntotal)
        total = n_delta * (self.dim * 4 + 8)
        if self.kind == "exact":
            total += n_main * (self.dim * 4 + 8)
        elif self.kind.startswith("hnsw"):
            inner: Any = faiss.downcast_index(self.main.index)  # HNSW; FAISS's stubs only know Index
            code = self.dim * 4 if self.kind == "hnsw" else inner.storage.sa_code_size()
            total += n_main * (code + 8)
            hnsw = inner.hnsw
            total += faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.levels).nbytes
            total += faiss.vector_to_array(hnsw.offsets).nbytes
        else:
            ivf = faiss.extract_index_ivf(self.main)
            total += n_main * (ivf.code_size + 8) + ivf.nlist * self.dim * 4
            if self.kind == "ivf_pq":
                pq: Any = faiss.downcast_index(ivf)  # IndexIVFPQ; FAISS's stubs only know Index
                total += faiss.vector_to_array(pq.pq.centroids).nbytes
        if self.vectors is not None:
            total += self.vectors.nbytes
        return total

    def wants_rebuild(self, n_classes: int) -> bool:
        """True when the index kind no longer fits the size, or tombstones have piled up."""
        s = self.settings
        if self.kind == "exact":
            return s.kind_for(n_classes) != "exact"
        if self.kind != s.approx_kind or (self.vectors is not None) != s.refines:
            return True  # the gallery's index settings changed
        if n_classes <= s.approx_above // 2:
            return True
        if self.kind.startswith("ivf"):
            return n_classes > 4 * max(self.trained_n, MIN_IVF)  # coarse quantiser trained on far fewer
        return len(self.tombstones) > max(1000, s.rebuild_fraction * self.main.ntotal)

    # ------------------------------------------------------------------ updates
    def add_new(self, ids: np.ndarray, templates: np.ndarray) -> None:
        """Add classes whose ids are all above :attr:`max_id`. ids (N,), templates (N, D)."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        templates = np.ascontiguousarray(templates, dtype=np.float32)
        self.main.add_with_ids(templates, ids)
        self.max_id = max(self.max_id, int(ids.max()))
        self._store_vectors(ids, templates)

    def _store_vectors(self, ids: np.ndarray, templates: np.ndarray) -> None:
        """Keep float copies for re-ranking: ids (N,), templates (N, D); the array grows by doubling."""
        if self.vectors is None or len(ids) == 0:
            return
        need = int(ids.max()) + 1
        if need > len(self.vectors):
            grown = np.zeros((max(need, min(2 * len(self.vectors), need + 1_000_000)), self.dim), np.float32)
            grown[: len(self.vectors)] = self.vectors
            self.vectors = grown
        self.vectors[ids] = templates

    def apply(self, changed: np.ndarray, present_ids: np.ndarray, templates: np.ndarray) -> None:
        """Bring the index up to date for the classes in ``changed`` (N,): those in ``present_ids`` (M,) now
        have ``templates`` (M, D); the others were removed."""
        changed = np.unique(np.asarray(changed, dtype=np.int64))
        present_ids = np.asarray(present_ids, dtype=np.int64)
        old = changed[changed <= self.max_id]
        if len(old):
            if self.removes_in_place:
                self.main.remove_ids(faiss.IDSelectorBatch(old))
            else:
                self.delta.remove_ids(faiss.IDSelectorBatch(old))
                self.tombstones.update(int(i) for i in old)
        is_old = present_ids <= self.max_id
        if is_old.any():
            target = self.main if self.removes_in_place else self.delta
            olds = np.ascontiguousarray(templates[is_old], dtype=np.float32)
            target.add_with_ids(olds, present_ids[is_old])
            self._store_vectors(present_ids[is_old], olds)
        self.add_new(present_ids[~is_old], templates[~is_old])

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: queries (B, D) L2-normalised -> scores (B, k) float32 descending, ids (B, k) int64 (-1 pads)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "exact":
            return self.main.search(q, k)
        kk = k * self.settings.refine_factor if self.vectors is not None else k
        if self.kind.startswith("hnsw"):
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from FAISS's stubs
            params.efSearch = max(self.settings.ef_search, kk)
            if self.tombstones:
                batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones)))
                params.sel = faiss.IDSelectorNot(batch)
            scores, ids = self.main.search(q, kk, params=params)
        else:
            scores, ids = self.main.search(q, kk, params=faiss.SearchParametersIVF(nprobe=self.settings.nprobe))  # type: ignore[call-arg]
        if self.vectors is not None:
            scores, ids = self._rerank(q, ids, k)
        if self.delta.ntotal:
            ds, di = self.delta.search(q, min(k, int(self.delta.ntotal)))
            scores = np.concatenate([scores, ds], 1)
            ids = np.concatenate([ids, di], 1)
            scores = np.where(ids < 0, -np.inf, scores)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(scores, order, 1)
            ids = np.take_along_axis(ids, order, 1)
        return scores.astype(np.float32), ids

    def _rerank(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among candidates: q (B, D), ids (B, K') with -1 pads -> scores (B, k), ids (B, k)."""
        assert self.vectors is not None
        exact = np.einsum("bkd,bd->bk", self.vectors[np.maximum(ids, 0)], q)
        exact = np.where(ids < 0, -np.inf, exact)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(ids, order, 1)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, epoch: int, generation: int) -> None:
        """Write the index atomically and durably (:func:`oneshot.files.atomic_write_bytes`) with its epoch and generation."""
        fields = header_fields(INDEX_FORMAT, self, epoch, generation)
        fields["tombstones"] = sorted(self.tombstones)
        vectors = b"" if self.vectors is None else self.vectors[: self.max_id + 1].tobytes()
        if self.kind not in ("exact", "hnsw"):
            fields.update(
                format=INDEX_FORMAT_V2, trained_n=self.trained_n, vectors_bytes=len(vectors), refine=self.vectors is not None
            )
        main = faiss.serialize_index(self.main).tobytes()
        delta = faiss.serialize_index(self.delta).tobytes()
        atomic_write_bytes(path, frame(FILE_MAGIC, fields, [main, delta], [vectors]))

    @classmethod
    def load(cls, path: Path, settings: IndexSettings) -> tuple[TemplateIndex, int, int] | None:
        """(index, epoch, generation) from ``path``, or None when missing, damaged or foreign."""
        try:
            header, (main_bytes, delta_bytes), rest = read_frame(path, FILE_MAGIC, 3)
            main = np.frombuffer(main_bytes, dtype=np.uint8)
            delta = np.frombuffer(delta_bytes, dtype=np.uint8)
            n_vectors = int(header.get("vectors_bytes", 0))
            vectors = rest[:n_vectors]
            if header.get("format") not in (INDEX_FORMAT, INDEX_FORMAT_V2):
                return None
            if header["kind"] not in ("exact", *APPROX_KINDS) or len(vectors) != n_vectors:
                return None
            index = cls.__new__(cls)
            index.dim = int(header["dim"])
            index.kind = header["kind"]
            index.settings = settings
            index.max_id = int(header["max_id"])
            index.trained_n = int(header.get("trained_n", 0))
            index.tombstones = set(int(i) for i in header["tombstones"])
            index.main = faiss.deserialize_index(main)
            index.delta = faiss.deserialize_index(delta)
            index.vectors = None
            if header.get("refine"):
                index.vectors = np.frombuffer(vectors, dtype=np.float32).reshape(-1, index.dim).copy()
                if len(index.vectors) != index.max_id + 1:
                    return None
            if index.main.d != index.dim or index.delta.d != index.dim:
                return None
            if index.kind.startswith("hnsw"):
                graph: Any = faiss.downcast_index(index.main.index)  # HNSW; FAISS's stubs only know Index
                graph.hnsw.efSearch = settings.ef_search
            return index, int(header["epoch"]), int(header["generation"])
        except (OSError, ValueError, KeyError, RuntimeError, struct.error, json.JSONDecodeError):
            return None


def index_class(fingerprint: dict) -> type[Any]:
    """The index kind a gallery's embedder asks for: its fingerprint's ``similarity`` (``cosine`` when absent,
    :class:`TemplateIndex`; ``tanimoto``, :class:`~oneshot.gallery.tanimoto.TanimotoIndex` over the bits)."""
    similarity = fingerprint.get("similarity", "cosine")
    if similarity == "tanimoto":
        from oneshot.gallery.tanimoto import TanimotoIndex

        return TanimotoIndex
    if similarity != "cosine":
        raise ValueError(f"unknown similarity {similarity!r} in the gallery's fingerprint")
    return TemplateIndex


def pair_similarities(fingerprint: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The gallery's scores (Q, T) of its vectors ``a`` (Q, D) against ``b`` (T, D): cosine (inner product of
    unit vectors), or Tanimoto of their bits."""
    if fingerprint.get("similarity", "cosine") == "tanimoto":
        from oneshot.gallery.tanimoto import pack_bits, tanimoto

        return tanimoto(pack_bits(a), pack_bits(b))
    return np.asarray(a, np.float32) @ np.asarray(b, np.float32).T
