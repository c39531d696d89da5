"""`MicroBatcher` alone: batches by size and wait, each caller gets its own results, errors reach the callers
of the failed batch only."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batcher import MicroBatcher


class Recorder:
    """A batch function that doubles numbers and records the batches it was called with."""

    def __init__(self, fail_on: int | None = None, block: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.block = block

    def __call__(self, items: list[int]) -> list[int]:
        if self.block is not None:
            self.block.wait(5)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"cannot take {self.fail_on}")
        return [2 * x for x in items]


async def _submit_all(batcher: MicroBatcher, requests: list[list[int]]) -> list[object]:
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.close()


@pytest.mark.parametrize(
    ("max_batch_size", "requests", "batch_sizes"),
    [
        (4, [[i] for i in range(10)], [4, 4, 2]),  # concurrent single-item requests fill batches of 4
        (1, [[i] for i in range(5)], [1, 1, 1, 1, 1]),  # max batch size 1: no batching
        (4, [[0, 1, 2], [3, 4], [5]], [3, 3]),  # a request that would overflow the batch waits for the next
        (2, [[0, 1, 2, 3, 4], [5]], [5, 1]),  # a request larger than the batch runs alone
    ],
)
def test_requests_are_batched_and_each_caller_gets_its_own_answer(
    max_batch_size: int, requests: list[list[int]], batch_sizes: list[int]
) -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=max_batch_size, max_latency_ms=50)
    results = asyncio.run(_submit_all(batcher, requests))
    assert results == [[2 * x for x in r] for r in requests]
    assert [len(b) for b in run.batches] == batch_sizes
    assert batcher.stats.batches == len(batch_sizes) and batcher.stats.requests == len(requests)


def test_requests_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    release = threading.Event()
    run = Recorder(block=release)
    batcher = MicroBatcher(run, max_batch_size=8, max_latency_ms=0)

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.05)  # the first batch ([0]) is running, blocked
        later = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        release.set()
        try:
            return await asyncio.gather(first, *later)
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) == [[0], [2], [4], [6], [8], [10]]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]


def test_a_failed_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    run = Recorder(fail_on=3)
    batcher = MicroBatcher(run, max_batch_size=2, max_latency_ms=50)

    async def scenario() -> tuple[list[object], list[int]]:
        first = await asyncio.gather(*(batcher.submit([i]) for i in range(4)), return_exceptions=True)
        after = await batcher.submit([7])
        await batcher.close()
        return first, after

    first, after = asyncio.run(scenario())
    assert first[:2] == [[0], [2]]
    assert all(isinstance(e, RuntimeError) and "cannot take 3" in str(e) for e in first[2:])
    assert after == [14]


@pytest.mark.parametrize(("size", "latency", "match"), [(0, 1, "max_batch_size"), (1, -1, "max_latency_ms")])
def test_bad_settings_are_refused(size: int, latency: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MicroBatcher(Recorder(), max_batch_size=size, max_latency_ms=latency)
