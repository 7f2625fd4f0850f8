"""Exact Tanimoto search over binary fingerprints, and the gallery index that uses it.

Tanimoto (Jaccard) similarity of bit vectors a, b: ``T = |a & b| / |a | b|``. With the Hamming distance
``d = |a ^ b|`` and ``s = |a| + |b|`` it is ``T = (s - d) / (s + d)``, so one Hamming kernel plus the stored
popcounts gives every similarity. The kernel is FAISS's ``hammings`` over bytes packed 8 bits each
(hardware popcount over 64-bit words, in C++): on the shared 2-core machine it scans 10^6 2048-bit
fingerprints in about 10 ms, several times faster than NumPy's ``bitwise_count`` over the same packed words
and than RDKit's ``BulkTanimotoSimilarity`` (``benchmarks/molecules_search.py`` measures all three).

The gallery chooses this index when its embedder's fingerprint declares ``"similarity": "tanimoto"``
(see :func:`oneshot.gallery.index.index_class`). Gallery vectors are L2-normalised; for a 0/1 fingerprint the
set bits are exactly the positive entries, so the index recovers the bits with ``v > 0``. A class with
several examples is searched by the bits of its template, the union of its examples' bits.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import faiss
import numpy as np

from oneshot.files import atomic_write_bytes
from oneshot.gallery.index_file import frame, header_fields, read_frame
from oneshot.gallery.index_settings import IndexSettings

FILE_MAGIC = b"ONESHOT-TANIMOTO-INDEX\x00"
INDEX_FORMAT = 1
_QUERY_BLOCK = 16  # queries per Hamming call: bounds the (B, N) int32 distance block


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """0/1 (or boolean, or any: > 0 is set) (N, D) -> packed uint8 (N, ceil(D/8)), zero-padded to 8-byte rows."""
    b = np.asarray(bits) > 0
    packed = np.packbits(b, axis=1, bitorder="little")
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed)


def popcounts(packed: np.ndarray) -> np.ndarray:
    """Set bits per packed row: uint8 (N, nb) -> int32 (N,)."""
    return np.bitwise_count(packed).sum(1, dtype=np.int32)


def hamming(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Hamming distances: packed uint8 (B, nb), (N, nb) -> int32 (B, N), by FAISS's popcount kernel."""
    q = np.ascontiguousarray(queries, dtype=np.uint8)
    x = np.ascontiguousarray(base, dtype=np.uint8)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"packed widths differ: {q.shape[1]} vs {x.shape[1]} bytes")
    out = np.empty((q.shape[0], x.shape[0]), dtype=np.int32)
    if q.shape[0] and x.shape[0]:
        faiss.hammings(faiss.swig_ptr(q), faiss.swig_ptr(x), q.shape[0], x.shape[0], q.shape[1], faiss.swig_ptr(out))  # type: ignore[attr-defined]
    return out


def tanimoto(queries: np.ndarray, base: np.ndarray, base_counts: np.ndarray | None = None) -> np.ndarray:
    """All Tanimoto similarities: packed uint8 (B, nb), (N, nb) -> float32 (B, N); two empty vectors score 0."""
    counts = popcounts(base) if base_counts is None else base_counts
    s = popcounts(queries)[:, None] + counts[None, :]
    d = hamming(queries, base)
    num = (s - d).astype(np.float32)
    den = (s + d).astype(np.float32)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def tanimoto_topk(
    queries: np.ndarray, base: np.ndarray, k: int, base_counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Tanimoto: packed (B, nb) queries, (N, nb) base -> scores float32 (B, k) descending and
    row indices int64 (B, k); ``k`` is capped at N. Ties keep the lower row first.

    The arithmetic after the Hamming kernel and the selection run in PyTorch (``topk``), about twice as fast
    as NumPy's temporaries and ``argpartition`` on 10^6 rows; ties at the k-th score are resolved exactly.
    """
    import torch

    n = base.shape[0]
    k = min(k, n)
    counts = torch.from_numpy(np.ascontiguousarray(popcounts(base) if base_counts is None else base_counts, dtype=np.int32))
    q_counts = popcounts(queries)
    scores = np.empty((queries.shape[0], k), np.float32)
    rows = np.empty((queries.shape[0], k), np.int64)
    for s in range(0, queries.shape[0], _QUERY_BLOCK):
        d_block = torch.from_numpy(hamming(queries[s : s + _QUERY_BLOCK], base))
        for j in range(d_block.shape[0]):
            d = d_block[j]
            tot = counts + int(q_counts[s + j])
            t = (tot - d).float().div_((tot + d).clamp_min_(1).float())  # (s - d) / (s + d); 0 for two empty vectors
            if k == 0:
                continue
            # k + 32 best; when the last of them scores below the k-th, every row tied with the k-th is among
            # them, else (many ties) take every row scoring at least the k-th: tie-breaking is exact either way.
            vals, idx = torch.topk(t, min(n, k + 32), sorted=True)
            if len(vals) > k and vals[-1] >= vals[k - 1]:
                idx = torch.nonzero(t >= vals[k - 1]).squeeze(1)
                vals = t[idx]
            cand, cv = idx, vals.numpy()
            order = np.lexsort((cand.numpy(), -cv))[:k]
            rows[s + j] = cand.numpy()[order]
            scores[s + j] = cv[order]
    return scores, rows


class TanimotoIndex:
    """Exact top-k Tanimoto over (id, fingerprint) pairs, with the interface of
    :class:`~oneshot.gallery.index.TemplateIndex`. ``templates`` are gallery vectors (N, D); bits are ``> 0``."""

    kind = "tanimoto"
    vectors = None  # no separate float vectors for re-ranking: the search is exact

    def __init__(self, dim: int, settings: IndexSettings) -> None:
        self.dim = dim
        self.settings = settings
        self.max_id = 0
        self.ids = np.zeros(0, np.int64)
        self.packed = np.zeros((0, pack_bits(np.zeros((1, dim))).shape[1]), np.uint8)
        self.counts = np.zeros(0, np.int32)

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, templates: np.ndarray, settings: IndexSettings) -> TanimotoIndex:
        index = cls(dim, settings)
        index.add_new(ids, templates)
        return index

    @property
    def live(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.ids.nbytes + self.counts.nbytes)

    def wants_rebuild(self, n_classes: int) -> bool:
        return False

    def add_new(self, ids: np.ndarray, templates: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        packed = pack_bits(templates)
        self.ids = np.concatenate([self.ids, ids])
        self.packed = np.concatenate([self.packed, packed])
        self.counts = np.concatenate([self.counts, popcounts(packed)])
        self.max_id = max(self.max_id, int(ids.max()))

    def apply(self, changed: np.ndarray, present_ids: np.ndarray, templates: np.ndarray) -> None:
        """Drop the classes in ``changed`` (N,), then add ``present_ids`` (M,) with ``templates`` (M, D)."""
        keep = ~np.isin(self.ids, np.asarray(changed, dtype=np.int64))
        self.ids, self.packed, self.counts = self.ids[keep], self.packed[keep], self.counts[keep]
        max_id = self.max_id
        self.add_new(np.asarray(present_ids, dtype=np.int64), templates)
        self.max_id = max(max_id, self.max_id)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries (B, D) -> Tanimoto scores (B, k) descending and class ids (B, k) (-1 pads when k > live)."""
        q = pack_bits(queries)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if self.live:
            s, rows = tanimoto_topk(q, self.packed, k, self.counts)
            scores[:, : s.shape[1]] = s
            ids[:, : s.shape[1]] = self.ids[rows]
        return scores, ids

    def save(self, path: Path, epoch: int, generation: int) -> None:
        """Write the index atomically and durably (:func:`oneshot.files.atomic_write_bytes`) with its epoch and generation."""
        header = dict(header_fields(INDEX_FORMAT, self, epoch, generation), n=self.live)
        atomic_write_bytes(path, frame(FILE_MAGIC, header, [], [self.ids.tobytes(), self.packed.tobytes()]))

    @classmethod
    def load(cls, path: Path, settings: IndexSettings) -> tuple[TanimotoIndex, int, int] | None:
        """(index, epoch, generation) from ``path``, or None when missing, damaged or of another kind."""
        try:
            header, _, rest = read_frame(path, FILE_MAGIC, 1)
            if header.get("format") != INDEX_FORMAT:
                return None
            index = cls(int(header["dim"]), settings)
            n, width = int(header["n"]), index.packed.shape[1]
            ids = np.frombuffer(rest[: 8 * n], dtype=np.int64)
            packed = np.frombuffer(rest[8 * n : 8 * n + n * width], dtype=np.uint8)
            if len(ids) != n or len(packed) != n * width:
                return None
            index.ids = ids.copy()
            index.packed = packed.reshape(n, width).copy()
            index.counts = popcounts(index.packed)
            index.max_id = int(header["max_id"])
            return index, int(header["epoch"]), int(header["generation"])
        except (OSError, ValueError, KeyError, struct.error, json.JSONDecodeError):
            return None
