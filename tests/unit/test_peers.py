"""Peers (router/peers.py, router/peer_routing.py): the health state machine, the configuration's rules, which
side a request goes to, and what a peer is sent. The real two-router stack: tests/e2e/test_peers.py."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from router.auth import Keys
from router.config import ConfigError, PeerSettings, parse_config
from router.errors import ApiError, InvalidRequest
from router.peer_routing import Side, choose, local_side, peer_for
from router.peers import HOP_HEADER, Health, Peer, PeerHealth, PeerModel, Peers
from tests.unit.fakes import make_group

ENGINES = "engines: {llamacpp: {port: 8002}}\n"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides) -> PeerSettings:
    return PeerSettings(url="http://box2:8080", **overrides)


# ---- health -------------------------------------------------------------------------------------------------

def test_one_failure_marks_a_peer_down_and_the_probes_back_off_until_it_answers():
    clock = Clock()
    health = PeerHealth(settings(max_backoff_seconds=5, probe_interval_seconds=2), clock)
    assert health.state is Health.UNKNOWN and health.seconds_to_probe() == 0 and not health.refuses
    assert health.succeeded(0.01) and health.state is Health.UP
    assert health.seconds_to_probe() == 2  # the interval while it answers
    assert health.failed("connection refused") and health.refuses
    waits = [health.seconds_to_probe()]
    for _ in range(4):
        assert not health.failed("connection refused")  # already down: no second "went down"
        waits.append(health.seconds_to_probe())
    assert waits == [1, 2, 4, 5, 5]  # doubled, at most max_backoff_seconds
    assert "5 failed probe(s): connection refused" in health.why_down("box2")
    clock.now += 3
    assert health.succeeded(0.02) and health.state is Health.UP and health.failures == 0
    assert not health.refuses and health.latency == 0.02


def test_a_failed_request_brings_the_next_probe_forward():
    clock = Clock()
    health = PeerHealth(settings(probe_interval_seconds=5), clock)
    health.succeeded(0.01)
    health.probe_soon()
    assert health.seconds_to_probe() == 0 and health.state is Health.UP  # suspected, not yet down


# ---- configuration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("peer, problem", [
    ("{url: 'box2:8080'}", r"is not an http\(s\) URL"),
    ("{url: 'http://box2:8080/v1'}", "leave out /v1"),
    ("{url: 'http://box2:8080', api_key_env: ULLM_API_KEY}", "this router's own key"),
    ("{url: 'http://box2:8080', admin_key_env: ULLM_ADMIN_KEY}", "this router's own key"),
    ("{url: 'http://box2:8080', api_key: secret}", "Extra inputs are not permitted"),  # keys never in the file
    ("{url: 'http://box2:8080', prefer: nearest}", "'balanced' or 'local'"),
])
def test_a_peer_is_configured_with_a_url_and_the_name_of_its_key_variable(peer, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_config(ENGINES + f"peers: {{box2: {peer}}}\n")


def test_a_peer_name_cannot_shadow_a_catalog_models_name():
    with pytest.raises(ConfigError, match="start with 'box2/'"):
        parse_config(ENGINES + "models: {box2/m: {engine: llamacpp, path: m.gguf}}\n"
                     "peers: {box2: {url: 'http://box2:8080'}}\n")
    with pytest.raises(ConfigError, match="peer name 'box 2'"):
        parse_config(ENGINES + "peers: {'box 2': {url: 'http://box2:8080'}}\n")
    config = parse_config(ENGINES + "peers: {box2: {url: 'http://box2:8080/'}}\n")
    assert config.peers["box2"].url == "http://box2:8080" and config.peers["box2"].prefer == "balanced"


# ---- what a peer is sent ------------------------------------------------------------------------------------

def test_a_peer_gets_its_own_key_from_the_environment_never_one_of_this_routers(monkeypatch):
    own = Keys(api=("here-key",), admin_only=("here-admin",))
    peer = Peer("box2", settings(api_key_env="BOX2_KEY", admin_key_env="BOX2_ADMIN"), None, own)
    monkeypatch.setenv("BOX2_KEY", "box2-key")
    monkeypatch.setenv("BOX2_ADMIN", "box2-admin")
    assert peer.headers() == {HOP_HEADER: "1", "Authorization": "Bearer box2-key"}
    assert peer.headers(admin=True)["Authorization"] == "Bearer box2-admin"
    for own_key in ("here-key", "here-admin"):
        monkeypatch.setenv("BOX2_KEY", own_key)
        with pytest.raises(ApiError, match="never sent them"):
            peer.headers()
    monkeypatch.delenv("BOX2_KEY")
    with pytest.raises(ApiError, match="BOX2_KEY is not set"):
        peer.headers()
    assert Peer("open", settings(), None, own).headers() == {HOP_HEADER: "1"}  # a peer without keys


# ---- which side answers -------------------------------------------------------------------------------------

def peer_named(name: str, prefer: str = "balanced", spill_after: int = 4, models: tuple[str, ...] = ("m",),
               kind: str = "unified-llm") -> Peer:
    peer = Peer(name, settings(prefer=prefer, spill_after=spill_after, models=list(models), kind=kind), None, Keys())
    return peer


def test_spillover_sends_each_request_to_the_side_with_fewer_requests_here_first_on_a_tie():
    box2 = peer_named("box2")
    local = Side(None, "m", True, 2)
    assert choose(local, [Side(box2, "m", True, 1)]).peer is box2
    assert choose(local, [Side(box2, "m", True, 2)]) is local
    assert choose(local, [Side(box2, "m", True, 3)]) is local
    assert choose(local, [Side(box2, "m", False, 0)]) is local  # not resident there: no spill
    assert choose(Side(None, "m", False, 0), [Side(box2, "m", True, 5)]).peer is box2  # resident only there
    assert choose(Side(None, "m", False, 0), [Side(box2, "m", False, 0)]).peer is None  # nowhere: loaded here


def test_prefer_local_keeps_requests_here_until_spill_after_are_in_flight():
    box2 = peer_named("box2", prefer="local", spill_after=3)
    for load, side in [(0, None), (2, None), (3, box2), (7, box2)]:
        assert choose(Side(None, "m", True, load), [Side(box2, "m", True, 0)]).peer is side, load


def test_a_model_only_peers_list_goes_to_the_one_that_lists_it_or_is_ambiguous():
    box2, box3 = peer_named("box2"), peer_named("box3")
    assert choose(None, [Side(box2, "m", False, 0)]).peer is box2
    assert choose(None, [Side(box2, "m", True, 4), Side(box3, "m", True, 1)]).peer is box3
    with pytest.raises(InvalidRequest, match="box2/m, box3/m") as raised:
        choose(None, [Side(box2, "m", False, 0), Side(box3, "m", False, 0)])
    assert raised.value.code == "model_ambiguous"


def test_names_explicit_peer_prefix_listed_names_and_aliases():
    peers = Peers(None, Keys())
    box2 = peers.peers["box2"] = peer_named("box2", models=())
    box2.models = {"qwen": PeerModel("qwen", "vllm", "loaded", True, ("q",))}
    assert peers.explicit("box2/qwen") == (box2, "qwen")
    assert peers.explicit("box2/anything/with/slashes") == (box2, "anything/with/slashes")  # the peer decides
    assert peers.explicit("box3/qwen") is None and peers.explicit("/workspace/models/x") is None
    assert peers.listing("qwen") == [(box2, "qwen")] and peers.listing("q") == [(box2, "qwen")]
    assert peers.listing("other") == []
    with pytest.raises(InvalidRequest, match="unknown peer 'box9'; configured: box2"):
        peers.named("box9")


def test_the_load_of_a_model_on_a_peer_is_never_less_than_what_this_router_sent_it():
    peer = peer_named("box2")
    peer.status = {"llamacpp": {"instances": [
        {"model": "m", "state": "loaded", "in_flight": 2, "waiting": 1},
        {"model": "other", "state": "loaded", "in_flight": 9, "waiting": 0}]}}
    assert peer.load_of("m") == (True, 3)
    peer.in_flight["m"] = 5  # sent since its figures were taken
    assert peer.load_of("m") == (True, 5)
    assert peer.load_of("gone") == (False, 0)
    plain = peer_named("plain", kind="openai")
    assert plain.load_of("m") == (True, 0)  # a plain server serves what it lists


def test_a_request_goes_to_a_peer_only_for_what_this_router_does_not_serve(tmp_path):
    config = parse_config(ENGINES + "models: {tiny: {engine: llamacpp, path: /models/tiny.gguf}}\n"
                          "peers: {box2: {url: 'http://box2:8080', models: [tiny, big]}}\n")
    group, _, _ = make_group(tmp_path, config)
    engines = {"llamacpp": group}
    peers = Peers(None, Keys())
    box2 = peers.peers["box2"] = Peer("box2", config.peers["box2"], None, Keys())
    box2.kind = "openai"  # no figures to fetch

    def side(requested, engine=None):
        found = asyncio.run(peer_for(peers, engines, config, requested, engine))
        return found and (found[0].name, found[1])
    assert side("big") == ("box2", "big")  # only the peer has it
    assert side("box2/tiny") == ("box2", "tiny")  # named explicitly
    assert side("tiny") == ("box2", "tiny")  # here only in the catalog, there resident: no swap here
    assert local_side(engines, config, "tiny", None) == Side(None, "tiny", False, 0)
    assert side("gpt-4o") is None and side(None) is None  # anything else: this router's, as without peers
    box2.health.failed("connection refused")
    assert side("tiny") is None  # the peer is down: served here
    assert side("big") == ("box2", "big")  # only there: refused at once by the caller, not hung
    assert local_side(engines, config, "tiny", "vllm") is None  # another engine's name is not served here


# ---- probing, over real HTTP --------------------------------------------------------------------------------

async def probed(health_body: dict | None, models: list[dict], health_status: int = 200) -> Peer:
    async def health(request: web.Request) -> web.Response:
        return web.json_response(health_body, status=health_status)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": models})
    app = web.Application()
    if health_body is not None:
        app.router.add_get("/health", health)
    app.router.add_get("/v1/models", listing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http:
            peer = Peer("box2", PeerSettings(url=f"http://127.0.0.1:{port}"), http, Keys())
            await peer.probe()
            return peer
    finally:
        await runner.cleanup()


def test_a_probe_tells_a_unified_llm_router_from_a_plain_server_and_lists_its_own_models_only():
    router = asyncio.run(probed({"status": "ok", "engines": {}, "ready": []}, [
        {"id": "m", "engine": "llamacpp", "state": "loaded", "resident": True, "aliases": ["mm"], "peer": None},
        {"id": "box3/x", "engine": "vllm", "state": "loaded", "resident": True, "peer": "box3"}]))
    assert router.kind == "unified-llm" and router.health.state is Health.UP
    assert list(router.models) == ["m"]  # not what it serves from its own peers: no chains
    assert router.models["m"] == PeerModel("m", "llamacpp", "loaded", True, ("mm",))
    plain = asyncio.run(probed(None, [{"id": "gpt-x", "object": "model"}]))  # no /health: 404
    assert plain.kind == "openai" and plain.health.state is Health.UP and list(plain.models) == ["gpt-x"]
    keyed = asyncio.run(probed({"error": {"message": "no key"}}, [{"id": "gpt-x"}], health_status=401))
    assert keyed.kind == "openai" and keyed.health.state is Health.UP  # its /health wants a key: /v1/models
    failing = asyncio.run(probed({"error": {"message": "engine gone"}}, [], health_status=503))
    assert failing.health.state is Health.DOWN and "/health answered 503: engine gone" in failing.health.last_error


def test_a_peer_that_refuses_connections_is_down_at_the_first_probe():
    async def probe() -> Peer:
        async with aiohttp.ClientSession() as http:
            peer = Peer("box2", PeerSettings(url="http://127.0.0.1:9"), http, Keys())  # discard: nothing listens
            await peer.probe()
            return peer
    peer = asyncio.run(probe())
    assert peer.health.state is Health.DOWN and peer.health.failures == 1
    assert peer.health.last_error and peer.models == {}
