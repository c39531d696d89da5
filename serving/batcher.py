"""Batching of concurrent requests inside the model server: one forward pass for many callers.

KServe's Python model server has no request batching of its own (KServe's batcher is an agent sidecar, V1
only), so the model batches: each request puts its items (texts) on an asyncio queue and awaits a future.
One worker task takes the first waiting request, then gathers more — every request already queued, and
those that arrive within ``max_latency_ms`` of the first — until ``max_batch_size`` items; it runs the
batch function once, in a thread of its own (the event loop keeps accepting requests meanwhile), and hands
each caller its own slice of the results.  Requests that arrive while a batch runs form the next batch, so
under load batches fill without waiting.  A request with more items than ``max_batch_size`` runs alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Request(Generic[T]):
    items: Sequence[T]
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchStats:
    """What the worker has done: forward passes (batches), requests and items they covered."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    largest_batch: int = 0


class MicroBatcher(Generic[T, R]):
    """Gathers concurrent `submit` calls into calls of ``run`` on at most ``max_batch_size`` items.

    Args:
        run: Items → one result per item, in order (a blocking function: it runs in a worker thread).
        max_batch_size: Items per call of ``run`` at most (1: every request runs alone, no waiting).
        max_latency_ms: How long a batch waits for more requests after its first one.
        on_batch: Called after each batch with (items, requests, seconds) — for metrics.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        max_latency_ms: float,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be at least 0, got {max_latency_ms}.")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request[T]] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: _Request[T] | None = None  # taken from the queue but left for the next batch
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results of ``items`` (in order), computed in a batch with other callers' items."""
        if not items:
            return []
        self._ensure_worker()
        assert self._queue is not None and self._loop is not None
        request = _Request(items=items, future=self._loop.create_future())
        await self._queue.put(request)
        return await request.future

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._work(), name="micro-batcher")

    async def close(self) -> None:
        """Stop the worker (pending callers get CancelledError) and its thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _next(self, timeout: float | None) -> _Request[T] | None:
        """The next live request: the held one, a queued one, or one arriving within ``timeout`` (None: wait)."""
        assert self._queue is not None
        while True:
            if self._held is not None:
                request, self._held = self._held, None
            elif not self._queue.empty():
                request = self._queue.get_nowait()
            elif timeout is not None and timeout <= 0:
                return None
            else:
                try:
                    request = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    return None
            if not request.future.done():  # a caller that went away (cancelled) is skipped
                return request

    async def _gather(self) -> list[_Request[T]]:
        """One batch: the first request, then more until the size limit or the wait is over."""
        first = await self._next(None)
        assert first is not None and self._loop is not None
        batch, size = [first], len(first.items)
        deadline = self._loop.time() + self.max_latency_s
        while size < self.max_batch_size:
            request = await self._next(max(0.0, deadline - self._loop.time()))
            if request is None:
                break
            if size + len(request.items) > self.max_batch_size:
                self._held = request
                break
            batch.append(request)
            size += len(request.items)
        return batch

    async def _work(self) -> None:
        assert self._loop is not None
        while True:
            batch = await self._gather()
            items: list[T] = [item for request in batch for item in request.items]
            start = self._loop.time()
            try:
                results: Any = await self._loop.run_in_executor(self._executor, self.run, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
            except Exception as error:  # every caller of the batch gets the error; the worker goes on
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            seconds = self._loop.time() - start
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.items += len(items)
            self.stats.largest_batch = max(self.stats.largest_batch, len(items))
            if self.on_batch is not None:
                self.on_batch(len(items), len(batch), seconds)
            offset = 0
            for request in batch:
                n = len(request.items)
                if not request.future.done():
                    request.future.set_result(list(results[offset : offset + n]))
                offset += n
