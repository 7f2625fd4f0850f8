"""The gallery's FAISS index as a cache of its store: loaded from ``<gallery>.faiss``, caught up, or rebuilt.

:class:`IndexCache` owns the cache's state -- the index, the store *generation* it reflects, the *epoch* of
the templates it was built from, whether it changed since it was saved -- and the catch-up: before every
search it re-reads only the classes the change log names after its generation (inside the caller's read
snapshot); after many changes, when its size disagrees with the store or when its kind no longer fits the
size, it is rebuilt from the store. A saved file of another gallery (its id), with another epoch or dim, a
failed checksum, or one that does not load, is ignored and rebuilt; a gallery without an id (made before ids
existed) never loads a file until one is saved.
"""

from __future__ import annotations

from pathlib import Path

from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.index import IndexSettings, TemplateIndex

#: Above this many changed classes (or half the gallery) a catch-up rebuilds instead.
MAX_CATCH_UP = 10000


class IndexCache:
    """The index of one gallery's templates, kept caught up with its store.

    Attributes:
        path: the index file (``<gallery>.faiss``).
        dim, epoch, settings: those of the gallery; :meth:`reset` when the gallery's change.
        index: the :class:`TemplateIndex`, or None until first needed.
        generation: the store generation the index reflects.
    """

    def __init__(self, path: Path, dim: int, epoch: int, settings: IndexSettings, gallery_id: str | None) -> None:
        self.path = path
        self.gallery_id = gallery_id
        self.index: TemplateIndex | None = None
        self.generation = 0
        self._saved_generation = -1
        self.reset(dim, epoch, settings)

    def reset(self, dim: int, epoch: int, settings: IndexSettings) -> None:
        """Forget the index (the gallery's templates were rebuilt, e.g. re-embedded by another process)."""
        self.dim, self.epoch, self.settings = dim, epoch, settings
        self.index = None

    def set_settings(self, settings: IndexSettings) -> None:
        self.settings = settings
        if self.index is not None:
            self.index.settings = settings

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
            self.index = TemplateIndex.build(self.dim, ids, templates, self.settings)
            self.generation = gen
        return self.index

    def _load(self, gen: int) -> None:
        """Adopt the saved index when it is of this epoch and dim and not ahead of the store."""
        assert self.gallery_id is not None
        loaded = TemplateIndex.load(self.path, self.settings, self.gallery_id)
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
        self.index.save(self.path, self.epoch, self.generation, self.gallery_id)
        self._saved_generation = self.generation

    def discard(self) -> None:
        """Drop the index and its file (every template changed)."""
        self.index = None
        self.path.unlink(missing_ok=True)
