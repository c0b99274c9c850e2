"""Several models resident at once (router/engine_group.py) over fake programs: a model that fits goes to a free
instance and stays there, one that does not evicts the least recently used idle instance (never one in use,
never a pinned or keep_loaded one), and an engine with one instance swaps exactly as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest

from engines import llamacpp
from engines.memory import GiB, MemoryEstimate
from router import load_runner
from router.config import parse_config
from router.engine_group import NoInstanceFree, NotResident
from router.engine_state import State
from router.memory_guard import MemoryLedger
from router.models import resolve_spec, route_request
from tests.unit.fakes import FakeSupervisors, Held, make_group, no_illegal_transitions, spec  # noqa: F401

CONFIG = """
router: {{load_timeout_seconds: 5, request_wait_seconds: 5, drain_seconds: 5, memory_reserve_gib: 1,
          min_residency_seconds: 0, memory_settle_seconds: 0}}
engines: {{llamacpp: {{port: 18002, max_instances: {instances}}}}}
models:
  a: {{engine: llamacpp, path: a.gguf}}
  b: {{engine: llamacpp, path: b.gguf}}
  c: {{engine: llamacpp, path: c.gguf, keep_loaded: {keep_c}}}
"""
MODEL_GIB = 1.0  # every model's estimate, and what each running fake engine takes from the box


class Box:
    """A machine with room for `fits` models beside the 1 GiB reserve: available memory is what the running fake
    engines leave."""

    def __init__(self, fits: int):
        self.total = (1 + fits * MODEL_GIB + 0.5) * GiB
        self.supervisors: FakeSupervisors | None = None

    def available(self) -> int:
        running = sum(1 for s in self.supervisors.programs.values() if s.state in ("RUNNING", "STARTING"))
        return int(self.total - running * MODEL_GIB * GiB)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ULLM_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    for name in "abc":
        (tmp_path / "models" / f"{name}.gguf").write_bytes(b"GGUF")
    (tmp_path / "run" / "engines").mkdir(parents=True)
    monkeypatch.setattr(llamacpp, "estimate_memory",
                        lambda plan: MemoryEstimate(int(MODEL_GIB * GiB), int(MODEL_GIB * GiB), 0, 0, "test", "cpu"))
    # what stopping a running fake engine frees (a swap's check counts it; fake PIDs have no real memory)
    monkeypatch.setattr(load_runner, "sample_tree", lambda pid: SimpleNamespace(rss_bytes=MODEL_GIB * GiB, anon_bytes=MODEL_GIB * GiB))
    return tmp_path


def engine(home, instances: int, fits: int, keep_c: bool = False):
    config = parse_config(CONFIG.format(instances=instances, keep_c=str(keep_c).lower()))
    box = Box(fits)

    async def measure(pid: int) -> int:
        return 0
    ledger = MemoryLedger(available=box.available, measure=measure, settle_seconds=0)
    group, supervisors, _ = make_group(home / "run", config, ledger=ledger)
    box.supervisors = supervisors
    return config, group, supervisors


async def ask(group, config, model: str):
    """One request for `model`, through placement and the real admission: the instance that answered it."""
    manager, routing = await route_request(group, model, config)
    async with manager.admitted(routing.wanted, routing.load, timeout=5) as served:
        assert served.served_name == model
    return manager


def pids(group) -> dict[str, int]:
    return {i.name: i.details.process.pid for i in group.instances if i.details.process and i.details.process.pid}


def test_one_instance_swaps_as_before(home):
    async def scenario():
        config, group, supervisors = engine(home, instances=1, fits=4)
        assert (await ask(group, config, "a")).name == "llamacpp"
        assert (await ask(group, config, "b")).name == "llamacpp"  # swapped in place, though memory had room
        assert supervisors.starts() == 2 and group.instances[0].details.spec.served_name == "b"
        assert all(i.vacant() for i in group.instances[1:])
    asyncio.run(scenario())


def test_two_models_that_fit_stay_resident_and_alternating_requests_start_nothing(home):
    async def scenario():
        config, group, supervisors = engine(home, instances=2, fits=2)
        first, second = await ask(group, config, "a"), await ask(group, config, "b")
        assert (first.name, second.name) == ("llamacpp", "llamacpp-1")
        assert second.port == 18102  # the engine's port + 100 × its index
        before = pids(group)
        for model in "abababab":
            answered = await ask(group, config, model)
            assert answered is (first if model == "a" else second)
        assert supervisors.starts() == 2 and pids(group) == before  # no swap, no restart
        assert group.primary is second or group.primary is first
    asyncio.run(scenario())


def test_a_model_that_does_not_fit_evicts_the_least_recently_used_idle_instance(home):
    async def scenario():
        config, group, _ = engine(home, instances=3, fits=2)
        a, b = await ask(group, config, "a"), await ask(group, config, "b")
        await ask(group, config, "a")  # a used last: b is the least recently used
        a_pid = a.details.process.pid
        c = await ask(group, config, "c")
        assert c is b and b.details.spec.served_name == "c"  # the free third instance had no room
        assert a.details.spec.served_name == "a" and a.details.process.pid == a_pid
        assert group.instances[2].vacant()
    asyncio.run(scenario())


def test_an_instance_with_a_request_in_flight_is_never_the_one_evicted(home):
    async def scenario():
        config, group, _ = engine(home, instances=2, fits=2)
        a = await ask(group, config, "a")
        b = await ask(group, config, "b")
        held = Held(a, "a")  # a streams; a is the least recently used
        assert (await held.served()).served_name == "a"
        c = await ask(group, config, "c")
        assert c is b and a.details.spec.served_name == "a" and a.state is State.LOADED
        await held.release()
    asyncio.run(scenario())


def test_a_pinned_or_keep_loaded_model_is_never_evicted(home):
    async def scenario():
        config, group, _ = engine(home, instances=2, fits=2, keep_c=True)
        c = await ask(group, config, "c")  # keep_loaded in the catalog
        b = await ask(group, config, "b")
        assert group.is_pinned(c) and not group.is_pinned(b)
        a = await ask(group, config, "a")  # c is the least recently used, but kept
        assert a is b and c.details.spec.served_name == "c"
        group.pin("a", True)  # now both are held
        with pytest.raises(NoInstanceFree) as refused:
            await route_request(group, "b", config)
        assert refused.value.status == 409 and refused.value.code == "no_instance_free"
        assert "pinned or keep_loaded" in refused.value.message
        group.pin("a", False)
        assert (await ask(group, config, "b")) is a
        with pytest.raises(NotResident):
            group.pin("a", True)  # not resident any more
    asyncio.run(scenario())


def test_pins_outlive_a_router_restart_and_a_broken_pins_file_is_forgotten_not_fatal(home):
    from router.engine_group import EngineGroup

    async def scenario():
        config, group, supervisors = engine(home, instances=2, fits=2)
        await ask(group, config, "a")
        await ask(group, config, "b")
        group.pin("a", True)
        group.pin("b", True)
        group.pin("b", False)
        restarted = EngineGroup("llamacpp", config, supervisors, home / "run", probe=supervisors.probe)
        assert restarted.pinned == {"a"}  # what the admin API left, read back by the next router
        (home / "run" / "engines" / "llamacpp.pinned.json").write_text('{"pinned": "a"}')
        assert EngineGroup("llamacpp", config, supervisors, home / "run", probe=supervisors.probe).pinned == set()
    asyncio.run(scenario())


def test_a_resident_model_is_answered_where_it_is_without_a_load(home):
    async def scenario():
        config, group, supervisors = engine(home, instances=2, fits=2)
        a, b = await ask(group, config, "a"), await ask(group, config, "b")
        manager, routing = await route_request(group, "a", config)
        assert manager is a and routing.load is None and routing.wanted == "a"
        manager, routing = await route_request(group, "gpt-4o", config)  # no catalog model: the most recent
        assert manager is b and manager is group.primary and routing.wanted is None
        assert supervisors.starts() == 2
    asyncio.run(scenario())


def test_an_explicit_load_replaces_the_shown_instances_model_unless_it_keeps_the_others(home):
    async def scenario():
        config, group, supervisors = engine(home, instances=2, fits=2)
        specs = {name: resolve_spec(config, name, "llamacpp", {}) for name in "abc"}
        first, _ = await group.load(specs["a"])
        assert first.name == "llamacpp"
        replaced, _ = await group.load(specs["b"])  # the original request: the engine's model is replaced
        assert replaced is first and first.details.spec.served_name == "b" and group.instances[1].vacant()
        added, _ = await group.load(specs["c"], keep_others=True)
        assert added.name == "llamacpp-1" and first.details.spec.served_name == "b"
        again, seconds = await group.load(specs["b"], keep_others=True)  # resident: nothing restarts
        assert again is first and seconds == 0.0 and supervisors.starts() == 3
    asyncio.run(scenario())


def test_unload_takes_every_instance_or_the_one_named(home):
    async def scenario():
        config, group, _ = engine(home, instances=2, fits=2)
        await ask(group, config, "a")
        b = await ask(group, config, "b")
        assert await group.unload("a") == ["llamacpp"]
        assert b.details.spec.served_name == "b" and group.instances[0].state is State.IDLE
        with pytest.raises(NotResident):
            await group.unload("a")
        assert sorted(await group.unload()) == ["llamacpp", "llamacpp-1"]
        assert all(i.state is State.IDLE for i in group.instances)
    asyncio.run(scenario())


def test_status_lists_each_instance(home):
    async def scenario():
        config, group, _ = engine(home, instances=2, fits=2)
        await ask(group, config, "a")
        b = await ask(group, config, "b")
        group.pin("b", True)
        reports = [group.report(i) for i in group.shown()]
        assert [(r["name"], r["model"], r["state"], r["port"], r["pinned"]) for r in reports] == [
            ("llamacpp", "a", "loaded", 18002, False), ("llamacpp-1", "b", "loaded", 18102, True)]
        assert all(r["pid"] and r["in_flight"] == 0 for r in reports) and group.primary is b
    asyncio.run(scenario())


def test_vllm_instances_on_a_gpu_may_not_claim_more_than_the_whole_gpu(home, monkeypatch):
    from router import engine_group
    monkeypatch.setattr(engine_group, "has_cuda_gpu", lambda: True)
    _, group, _ = engine(home, instances=2, fits=2)
    group.instances[0].details.spec = replace(spec("a"), options={"gpu_memory_utilization": 0.6})  # as loaded
    asking = replace(spec("b"), options={"gpu_memory_utilization": 0.5})
    why = group.gpu_shares_exceeded(asking)
    assert why and "0.5" in why and "llamacpp 0.6" in why and "at most 1" in why
    assert group.gpu_shares_exceeded(replace(asking, options={"gpu_memory_utilization": 0.4})) is None
    assert group.gpu_shares_exceeded(asking, replacing=group.instances[0]) is None  # in place of the 0.6 one
