"""An asyncio micro-batcher: concurrent requests share one model call.

:class:`MicroBatcher` collects submitted items for at most ``max_wait_ms`` after the first one
arrives (or until ``max_batch_size`` are waiting), runs ``fn`` on the batch in one worker thread
(the event loop keeps answering, e.g. ``/health``, meanwhile) and hands each caller its own result.
A lone request waits at most ``max_wait_ms`` longer than it would unbatched; under load, batches
fill up and the per-request model cost drops. ``max_queue`` bounds the items waiting: beyond it
:meth:`MicroBatcher.submit` raises :class:`Busy` at once instead of letting latency grow without
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BatchStats", "Busy", "MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")


class Busy(Exception):
    """The queue is full: the caller should retry later (HTTP 503)."""


@dataclass
class BatchStats:
    """Counters of a batcher (served at ``GET /health``)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    busy_refusals: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The counters and the mean batch size."""
        mean = self.requests / self.batches if self.batches else 0.0
        return {
            "requests": self.requests,
            "batches": self.batches,
            "mean_batch_size": round(mean, 3),
            "largest_batch": self.largest_batch,
            "busy_refusals": self.busy_refusals,
        }


class MicroBatcher(Generic[T, R]):
    """Run ``fn`` on batches of submitted items.

    Args:
        fn: ``items -> results`` (one result per item, same order), run in a worker thread. An
            exception fails every request of the batch with it.
        max_batch_size: the most items per call.
        max_wait_ms: how long the first item of a batch waits for others.
        max_queue: the most items waiting; more raise :class:`Busy`.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexrec-batch")

    async def start(self) -> None:
        """Start the batching loop (on the running event loop)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result.

        Raises:
            Busy: ``max_queue`` items are already waiting.
        """
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self._queue.qsize() >= self.max_queue:
            self.stats.busy_refusals += 1
            raise Busy(f"{self._queue.qsize()} requests are waiting; retry later")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            self.stats.requests += len(live)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            try:
                results = await loop.run_in_executor(
                    self._executor, self.fn, [item for item, _ in live]
                )
            except Exception as exc:  # every request of the batch fails with it
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
