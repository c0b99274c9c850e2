"""Safe defaults: where the router listens, the warning when that is wider than loopback with admin open, and
status that keeps engine log text for admins once keys are set."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import make_mocked_request

from router.auth import Keys
from router.config import RouterSettings, parse_config
from router.exposure import bind_address, exposure_warnings, is_loopback
from router.handlers.admin import engine_report
from tests.unit.fakes import make_group, make_manager, no_illegal_transitions, spec  # noqa: F401 (an autouse fixture)

ENGINES = "engines: {llamacpp: {port: 8002}}\n"


def test_the_router_listens_on_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("ULLM_ROUTER_HOST", raising=False)
    monkeypatch.delenv("ULLM_ROUTER_PORT", raising=False)
    assert RouterSettings().host == "127.0.0.1"
    assert bind_address(parse_config(ENGINES)) == ("127.0.0.1", 8080)
    assert bind_address(parse_config("router: {host: 0.0.0.0, port: 9000}\n" + ENGINES)) == ("0.0.0.0", 9000)
    monkeypatch.setenv("ULLM_ROUTER_HOST", "::")
    monkeypatch.setenv("ULLM_ROUTER_PORT", "9100")
    assert bind_address(parse_config(ENGINES)) == ("::", 9100)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("192.168.1.20", False), ("gb10.lan", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_a_wide_bind_warns_until_an_admin_key_guards_it():
    [warning] = exposure_warnings("0.0.0.0", 8080, Keys())
    assert "0.0.0.0:8080" in warning and "ULLM_ADMIN_KEY" in warning and "127.0.0.1" in warning
    assert exposure_warnings("0.0.0.0", 8080, Keys(admin_only=("root",))) == []
    assert exposure_warnings("0.0.0.0", 8080, Keys(api=("user",))) == []  # the API key guards admin too
    assert exposure_warnings("127.0.0.1", 8080, Keys()) == []


def request_with(key: str | None):
    return make_mocked_request("GET", "/v1/status", headers={"Authorization": f"Bearer {key}"} if key else {})


def test_status_keeps_engine_log_lines_for_admins_once_keys_are_set(tmp_path):
    async def failed_engine():
        manager, sup, _ = make_manager(tmp_path)
        sup.start_fails = True
        with pytest.raises(Exception):
            await manager.load(spec("broken"))
        return manager
    manager = asyncio.run(failed_engine())
    full = manager.details.last_error
    assert "failed to load model" in full and "(FATAL: exit status 1); last log lines:\n" in full, full

    def last_error(keys: Keys, key: str | None) -> str:
        return engine_report(manager, None, 0, [], keys.is_admin(request_with(key)))["last_error"]

    assert last_error(Keys(), None) == full  # no keys: a single-user box sees everything
    keys = Keys(api=("user",), admin_only=("root",))
    for who in (None, "user", "wrong"):
        reason = last_error(keys, who)
        assert "failed to load model" not in reason and "stopped during start" in reason, reason
        assert "GET /v1/engines/llamacpp/logs" in reason
    assert last_error(keys, "root") == full
    assert last_error(Keys(api=("user",)), "user") == full  # without an admin key, the API key is the admin's


def test_with_keys_set_only_admins_see_where_models_lie(tmp_path, monkeypatch):
    import json

    from router.handlers import openai_api
    from router import state
    from router.peers import Peers

    config = parse_config(ENGINES + "models: {tiny: {engine: llamacpp, path: /models/tiny.gguf}}\n")
    group, _, _ = make_group(tmp_path, config)
    manager = group.instances[0]
    asyncio.run(manager.load(spec("tiny")))
    assert engine_report(manager, None, 0, [], True)["model_path"] == "/models/tiny.gguf"
    anonymous = engine_report(manager, None, 0, [], False)
    assert anonymous["model"] == "tiny" and anonymous["model_path"] is None

    keys = Keys(api=("user",), admin_only=("root",))

    def listed(key: str | None) -> list:
        request = request_with(key)
        request.app[state.CONFIG] = state.LiveConfig(config, tmp_path)
        request.app[state.ENGINES], request.app[state.KEYS] = {"llamacpp": group}, keys
        request.app[state.PEERS] = Peers(None, keys)  # none configured
        response = asyncio.run(openai_api.list_models(request))
        return [model["path"] for model in json.loads(response.body)["data"]]
    assert listed("user") == [None] and listed(None) == [None]
    assert listed("root") == ["/models/tiny.gguf"]
