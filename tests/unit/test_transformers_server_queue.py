"""The Transformers engine's generation slot: one generation at a time, at most max_queue waiting, and the slot
freed only when the worker thread returns, even when its client left."""

import asyncio
import threading

import pytest

from engines.transformers_server.errors import QueueFull
from engines.transformers_server.scheduler import GenerationSlot


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_queue_bound_and_order():
    async def scenario():
        slot, gate, order = GenerationSlot(max_queue=1), threading.Event(), []
        first = await slot.start(lambda: (gate.wait(5), order.append("first")))
        assert (slot.running, slot.waiting) == (1, 0)
        second = asyncio.create_task(slot.start(lambda: order.append("second")))
        await asyncio.sleep(0.01)
        assert slot.waiting == 1
        with pytest.raises(QueueFull) as full:
            await slot.start(lambda: None)
        assert (full.value.status, full.value.headers["Retry-After"]) == (503, "1")
        gate.set()
        await first
        await (await second)
        assert order == ["first", "second"] and (slot.running, slot.waiting) == (0, 0)
    run(scenario())


def test_a_waiter_that_leaves_gives_its_place_back():
    async def scenario():
        slot, gate = GenerationSlot(max_queue=1), threading.Event()
        first = await slot.start(lambda: gate.wait(5))
        waiter = asyncio.create_task(slot.start(lambda: None))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert slot.waiting == 0
        gate.set()
        await first
        await (await slot.start(lambda: None))
    run(scenario())


def test_the_slot_stays_taken_until_the_thread_returns_even_if_its_client_left():
    async def scenario():
        slot, gate, overlap, busy = GenerationSlot(max_queue=1), threading.Event(), [], threading.Lock()

        def work():
            if not busy.acquire(blocking=False):
                overlap.append(True)
                return
            try:
                gate.wait(0.2)
            finally:
                busy.release()

        first = await slot.start(work)
        first.cancel()  # what a handler's cancellation does to the future it awaits
        second = await slot.start(work)
        await second
        assert overlap == []
    run(scenario())
