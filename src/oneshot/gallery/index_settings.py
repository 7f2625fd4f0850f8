"""When and how a gallery searches approximately: :class:`IndexSettings` (saved in the gallery's meta
``index``) and the checks on changes to them (see :mod:`oneshot.gallery.index` for the index kinds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from oneshot.errors import OneshotError

APPROX_KINDS = ("hnsw", "hnsw_sq8", "ivf_flat", "ivf_sq8", "ivf_pq")
QUANTISED_KINDS = ("hnsw_sq8", "ivf_sq8", "ivf_pq")
MIN_IVF = 1000  # fewer classes than this: an IVF kind searches exactly (too few points to train on)

#: The largest ``approx_above`` / ``ef_search`` accepted (far above any gallery this serves).
MAX_SETTING = 1 << 31


@dataclass
class IndexSettings:
    """When and how to search approximately.

    Attributes:
        approx_above: use HNSW once the gallery holds more than this many classes (exact below).
        hnsw_m: HNSW graph degree (memory: about 2*M*4 bytes per template on top of the vector).
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width (higher: better recall, slower).
        rebuild_fraction: rebuild the HNSW graph when tombstones exceed this fraction of it.
        approx_kind: which approximate index (one of :data:`APPROX_KINDS`); ``hnsw`` reproduces the index
            of galleries made before this setting existed.
        nprobe: IVF kinds: inverted lists scanned per query (of ``sqrt(N)``; 128 of 1000 gives recall@1 0.998
            at 10^6 real-like 64-d templates, ``benchmarks/results/gallery_memory.json``).
        pq_m: ``ivf_pq``: bytes per vector (sub-quantisers of 8 bits; must divide the dimension).
        refine_factor: quantised kinds: re-rank ``refine_factor * k`` candidates exactly (0: no re-ranking,
            approximate scores and no float copies in memory).
    """

    approx_above: int = 20000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    rebuild_fraction: float = 0.1
    approx_kind: str = APPROX_KINDS[0]  # hnsw
    nprobe: int = 128
    pq_m: int = 16
    refine_factor: int = 4

    def kind_for(self, n: int) -> str:
        """The index kind a fresh build uses for ``n`` classes."""
        if n <= self.approx_above or (self.approx_kind.startswith("ivf") and n < MIN_IVF):
            return "exact"
        return self.approx_kind

    @property
    def refines(self) -> bool:
        """Whether the approximate kind re-ranks against float copies."""
        return self.approx_kind in QUANTISED_KINDS and self.refine_factor > 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict | None) -> IndexSettings:
        d = d or {}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in cls.__dataclass_fields__})


def check_index_settings(approx_above: int | None, ef_search: int | None, approx_kind: str | None = None) -> None:
    """A :class:`OneshotError` for an ``approx_above`` outside [0, 2^31], an ``ef_search`` outside [1, 2^31] or
    an ``approx_kind`` not in :data:`APPROX_KINDS`."""
    for name, v, low in (("approx_above", approx_above, 0), ("ef_search", ef_search, 1)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= MAX_SETTING:
            raise OneshotError(f"{name} must be a whole number in [{low}, {MAX_SETTING}], not {v!r}")
    if approx_kind is not None and approx_kind not in APPROX_KINDS:
        raise OneshotError(f"unknown index kind {approx_kind!r}: choose one of {', '.join(APPROX_KINDS)}")


def change_settings(settings: IndexSettings, dim: int, changes: dict[str, Any]) -> None:
    """Check ``changes`` (new values of ``approx_above``, ``ef_search``, ``approx_kind``, ``nprobe`` and
    ``refine_factor``; None leaves a setting as it is) against a gallery of dimension ``dim``, then make them in
    ``settings`` (in place). A :class:`OneshotError` saying why, and nothing changed, for a bad one."""
    approx_kind = changes.get("approx_kind")
    check_index_settings(changes.get("approx_above"), changes.get("ef_search"), approx_kind)
    if approx_kind == "ivf_pq" and dim % settings.pq_m:
        raise OneshotError(f"ivf_pq needs a dimension divisible by {settings.pq_m}, the gallery's is {dim}: choose ivf_sq8")
    for label, low in (("nprobe", 1), ("refine_factor", 0), ("approx_above", 0), ("ef_search", 1)):
        v = changes.get(label)
        if v is not None and v < low:
            raise OneshotError(f"{label} must be >= {low}")
    for name in ("approx_kind", "nprobe", "refine_factor", "approx_above", "ef_search"):
        v = changes.get(name)
        if v is not None:
            setattr(settings, name, v if name == "approx_kind" else int(v))
