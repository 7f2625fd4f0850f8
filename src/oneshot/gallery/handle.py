"""An open gallery: its store, its binding to an embedder, and its index cache kept in step with the store.

:class:`GalleryHandle` is what every verb of :class:`~oneshot.gallery.Gallery` stands on: the gallery's meta
(dimension, fingerprint, what it stores, index settings), the embedder loaded on first use, the index caught up
before each search (adopting a new *epoch* when another process re-embedded the gallery), the checked write of
prepared enrolments, and closing (saving the index cache when it moved on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from oneshot.errors import OneshotError, OneshotWarning, os_reason
from oneshot.gallery.binding import load_recorded, new_gallery_id, read_meta
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.cohort import CohortCache
from oneshot.gallery.enrolment import Prepared, prepare, write_enrolments
from oneshot.gallery.identify_rule import ClassifierCache
from oneshot.gallery.index import TemplateIndex, index_class
from oneshot.gallery.index_cache import IndexCache
from oneshot.gallery.index_settings import IndexSettings
from oneshot.gallery.normalise import CohortNorm
from oneshot.gallery.rejection import MeansCache
from oneshot.modalities import Embedder, Example, fingerprint_id, fingerprint_modality
from oneshot.provenance import now_iso


class GalleryHandle:
    """An open gallery file and what keeps it consistent; :class:`~oneshot.gallery.Gallery` adds the verbs."""

    def __init__(self, store: ClassStore, encoder: Embedder | None) -> None:
        self.store = store
        self.path = store.path
        self._encoder = encoder
        meta = read_meta(store)
        self.dim = int(meta["dim"])
        self.fingerprint: dict[str, Any] = meta["fingerprint"]
        self.store_mode: str = meta.get("store", "inputs")
        self.settings = IndexSettings.from_dict(meta.get("index"))
        self.index_cache = IndexCache(
            self.path.with_name(self.path.name + ".faiss"),
            self.dim,
            int(meta.get("epoch", 0)),
            self.settings,
            index_class(self.fingerprint),
            meta.get("gallery_id"),
        )
        #: The text classifier rule's fit, keyed by the gallery's state (:mod:`~oneshot.gallery.identify_rule`).
        self.classifier_cache = ClassifierCache()
        #: The class means ``mean_distance`` rejects on, keyed likewise (:mod:`~oneshot.gallery.rejection`).
        self.means_cache = MeansCache()
        #: The cohort ``snorm`` normalises by, decoded once (:mod:`~oneshot.gallery.cohort`).
        self.cohort_cache = CohortCache()

    @property
    def modality(self) -> str:
        """What the gallery's examples are: ``image``, ``text``, ``molecule``, or ``vectors`` (no embedder)."""
        return fingerprint_modality(self.fingerprint)

    @property
    def encoder(self) -> Embedder:
        """The gallery's embedder, loaded from the recorded spec (built-in name or path) on first use."""
        if self._encoder is None:
            self._encoder = load_recorded(self.path, self.fingerprint, self.modality, self.store.get_meta("encoder_path"))
        return self._encoder

    def cohort_norm(self) -> CohortNorm:
        """The stored cohort's normaliser (an error when there is none or it fits another encoder)."""
        return self.cohort_cache.current(self.store, fingerprint_id(self.fingerprint))

    def close(self) -> None:
        """Save the index cache when it moved on since it was loaded, then close the database.

        The cache is only a cache: when it cannot be written (a full disk, a read-only file system) the gallery
        is unaffected, a :class:`~oneshot.errors.OneshotWarning` says why, and the next open rebuilds it."""
        try:
            if self.index_cache.unsaved and self.store.writable:
                self._save_index()
        except (OSError, OneshotError) as exc:
            why = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            warnings.warn(
                f"the index cache {self.index_path} was not saved ({why}); the gallery is unchanged "
                "and the cache is rebuilt on the next open",
                OneshotWarning,
                stacklevel=2,
            )
        finally:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================== index cache
    @property
    def index_path(self) -> Path:
        return self.index_cache.path

    def save_index(self) -> None:
        """Write the index cache (atomically) with its epoch, generation and the gallery's id; a
        :class:`OneshotError` saying why when it cannot be written (no space, read-only, permissions)."""
        try:
            self._save_index()
        except OSError as exc:
            raise OneshotError(
                f"cannot write the index cache {self.index_path} ({os_reason(exc)}): "
                "the gallery is unchanged; free space or use a writable folder"
            ) from None

    def _save_index(self) -> None:
        self._index()
        if self.index_cache.gallery_id is None:  # a gallery made before ids existed gets one now
            gid = new_gallery_id()
            with self.store.write() as tx:
                tx.set_meta("gallery_id", gid)
            self.index_cache.gallery_id = gid
        self.index_cache.save()

    def _index(self) -> TemplateIndex:
        """The index, caught up with every change committed so far (in one read snapshot of the store)."""
        with self.store.read():
            if int(self.store.get_meta("epoch", 0)) != self.index_cache.epoch:
                self._adopt_new_epoch()
            return self.index_cache.current(self.store)

    def _adopt_new_epoch(self) -> None:
        """After another process re-embedded the gallery: reload dim and fingerprint, refuse a stale encoder."""
        meta = self.store.all_meta()
        self.dim, self.fingerprint = int(meta["dim"]), meta["fingerprint"]
        self.settings = IndexSettings.from_dict(meta.get("index"))
        self.index_cache.reset(self.dim, int(meta.get("epoch", 0)), self.settings, index_class(self.fingerprint))
        if self._encoder is not None and fingerprint_id(self._encoder.fingerprint) != fingerprint_id(self.fingerprint):
            self._encoder = None
            raise OneshotError(f"gallery {self.path} was re-embedded with another encoder meanwhile: reopen it with that encoder")

    # ================================================================== writing
    def _prepare(self, label: str, examples: Sequence[Example] | np.ndarray, metadata: dict | None = None) -> Prepared:
        return prepare(label, examples, self.dim, lambda: self.encoder, self.store_mode, metadata)

    def _write(self, items: list[Prepared]) -> list[tuple[int, bool, int]]:
        """Write enrolments in one transaction: (class id, created, total examples) per item."""
        with self.store.write() as tx:
            self._check_not_reembedded()
            return write_enrolments(tx, items, self.dim, now_iso())

    def _check_not_reembedded(self) -> None:
        """Inside a write transaction: refuse to write vectors of this gallery's encoder when another process
        re-embedded the gallery with another one since they were computed (nothing is written)."""
        now = self.store.get_meta("fingerprint")
        if fingerprint_id(now) != fingerprint_id(self.fingerprint):
            raise OneshotError(
                f"gallery {self.path} was re-embedded with encoder {fingerprint_id(now)} while this "
                "enrolment was being prepared: nothing was written; reopen the gallery and enrol again"
            )

    def _generator(self) -> Any:
        """The embedder's generator of synthetic examples (:mod:`oneshot.generative`), or None."""
        return getattr(self._encoder or (self.encoder if self.modality != "vectors" else None), "generator", None)
