"""The gallery's FAISS index as a cache of its store: loaded from ``<gallery>.faiss``, caught up, or rebuilt.

:class:`IndexCache` owns the cache's state -- the index, the store *generation* it reflects, the *epoch* of
the templates it was built from, whether it changed since it was saved -- and the catch-up: before every
search it re-reads only the classes the change log names after its generation (inside the caller's read
snapshot); after many changes, when its size disagrees with the store or when its kind no longer fits the
size, it is rebuilt from the store. A saved file with another epoch or dim, or one that does not load, is
ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from oneshot.files import atomic_write_bytes
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.index import IndexSettings, TemplateIndex

#: Format of the seal file beside the cache.
SEAL_FORMAT = 1


def _file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


#: Above this many changed classes (or half the gallery) a catch-up rebuilds instead.
MAX_CATCH_UP = 10000


class IndexCache:
    """The index of one gallery's templates, kept caught up with its store.

    Attributes:
        path: the index file (``<gallery>.faiss``).
        dim, epoch, settings: those of the gallery; :meth:`reset` when the gallery's change.
        index: the :class:`TemplateIndex` (or the index class the gallery's fingerprint asks for, see
            :func:`oneshot.gallery.index.index_class`), or None until first needed.
        generation: the store generation the index reflects.
    """

    def __init__(
        self,
        path: Path,
        dim: int,
        epoch: int,
        settings: IndexSettings,
        kind: type[Any] = TemplateIndex,
        gallery_id: str | None = None,
    ) -> None:
        self.path = path
        #: the id of the gallery this cache belongs to (meta ``gallery_id``); None: never load a file.
        self.gallery_id = gallery_id
        #: The index class: :class:`TemplateIndex` (cosine), or what the gallery's fingerprint declares
        #: (:func:`oneshot.gallery.index.index_class`, e.g. the exact Tanimoto index of ECFP galleries).
        self.kind: type[Any] = TemplateIndex
        self.index: TemplateIndex | None = None
        self.generation = 0
        self._saved_generation = -1
        self.reset(dim, epoch, settings, kind)

    def reset(self, dim: int, epoch: int, settings: IndexSettings, kind: type[Any] = TemplateIndex) -> None:
        """Forget the index (the gallery's templates were rebuilt, e.g. re-embedded by another process)."""
        self.dim, self.epoch, self.settings, self.kind = dim, epoch, settings, kind
        self.index = None

    def set_settings(self, settings: IndexSettings) -> None:
        self.settings = settings
        if self.index is not None:
            self.index.settings = settings
            if self.index.kind not in ("exact", settings.approx_kind) or (self.index.vectors is not None) != settings.refines:
                self.index = None  # the gallery now wants another kind: rebuilt on next use

    @property
    def unsaved(self) -> bool:
        """True when the index moved on since it was loaded or saved."""
        return self.index is not None and self.generation != self._saved_generation

    def current(self, store: ClassStore) -> TemplateIndex:
        """The index caught up with every change committed to ``store`` (call inside ``store.read()``)."""
        gen = store.generation()
        if self.index is not None and self.generation == gen:
            return self.index  # nothing changed since the last search
        n = store.count()
        if self.index is None and self.gallery_id and self.path.is_file():
            self._load(gen)
        if self.index is not None and self.generation < gen:
            self._catch_up(store, gen, n)
        if self.index is not None and (self.index.live != n or self.index.wants_rebuild(n)):
            self.index = None
        if self.index is None:
            ids, templates = store.all_templates(self.dim)
            self.index = self.kind.build(self.dim, ids, templates, self.settings)
            self.generation = gen
        return self.index

    def _load(self, gen: int) -> None:
        """Adopt the saved index when it is of this epoch and dim and not ahead of the store."""
        if not self._seal_holds():
            return
        try:
            loaded = self.kind.load(self.path, self.settings)
        except Exception:  # noqa: BLE001 - a cache that does not load is rebuilt, whatever the reason
            loaded = None
        if loaded is not None:
            idx, f_epoch, f_gen = loaded
            if f_epoch == self.epoch and idx.dim == self.dim and f_gen <= gen:
                self.index, self.generation, self._saved_generation = idx, f_gen, f_gen

    def _catch_up(self, store: ClassStore, gen: int, n: int) -> None:
        """Apply the classes changed after the index's generation, or drop the index when they are too many."""
        assert self.index is not None
        changed = store.changed_since(self.generation, gen)
        if len(changed) > max(MAX_CATCH_UP, n // 2):
            self.index = None
            return
        present, templates = store.templates_of(changed.tolist(), self.dim)
        self.index.apply(changed, present, templates)
        self.generation = gen

    def save(self) -> None:
        """Write the index file (atomically) with its epoch and generation; the index must be current."""
        assert self.index is not None and self.gallery_id is not None
        self.index.save(self.path, self.epoch, self.generation)
        size, digest = _file_digest(self.path)
        seal = {"format": SEAL_FORMAT, "gallery_id": self.gallery_id, "size": size, "sha256": digest}
        atomic_write_bytes(self.seal_path, json.dumps(seal).encode())
        self._saved_generation = self.generation

    @property
    def seal_path(self) -> Path:
        """``<gallery>.faiss.check``: the id of the gallery the cache file belongs to, its size and SHA-256."""
        return self.path.with_name(self.path.name + ".check")

    def _seal_holds(self) -> bool:
        """True when the seal names this gallery and the cache file has exactly the recorded size and digest
        (checked before the file is parsed, so a damaged, edited or foreign file is never read into an index)."""
        try:
            seal = json.loads(self.seal_path.read_bytes()[:4096])
            if not isinstance(seal, dict) or seal.get("format") != SEAL_FORMAT or seal.get("gallery_id") != self.gallery_id:
                return False
            if self.path.stat().st_size != seal.get("size"):
                return False
            return _file_digest(self.path)[1] == seal.get("sha256")
        except (OSError, ValueError):
            return False

    def discard(self) -> None:
        """Drop the index and its file (every template changed)."""
        self.index = None
        self.path.unlink(missing_ok=True)
        self.seal_path.unlink(missing_ok=True)
