"""One thread owns the gallery: every gallery call runs there, so the event loop never waits on a model or
on SQLite, and the gallery's connection and index (not thread-safe) see one caller at a time."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def limit_threads(n: int) -> None:
    """At most ``n`` OpenMP threads for FAISS and PyTorch (when the embedder loaded it), for the calling thread:
    their spinning worker threads cost far more than they give on a busy CPU. OpenMP's setting is per thread,
    so this runs on the gallery's thread too: a 10,000-class FAISS search there took 49 ms (16 ms of CPU)
    with the default threads on the contended 2-core machine, and 0.25 ms with one set on that thread."""
    import faiss

    faiss.omp_set_num_threads(n)
    if "torch" in sys.modules:  # only an embedder that uses torch has imported it
        sys.modules["torch"].set_num_threads(n)


class GalleryWorker:
    """Opens the gallery on its own thread and runs callables ``fn(gallery, ...)`` there, one at a time.

    Attributes:
        gallery: the open :class:`oneshot.gallery.Gallery` (touch it only through :meth:`run`).
        modality: the gallery's modality (``image``, ``text``, ...), fixed at opening.
    """

    def __init__(self, path: str | Path, encoder: str | None = None, threads: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="oneshot-gallery")
        self.gallery = self._pool.submit(self._open, Path(path), encoder).result()
        self.modality: str = self.gallery.modality
        self.embedder = self._pool.submit(lambda: self.gallery.encoder).result()
        if threads is not None:  # OpenMP's thread count is per calling thread: set it where the gallery runs
            self._pool.submit(limit_threads, threads).result()
            limit_threads(threads)

    @staticmethod
    def _open(path: Path, encoder: str | None) -> Any:
        from oneshot.gallery import Gallery

        return Gallery.open(path, encoder=encoder, create=False)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(gallery, *args, **kwargs)`` on the gallery's thread, awaited without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, self.gallery, *args, **kwargs))

    def close(self) -> None:
        """Close the gallery (saving its index cache) on its thread, then stop the thread."""
        try:
            self._pool.submit(self.gallery.close).result()
        finally:
            self._pool.shutdown(wait=True)
