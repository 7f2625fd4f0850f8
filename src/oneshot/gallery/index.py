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

The index file holds a small JSON header (kind, dim, epoch, generation, the id of the gallery it belongs to, max
id, tombstones, a SHA-256 of the rest) and the serialised FAISS indexes; it is written atomically and, when it
belongs to another gallery, fails its checksum, or its epoch or dim differ from the gallery, it is ignored and
rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from oneshot.files import atomic_write_bytes

FILE_MAGIC = b"ONESHOT-GALLERY-INDEX\x00"
INDEX_FORMAT = 2  # 2: gallery id and checksum in the header (format 1 files are rebuilt)


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


#: The largest ``approx_above`` / ``ef_search`` accepted (far above any gallery this serves).
MAX_SETTING = 1 << 31


def check_index_settings(approx_above: int | None, ef_search: int | None) -> None:
    """A :class:`OneshotError` for an ``approx_above`` outside [0, 2^31] or an ``ef_search`` outside [1, 2^31]."""
    from oneshot.errors import OneshotError

    for name, v, low in (("approx_above", approx_above, 0), ("ef_search", ef_search, 1)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= MAX_SETTING:
            raise OneshotError(f"{name} must be a whole number in [{low}, {MAX_SETTING}], not {v!r}")


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
    def save(self, path: Path, epoch: int, generation: int, gallery_id: str) -> None:
        """Write the index atomically and durably (:func:`oneshot.files.atomic_write_bytes`) with its epoch,
        generation, the id of the gallery it belongs to and a SHA-256 of everything after the header."""
        main = faiss.serialize_index(self.main).tobytes()
        delta = faiss.serialize_index(self.delta).tobytes()
        header = json.dumps({
            "format": INDEX_FORMAT, "kind": self.kind, "dim": self.dim, "epoch": epoch, "generation": generation,
            "gallery_id": gallery_id, "max_id": self.max_id, "tombstones": sorted(self.tombstones),
            "sha256": _body_digest(main, delta),
        }).encode()
        atomic_write_bytes(path, b"".join([FILE_MAGIC, struct.pack("<QQQ", len(header), len(main), len(delta)), header,
                                            main, delta]))

    @classmethod
    def load(cls, path: Path, settings: IndexSettings, gallery_id: str) -> tuple["TemplateIndex", int, int] | None:
        """(index, epoch, generation) from ``path``, or None when missing, damaged (checksum, sizes, header
        fields), foreign (another gallery's id) or of another format -- the caller then rebuilds it."""
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
                    return None
                n_header, n_main, n_delta = struct.unpack("<QQQ", f.read(24))
                if len(FILE_MAGIC) + 24 + n_header + n_main + n_delta != size:
                    return None  # sizes that do not add up: never read (or allocate) what the header claims
                header = json.loads(f.read(n_header))
                main = f.read(n_main)
                delta = f.read(n_delta)
            if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
                return None
            if header.get("gallery_id") != gallery_id or header.get("sha256") != _body_digest(main, delta):
                return None
            kind, dim, max_id, tomb = header["kind"], header["dim"], header["max_id"], header["tombstones"]
            epoch, gen = header["epoch"], header["generation"]
            if kind not in ("exact", "hnsw") or not all(type(v) is int for v in (dim, max_id, epoch, gen)):
                return None
            if not isinstance(tomb, list) or not all(type(i) is int for i in tomb):
                return None
            index = cls.__new__(cls)
            index.dim, index.kind, index.settings, index.max_id = dim, kind, settings, max_id
            index.tombstones = set(tomb)
            index.main = faiss.deserialize_index(np.frombuffer(main, dtype=np.uint8))
            index.delta = faiss.deserialize_index(np.frombuffer(delta, dtype=np.uint8))
            if index.main.d != index.dim or index.delta.d != index.dim:
                return None
            if index.kind == "hnsw":
                faiss.downcast_index(index.main.index).hnsw.efSearch = settings.ef_search
            return index, epoch, gen
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, struct.error, json.JSONDecodeError):
            return None


def _body_digest(main: bytes, delta: bytes) -> str:
    """SHA-256 of an index file's serialised indexes (what its header's ``sha256`` covers)."""
    h = hashlib.sha256()
    h.update(struct.pack("<QQ", len(main), len(delta)))
    h.update(main)
    h.update(delta)
    return h.hexdigest()
