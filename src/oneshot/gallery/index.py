"""The FAISS search index over class templates: a cache of the SQLite store, never the truth.

Two kinds, chosen by gallery size:
    * ``exact``: ``IndexIDMap2(IndexFlatIP)`` on L2-normalised templates -- inner product is cosine
      similarity; ids are the classes' SQLite ids, so they survive removals of other classes.
    * ``hnsw``: ``IndexIDMap(IndexHNSWFlat(M, inner product))`` above a size the user sets. HNSW cannot
      remove vectors, so a changed or forgotten class is *tombstoned* in the graph (excluded at search time
      with an ``IDSelectorNot``) and its current template lives in a small exact ``delta`` index; the graph
      is rebuilt when tombstones exceed a fraction of it.

New classes always have ids above every id already indexed (AUTOINCREMENT), so an update can tell in O(1)
whether an id may be in the index (``id <= max_id``) and pure additions never pay for a removal.

The index file holds a small JSON header (kind, dim, epoch, generation, max id, tombstones) and the
serialised FAISS indexes; it is written atomically and, when its epoch or dim differ from the gallery or it
does not load, it is ignored and rebuilt.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from oneshot.files import atomic_write_bytes

FILE_MAGIC = b"ONESHOT-GALLERY-INDEX\x00"
INDEX_FORMAT = 1


@dataclass
class IndexSettings:
    """When and how to search approximately.

    Attributes:
        approx_above: use HNSW once the gallery holds more than this many classes (exact below).
        hnsw_m: HNSW graph degree (memory: about 2*M*4 bytes per template on top of the vector).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width (higher: better recall, slower).
        rebuild_fraction: rebuild the HNSW graph when tombstones exceed this fraction of it.
    """

    approx_above: int = 20000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    rebuild_fraction: float = 0.1

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict | None) -> "IndexSettings":
        d = d or {}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in cls.__dataclass_fields__})


def _exact(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class TemplateIndex:
    """Top-k inner-product search over (id, template) pairs; ``templates`` are L2-normalised float32 (N, D)."""

    def __init__(self, dim: int, kind: str, settings: IndexSettings) -> None:
        if kind not in ("exact", "hnsw"):
            raise ValueError(f"unknown index kind {kind!r}")
        self.dim = dim
        self.kind = kind
        self.settings = settings
        self.max_id = 0
        self.tombstones: set[int] = set()
        self.delta = _exact(dim)
        if kind == "exact":
            self.main = _exact(dim)
        else:
            hnsw = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = settings.ef_construction
            hnsw.hnsw.efSearch = settings.ef_search
            self.main = faiss.IndexIDMap(hnsw)

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, templates: np.ndarray, settings: IndexSettings) -> "TemplateIndex":
        """A fresh index of the right kind for ``len(ids)`` classes. ids (N,) int64, templates (N, D) float32."""
        kind = "hnsw" if len(ids) > settings.approx_above else "exact"
        index = cls(dim, kind, settings)
        index.add_new(ids, templates)
        return index

    # ------------------------------------------------------------------ size
    @property
    def live(self) -> int:
        """Number of classes the index answers for."""
        return int(self.main.ntotal) - len(self.tombstones) + int(self.delta.ntotal)

    def nbytes(self) -> int:
        """Approximate memory held by the index (vectors, ids and graph links)."""
        n = int(self.main.ntotal) + int(self.delta.ntotal)
        total = n * (self.dim * 4 + 8)
        if self.kind == "hnsw":
            hnsw = faiss.downcast_index(self.main.index).hnsw
            total += faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.levels).nbytes
            total += faiss.vector_to_array(hnsw.offsets).nbytes
        return total

    def wants_rebuild(self, n_classes: int) -> bool:
        """True when the index kind no longer fits the size, or tombstones have piled up."""
        s = self.settings
        if self.kind == "exact" and n_classes > s.approx_above:
            return True
        if self.kind == "hnsw" and n_classes <= s.approx_above // 2:
            return True
        return self.kind == "hnsw" and len(self.tombstones) > max(1000, s.rebuild_fraction * self.main.ntotal)

    # ------------------------------------------------------------------ updates
    def add_new(self, ids: np.ndarray, templates: np.ndarray) -> None:
        """Add classes whose ids are all above :attr:`max_id`. ids (N,), templates (N, D)."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.main.add_with_ids(np.ascontiguousarray(templates, dtype=np.float32), ids)
        self.max_id = max(self.max_id, int(ids.max()))

    def apply(self, changed: np.ndarray, present_ids: np.ndarray, templates: np.ndarray) -> None:
        """Bring the index up to date for the classes in ``changed`` (N,): those in ``present_ids`` (M,) now
        have ``templates`` (M, D); the others were removed."""
        changed = np.unique(np.asarray(changed, dtype=np.int64))
        present_ids = np.asarray(present_ids, dtype=np.int64)
        old = changed[changed <= self.max_id]
        if len(old):
            if self.kind == "exact":
                self.main.remove_ids(faiss.IDSelectorBatch(old))
            else:
                self.delta.remove_ids(faiss.IDSelectorBatch(old))
                self.tombstones.update(int(i) for i in old)
        is_old = present_ids <= self.max_id
        if is_old.any():
            target = self.main if self.kind == "exact" else self.delta
            target.add_with_ids(np.ascontiguousarray(templates[is_old], dtype=np.float32), present_ids[is_old])
        self.add_new(present_ids[~is_old], templates[~is_old])

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: queries (B, D) L2-normalised -> scores (B, k) float32 descending, ids (B, k) int64 (-1 pads)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "exact":
            return self.main.search(q, k)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.settings.ef_search, k)
        if self.tombstones:
            batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones)))
            params.sel = faiss.IDSelectorNot(batch)
        scores, ids = self.main.search(q, k, params=params)
        if self.delta.ntotal:
            ds, di = self.delta.search(q, min(k, int(self.delta.ntotal)))
            scores = np.concatenate([scores, ds], 1)
            ids = np.concatenate([ids, di], 1)
            scores = np.where(ids < 0, -np.inf, scores)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(scores, order, 1)
            ids = np.take_along_axis(ids, order, 1)
        return scores.astype(np.float32), ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, epoch: int, generation: int) -> None:
        """Write the index atomically and durably (:func:`oneshot.files.atomic_write_bytes`) with its epoch and generation."""
        header = json.dumps({
            "format": INDEX_FORMAT, "kind": self.kind, "dim": self.dim, "epoch": epoch, "generation": generation,
            "max_id": self.max_id, "tombstones": sorted(self.tombstones),
        }).encode()
        main = faiss.serialize_index(self.main)
        delta = faiss.serialize_index(self.delta)
        atomic_write_bytes(path, b"".join([FILE_MAGIC, struct.pack("<QQQ", len(header), main.nbytes, delta.nbytes), header,
                                            main.tobytes(), delta.tobytes()]))

    @classmethod
    def load(cls, path: Path, settings: IndexSettings) -> tuple["TemplateIndex", int, int] | None:
        """(index, epoch, generation) from ``path``, or None when missing, damaged or foreign."""
        try:
            with open(path, "rb") as f:
                if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
                    return None
                n_header, n_main, n_delta = struct.unpack("<QQQ", f.read(24))
                header = json.loads(f.read(n_header))
                main = np.frombuffer(f.read(n_main), dtype=np.uint8)
                delta = np.frombuffer(f.read(n_delta), dtype=np.uint8)
            if header.get("format") != INDEX_FORMAT or len(main) != n_main or len(delta) != n_delta:
                return None
            index = cls.__new__(cls)
            index.dim = int(header["dim"])
            index.kind = header["kind"]
            index.settings = settings
            index.max_id = int(header["max_id"])
            index.tombstones = set(int(i) for i in header["tombstones"])
            index.main = faiss.deserialize_index(main)
            index.delta = faiss.deserialize_index(delta)
            if index.main.d != index.dim or index.delta.d != index.dim:
                return None
            if index.kind == "hnsw":
                faiss.downcast_index(index.main.index).hnsw.efSearch = settings.ef_search
            return index, int(header["epoch"]), int(header["generation"])
        except (OSError, ValueError, KeyError, RuntimeError, struct.error, json.JSONDecodeError):
            return None


def index_class(fingerprint: dict) -> type:
    """The index kind a gallery's embedder asks for: its fingerprint's ``similarity`` (``cosine`` when absent,
    :class:`TemplateIndex`; ``tanimoto``, :class:`~oneshot.gallery.tanimoto.TanimotoIndex` over the bits)."""
    similarity = fingerprint.get("similarity", "cosine")
    if similarity == "tanimoto":
        from oneshot.gallery.tanimoto import TanimotoIndex

        return TanimotoIndex
    if similarity != "cosine":
        raise ValueError(f"unknown similarity {similarity!r} in the gallery's fingerprint")
    return TemplateIndex


def pair_similarity(fingerprint: dict, a: np.ndarray, b: np.ndarray) -> float:
    """The gallery's score of two of its vectors (D,): cosine, or Tanimoto of their bits."""
    if fingerprint.get("similarity", "cosine") == "tanimoto":
        from oneshot.gallery.tanimoto import vector_tanimoto

        return vector_tanimoto(a, b)
    return float(a @ b)
