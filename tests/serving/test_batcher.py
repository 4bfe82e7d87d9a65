"""The micro-batcher: concurrent items share calls, results go back to their callers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from flexrec.serving.batcher import Busy, MicroBatcher


def test_concurrent_items_are_batched_and_answered_in_order() -> None:
    calls: list[list[int]] = []

    def square(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        return [i * i for i in items]

    async def scenario() -> list[int]:
        batcher = MicroBatcher(square, max_batch_size=4, max_wait_ms=200)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [i * i for i in range(10)]
    assert sorted(i for call in calls for i in call) == list(range(10))
    assert max(len(c) for c in calls) == 4 and len(calls) == 3


def test_a_lone_item_waits_at_most_max_wait() -> None:
    async def scenario() -> float:
        batcher = MicroBatcher(lambda items: list(items), max_batch_size=8, max_wait_ms=30)
        await batcher.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await batcher.submit("x") == "x"
        elapsed = loop.time() - start
        await batcher.stop()
        return elapsed

    assert asyncio.run(scenario()) < 5.0  # 30 ms plus scheduling, on a loaded machine


def test_a_full_queue_refuses_at_once_and_errors_reach_every_caller() -> None:
    release = threading.Event()

    def slow(items: Sequence[int]) -> list[int]:
        release.wait(10)
        if 13 in items:
            raise RuntimeError("unlucky batch")
        return list(items)

    async def scenario() -> None:
        batcher = MicroBatcher(slow, max_batch_size=1, max_wait_ms=0, max_queue=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(1))  # taken by the worker, blocks
        await asyncio.sleep(0.2)
        second = asyncio.create_task(batcher.submit(13))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await batcher.submit(3)
        assert batcher.stats.busy_refusals == 1
        release.set()
        assert await first == 1
        with pytest.raises(RuntimeError, match="unlucky batch"):
            await second
        await batcher.stop()

    asyncio.run(scenario())
