"""Dynamic batching of identify: concurrent requests share one embedder call and one index search.

A request's queries join a queue. When the gallery thread is idle, the first request waits at most
``max_wait_ms`` for others (or until ``max_batch`` queries are queued); while a batch runs, new requests
accumulate and go together as the next batch. One batch is one ``Gallery.identify`` call with the largest
``k`` asked; each request gets its own rows back, cut to its own ``k``. When a batch fails on one request's
input, its requests are answered one by one, so a bad upload never fails its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oneshot.errors import OneshotError
from oneshot.service.errors import ApiError
from oneshot.service.worker import GalleryWorker


@dataclass
class _Job:
    examples: list[Any]
    k: int
    future: asyncio.Future


def identify_batch(gallery: Any, jobs: list[tuple[list[Any], int]]) -> list[Any]:
    """On the gallery thread: one ``identify`` for every job's examples -> per job its Identifications
    (candidates cut to its k) or the exception its own examples raise."""
    if len(gallery) == 0:
        raise ApiError(409, "gallery_empty", "the gallery has no classes yet: enrol one first (POST /v1/classes)")
    flat = [x for ex, _ in jobs for x in ex]
    kmax = max(k for _, k in jobs)
    try:
        res = gallery.identify(flat, k=kmax)
    except OneshotError:
        if len(jobs) == 1:
            raise
        out: list[Any] = []
        for ex, k in jobs:
            try:
                out.append(gallery.identify(ex, k=k))
            except OneshotError as exc:
                out.append(exc)
        return out
    out, i = [], 0
    for ex, k in jobs:
        part = res[i : i + len(ex)]
        for r in part:
            r.candidates = r.candidates[:k]
        out.append(part)
        i += len(ex)
    return out


class IdentifyBatcher:
    """Collects identify requests and runs them in batches on the gallery's thread.

    Args:
        worker: the gallery's thread.
        max_batch: most queries per batch.
        max_wait_ms: the longest a request waits for company when the gallery thread is idle.
        observe: called with each batch's number of queries (metrics).
    """

    def __init__(
        self, worker: GalleryWorker, max_batch: int = 64, max_wait_ms: float = 2.0, observe: Callable[[int], None] | None = None
    ) -> None:
        self.worker, self.max_batch, self.max_wait = worker, max_batch, max_wait_ms / 1000
        self.observe = observe or (lambda n: None)
        self._queue: list[_Job] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="oneshot-identify-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(OneshotError("the service is shutting down: retry"))

    def _queued(self) -> int:
        return sum(len(j.examples) for j in self._queue)

    async def identify(self, examples: list[Any], k: int) -> list[Any]:
        """The Identifications of ``examples`` (in order), computed in some batch."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(examples, k, fut))
        self._wake.set()
        if self._queued() >= self.max_batch:
            self._full.set()
        return await fut

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._queued() < self.max_batch and self.max_wait > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), self.max_wait)
                except TimeoutError:
                    pass
            batch: list[_Job] = []
            n = 0
            while self._queue and (not batch or n + len(self._queue[0].examples) <= self.max_batch):
                job = self._queue.pop(0)
                batch.append(job)
                n += len(job.examples)
            if not self._queue:
                self._wake.clear()
            if self._queued() < self.max_batch:
                self._full.clear()
            if not batch:
                continue
            self.observe(n)
            try:
                results = await self.worker.run(identify_batch, [(j.examples, j.k) for j in batch])
            except Exception as exc:  # noqa: BLE001 -- handed to each waiting request, which answers it
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            for j, r in zip(batch, results, strict=True):
                if j.future.done():
                    continue
                if isinstance(r, Exception):
                    j.future.set_exception(r)
                else:
                    j.future.set_result(r)
