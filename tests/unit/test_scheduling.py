"""Swap-aware scheduling against a fake supervisord: requests for two models of one engine are served grouped
by model (a minimum residency while requests keep coming) with a bound on any request's wait; loads that
every client has left are cancelled, queued or running."""

from __future__ import annotations

import asyncio
import time

import pytest

from engines.spec import read_plan
from router.engine_state import State
from tests.unit.fakes import Held, make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B = spec("a"), spec("b")


async def interleaved(manager, requests: int, deadline_seconds: float = 60) -> tuple[int, list[float], float]:
    """Two clients, each asking for its own model back to back until each has had `requests` answers (a count,
    not a wall-clock window: a loaded box only makes it take longer, within a generous deadline):
    (requests answered, waits, seconds it took)."""
    waits: list[float] = []
    started = time.monotonic()
    deadline = started + deadline_seconds

    async def client(model):
        answered = 0
        while answered < requests:
            assert time.monotonic() < deadline, f"{answered} of {requests} answers in {deadline_seconds:g} s"
            asked = time.monotonic()
            async with manager.admitted(model.served_name, None if manager.will_serve(model.served_name) else model,
                                        timeout=30):
                waits.append(time.monotonic() - asked)
                await asyncio.sleep(0.01)  # the engine answers
            answered += 1
        return answered
    counts = await asyncio.gather(client(A), client(B))
    return sum(counts), waits, time.monotonic() - started


@pytest.mark.parametrize("residency", [0.0, 0.5])
def test_interleaved_requests_swap_at_most_once_per_residency_and_none_waits_past_the_bound(tmp_path, residency):
    async def scenario():
        manager, sup, events = make_manager(tmp_path, min_residency_seconds=residency)
        await manager.load(A)
        answered, waits, elapsed = await interleaved(manager, 150 if residency else 20)
        return answered, waits, elapsed, len(events.swapped_in) - 1  # the first is the initial load
    answered, waits, elapsed, swaps = asyncio.run(scenario())
    print(f"\nresidency {residency} s: {answered} requests in {elapsed:.2f} s, {swaps} swaps, longest wait "
          f"{max(waits):.2f} s")
    if residency:
        assert swaps <= elapsed / residency + 2  # one swap per residency at most (the loads are instant here)
        assert max(waits) < residency + 3.0  # passed over for one residency at most (+ room), never starved
    else:  # without a residency nearly every request swaps: the rule matters
        assert swaps >= answered / 4, (swaps, answered)


def test_an_idle_model_is_swapped_out_at_once_whatever_its_residency(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        asked = time.monotonic()
        async with manager.admitted("b", B, timeout=5) as served:
            assert served == B
        assert time.monotonic() - asked < 5  # not the 60 s residency: nobody was asking for A
    asyncio.run(scenario())


def test_during_the_residency_the_served_model_answers_its_requests_ahead_of_the_swap(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):  # A is busy
            for_b = Held(manager, "b", B, timeout=120)
            await until(lambda: manager.holding_until is not None, what="the swap to wait for A's residency")
            assert manager.will_serve("a") and manager.state is State.LOADED
            async with manager.admitted("a", None, timeout=1) as served:  # a later request for A goes ahead
                assert served == A
            assert "a serves its requests for up to" in manager.admission.why_waiting("b", 1.0)  # what B's client hears
        manager.admission.last_request_at = float("-inf")  # A's requests stop coming: the swap goes ahead
        assert await for_b.served() == B
        await for_b.release()
        assert manager.in_flight == 0
    asyncio.run(scenario())


def test_an_explicit_load_does_not_wait_for_the_residency(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):
            pass  # A was just used
        await asyncio.wait_for(manager.load(B), 5)  # an operator's load is not deferred
        assert manager.details.spec == B
    asyncio.run(scenario())


def test_a_load_whose_clients_hung_up_after_the_old_model_stopped_runs_to_its_end(tmp_path):
    """Once the served model is stopped, cancelling would leave the engine with nothing: the load finishes (an
    idle unload can take it later)."""
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=0)
        await manager.load(A)
        sup.auto_ready = False  # B's engine does not answer yet
        request = Held(manager, "b", B, timeout=60)
        await until(lambda: manager.state is State.LOADING and sup.calls.count("start") == 2, what="B to start")
        request.cancel()  # the only client hangs up
        with pytest.raises(asyncio.CancelledError):
            await request.task
        await asyncio.sleep(0.1)
        assert manager.state is State.LOADING and [p.spec for p in manager.queue.loads] == [B]  # not cancelled
        sup.ready_pids.add(sup.pid)
        await until(lambda: manager.state is State.LOADED, what="B to finish loading")
        assert manager.details.spec == B and read_plan(tmp_path, "llamacpp").spec == B
        assert len(sup.started_plans) == 2 and manager.in_flight == 0
    asyncio.run(scenario())


def test_a_load_left_while_it_drained_the_old_model_keeps_the_old_model_serving(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=0, drain_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):  # in flight: the swap drains it first
            request = Held(manager, "b", B, timeout=60)
            await until(lambda: manager.state is State.LOADING, what="the swap to drain A")
            assert manager.details.load_phase == "draining the requests in flight"  # what status shows
            request.cancel()
            await until(lambda: manager.state is State.LOADED, what="A to be kept")
        assert manager.details.spec == A and read_plan(tmp_path, "llamacpp").spec == A
        assert sup.calls.count("stop") == 1 and len(sup.started_plans) == 1  # A was never stopped or restarted
    asyncio.run(scenario())


def test_a_load_left_during_the_residency_changes_nothing(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):
            request = Held(manager, "b", B, timeout=60)
            await until(lambda: manager.holding_until is not None, what="the residency wait")
            request.cancel()
            await until(lambda: not manager.queue.loads and manager.holding_until is None, what="the load to go")
        assert manager.state is State.LOADED and manager.details.spec == A and len(sup.started_plans) == 1
    asyncio.run(scenario())


def test_waiting_requests_and_their_waits_reach_the_metrics(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path, min_residency_seconds=0)
        await manager.load(A)
        started = sup.gate("start")
        for_b = Held(manager, "b", B, timeout=5)
        await until(lambda: events.waiting == {"b": 1}, what="the waiting count")
        started.set()
        assert await for_b.served() == B
        await for_b.release()
        assert events.waiting == {} and len(events.waits) == 1 and events.swapped_in == ["a", "b"]
        assert manager.in_flight == 0
    asyncio.run(scenario())
