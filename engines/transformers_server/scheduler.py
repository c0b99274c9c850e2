"""One generation at a time, in one worker thread (so the event loop keeps answering /health and /metrics), and at
most `max_queue` requests waiting behind it: one more is refused (QueueFull → 503). The slot is freed when the
worker thread returns, never earlier: a client that leaves cannot make two generations overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from engines.transformers_server.errors import QueueFull


class GenerationSlot:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.waiting = 0
        self.running = 0
        self._lock = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generation")

    async def start(self, work: Callable[[], object]) -> asyncio.Future:
        """Wait for the slot, then run `work` in the worker thread; returns its future (which frees the slot
        when `work` returns). QueueFull at once when `max_queue` requests already wait."""
        if self._lock.locked() and self.waiting >= self.max_queue:
            raise QueueFull(self.max_queue)
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        self.running = 1
        try:
            done = self._worker.submit(work)
        except BaseException:
            self._release()
            raise
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return asyncio.wrap_future(done)

    def _release(self) -> None:
        self.running = 0
        self._lock.release()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
