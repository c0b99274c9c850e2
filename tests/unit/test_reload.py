"""models.yaml reload against a fake supervisord: only a changed launch plan restarts an engine, ports never
go out of step with the running engine, and an invalid file changes nothing. Also loads and unloads racing."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from engines.spec import read_plan
from router.config import load_config
from router.engine_state import State
from router.models import resolve_spec
from router.reload import InvalidConfig, reload
from router.state import LiveConfig
from tests.unit.fakes import make_group

CONFIG = {
    "router": {"load_timeout_seconds": 5},
    "engines": {"vllm": {"port": 18001}, "llamacpp": {"port": 18002}},
    "models": {"a": {"engine": "llamacpp", "path": "a.gguf", "options": {"ctx_size": 2048}},
               "b": {"engine": "llamacpp", "path": "b.gguf"}},
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ULLM_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    for name in ("a", "b"):
        (tmp_path / "models" / f"{name}.gguf").write_bytes(b"GGUF")
    (tmp_path / "run").mkdir()
    return tmp_path


def write(home, edit=None) -> LiveConfig:
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    if edit:
        edit(config)
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    return LiveConfig(load_config(path), path)


async def loaded_engine(home, model: str = "a"):
    """The llamacpp engine with `model` on its instance 0 (`manager`, whose fake program is `sup`), and the
    engines as reload takes them."""
    live = write(home)
    group, supervisors, _ = make_group(home / "run", live.current)
    manager = group.instances[0]
    await manager.load(resolve_spec(live.current, model, "llamacpp", {}))
    return live, manager, supervisors["llamacpp"], {"llamacpp": group}


def test_an_unchanged_file_restarts_nothing(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        report = await reload(live, engines)
        assert report["engines"]["llamacpp"] == {"restarted": False, "note": "unchanged"}
        assert len(sup.started_plans) == 1
    asyncio.run(scenario())


def test_new_extra_args_restart_the_engine_with_them(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        write(home, lambda c: c["engines"]["llamacpp"].update(extra_args=["--threads", "1"]))
        report = await reload(live, engines)
        assert report["engines"]["llamacpp"]["restarted"] is True, report
        assert sup.started_plans[-1].argv[-2:] == ["--threads", "1"] and len(sup.started_plans) == 2
        assert read_plan(home / "run", "llamacpp").argv == sup.started_plans[-1].argv
    asyncio.run(scenario())


def test_a_new_port_restarts_the_engine_there(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        write(home, lambda c: c["engines"]["llamacpp"].update(port=18099))
        sup.probed_ports.clear()
        report = await reload(live, engines)
        assert report["engines"]["llamacpp"]["restarted"] is True
        assert manager.port == 18099 and set(sup.probed_ports) == {18099}
    asyncio.run(scenario())


def test_an_engine_kept_running_keeps_its_port_and_says_so(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)

        def edit(config):
            config["engines"]["llamacpp"]["port"] = 18099
            del config["models"]["a"]
        write(home, edit)
        report = await reload(live, engines)
        note = report["engines"]["llamacpp"]["note"]
        assert "removed from the catalog" in note and "stays on port 18002" in note and "18099" in note
        assert manager.port == 18002 and len(sup.started_plans) == 1  # the router talks to where it runs
    asyncio.run(scenario())


def test_an_invalid_file_changes_nothing(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        before = live.current
        (home / "models.yaml").write_text("engines: [\n")
        with pytest.raises(InvalidConfig):
            await reload(live, engines)
        assert live.current is before and manager.state is State.LOADED and len(sup.started_plans) == 1
    asyncio.run(scenario())


def test_an_idle_engine_takes_new_settings_at_its_next_load(home):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        await manager.unload()
        write(home, lambda c: c["engines"]["llamacpp"].update(port=18099))
        report = await reload(live, engines)
        assert report["engines"]["llamacpp"] == {"restarted": False, "note": "unchanged"}
        assert manager.state is State.IDLE and len(sup.started_plans) == 1
        await manager.load(resolve_spec(live.current, "a", "llamacpp", {}))
        assert manager.port == 18099 and sup.started_plans[-1].port == 18099
    asyncio.run(scenario())


@pytest.mark.parametrize("order", ["unload-then-load", "load-then-unload"])
def test_loads_and_unloads_racing_apply_in_arrival_order(home, order):
    async def scenario():
        live, manager, sup, engines = await loaded_engine(home)
        b = resolve_spec(live.current, "b", "llamacpp", {})
        calls = [manager.unload(), manager.load(b)]
        await asyncio.gather(*(calls if order == "unload-then-load" else reversed(calls)))
        if order == "unload-then-load":
            assert manager.state is State.LOADED and manager.details.spec == b
        else:
            assert manager.state is State.IDLE and read_plan(home / "run", "llamacpp") is None
    asyncio.run(scenario())
