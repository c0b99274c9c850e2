"""Loads that fail or never finish, against a fake supervisord: a failed on-demand load brings back the model
that was served and is remembered; a full run folder reaches the waiters as 507; an engine loading outside a load
(adopted, crash restart) is bounded by load_timeout_seconds; restore never turns an unreadable plan into an
unload on request. Each test names the defect of issue 22 it covers."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from engines.spec import ModelSpec, plan_file, read_plan, unloaded_on_request
from router import load_runner
from router.engine_state import State
from router.errors import LoadFailed, StateNotRecorded
from router.load_queue import FailedLoad, fingerprint
from tests.unit.fakes import make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B = spec("a"), spec("b")


def file_spec(tmp_path, name: str) -> ModelSpec:
    """A spec whose model file exists (its size and time are what 'the file changed' compares)."""
    path = tmp_path / "models" / f"{name}.gguf"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_bytes(b"GGUF" + name.encode())
    return ModelSpec(engine="llamacpp", path=str(path), served_name=name,
                     options={"ctx_size": 2048, "n_gpu_layers": 999, "parallel": 4})


# ---- defect 2: a run folder that cannot take the plan -------------------------------------------------------

def test_a_full_run_folder_during_an_on_demand_load_answers_its_waiter_507(tmp_path, monkeypatch):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)

        def disk_full(*_):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(load_runner, "write_plan", disk_full)
        asked = time.monotonic()
        with pytest.raises(StateNotRecorded) as err:  # not a TypeError, not a wait that runs out
            async with manager.admitted("b", B, timeout=3):
                pass
        assert err.value.status == 507 and err.value.code == "run_folder_full"
        assert time.monotonic() - asked < 2.5, "the waiter heard nothing until its wait ran out"
        with pytest.raises(StateNotRecorded) as admin:  # the admin's load: 507 too
            await manager.load(B)
        assert admin.value.status == 507
        assert manager.state is State.LOADED and manager.details.spec == A and len(sup.started_plans) == 1
    asyncio.run(scenario())


def test_without_log_lines_keeps_the_error_class_and_its_status():
    error = StateNotRecorded("load of b", "/run", OSError(28, "No space left on device"))
    twin = error.without_log_lines("llamacpp")
    assert type(twin) is StateNotRecorded and twin.status == 507 and twin.code == "run_folder_full"
    assert twin.message == error.message
    failed = LoadFailed("engine stopped; last log lines:\nsecret line").without_log_lines("llamacpp")
    assert "secret line" not in failed.message and "GET /v1/engines/llamacpp/logs" in failed.message


# ---- defect 4: a failed on-demand load ----------------------------------------------------------------------

def test_a_failed_on_demand_load_brings_back_the_model_that_was_served_and_is_remembered(tmp_path):
    async def scenario():
        a, b = file_spec(tmp_path, "a"), file_spec(tmp_path, "b")
        manager, sup, events = make_manager(tmp_path)
        await manager.load(a)
        sup.broken.add("b")  # a broken catalog entry
        with pytest.raises(LoadFailed):
            async with manager.admitted("b", b, timeout=5):
                pass
        await until(lambda: manager.state is State.LOADED, what="the previous model to come back")
        assert manager.details.spec == a and read_plan(tmp_path, "llamacpp").spec == a
        async with manager.admitted("a", None, timeout=5) as served:  # and it serves
            assert served == a
        assert events.on_demand_failures == [("b", "failed")]
        assert ("b", False) in events.loads  # the failure is counted with the loads too

        starts = sup.calls.count("start")
        with pytest.raises(LoadFailed) as again:  # remembered: not tried on demand again
            async with manager.admitted("b", b, timeout=5):
                pass
        assert again.value.status == 409 and again.value.code == "model_load_failed"
        assert "x-should-retry" in again.value.headers()
        assert sup.calls.count("start") == starts and manager.details.spec == a
        assert events.on_demand_failures[-1] == ("b", "refused")

        sup.broken.clear()
        path = b.path
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # its file changes: it may be tried again
        async with manager.admitted("b", b, timeout=5) as served:
            assert served == b
    asyncio.run(scenario())


def test_an_admins_load_forgets_the_remembered_failure(tmp_path):
    async def scenario():
        a, b = file_spec(tmp_path, "a"), file_spec(tmp_path, "b")
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(a)
        sup.broken.add("b")
        with pytest.raises(LoadFailed):
            async with manager.admitted("b", b, timeout=5):
                pass
        await until(lambda: manager.state is State.LOADED, what="a to come back")
        assert manager.known_failure(b) is not None
        sup.broken.clear()
        await manager.load(b)  # an admin tries it
        assert manager.known_failure(b) is None and manager.details.spec == b
        changed = ModelSpec(**{**b.__dict__, "options": {**b.options, "ctx_size": 1024}})
        manager.queue.failed["b"] = FailedLoad(b, fingerprint(b), "x", 0)
        assert manager.known_failure(changed) is None  # a changed catalog entry is a new try
    asyncio.run(scenario())


# ---- defect 7: loading for ever outside a load ---------------------------------------------------------------

def test_an_adopted_engine_that_never_answers_is_stopped_after_the_load_timeout(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        sup.ready_pids.clear()  # the engine runs but no longer answers its readiness URLs
        again, _, _ = make_manager(tmp_path, sup, load_timeout_seconds=0.3)
        await again.restore(default=None)
        assert again.state is State.LOADING  # adopted
        started = time.monotonic()

        async def refreshed_to_error() -> bool:
            await again.refresh()
            return again.state is State.ERROR
        while not await refreshed_to_error():
            assert time.monotonic() - started < 5, "still loading 5 s after a 0.3 s load timeout"
            await asyncio.sleep(0.05)
        print(f"\nadopted engine that never answered: error after {time.monotonic() - started:.2f} s")
        assert "did not become ready within 0.3 s" in again.details.last_error
        assert sup.state == "STOPPED" and read_plan(tmp_path, "llamacpp") is None
    asyncio.run(scenario())


def test_a_crash_restart_that_never_answers_is_stopped_after_the_load_timeout(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, load_timeout_seconds=0.3)
        await manager.load(A)
        sup.crash_and_restart()  # a new PID that never answers
        await manager.refresh()
        assert manager.state is State.LOADING
        deadline = time.monotonic() + 5
        while manager.state is not State.ERROR:
            assert time.monotonic() < deadline, "a crash restart stayed loading for ever"
            await manager.refresh()
            await asyncio.sleep(0.05)
        assert manager.machine.cause == "it never became ready" and sup.state == "STOPPED"
    asyncio.run(scenario())


# ---- defect 8: restore and an unreadable plan ----------------------------------------------------------------

def test_an_unreadable_plan_at_restore_does_not_stop_the_default_for_good(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        plan_file(tmp_path, "llamacpp").write_text("{not json")  # a torn or corrupt state file
        again, _, _ = make_manager(tmp_path, sup)
        await again.restore(default=B)
        await until(lambda: not again.queue.loads and not again._background, what="restore's work")
        assert not unloaded_on_request(tmp_path, "llamacpp"), "restore wrote the unloaded-on-request marker"
        assert again.state is State.LOADED and again.details.spec == B  # the configured default replaces it
    asyncio.run(scenario())


def test_restore_stopping_an_unwanted_engine_leaves_the_default_free_to_load_later(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        plan_file(tmp_path, "llamacpp").unlink()  # no plan, no marker: nothing was asked for
        again, _, _ = make_manager(tmp_path, sup)
        await again.restore(default=None)
        await until(lambda: sup.state == "STOPPED" and not again._background, what="the stop")
        assert not unloaded_on_request(tmp_path, "llamacpp")
        third, _, _ = make_manager(tmp_path, sup)
        await third.restore(default=B)  # a default configured later still loads
        await until(lambda: third.state is State.LOADED, what="the default")
        assert third.details.spec == B
    asyncio.run(scenario())
