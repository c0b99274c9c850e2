"""The proxy comparison's tables, plot, LiteLLM config and switch parsing, on fixed numbers."""

import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import profile_router  # noqa: E402
from bench import litellm_proxy, overhead, plots, switch, tables  # noqa: E402


def level(rates, ttfts=(), tokens=0, errors=(), cpu_s=None):
    return overhead.Level(rates=list(rates), ttfts_ms=list(ttfts), tokens=tokens, errors=list(errors), cpu_s=cpu_s)


def test_side_by_side_rows_give_ratios_to_direct():
    measured = {
        16: {"direct": level([900.0, 1000.0, 1100.0], [10, 20]), "router": level([800.0, 850.0, 700.0], [12, 30, 14],
             tokens=10_000, cpu_s=0.5), "litellm": level([200.0, 250.0], [50], tokens=4000, errors=["HTTP 500: x"])},
        1: {"direct": level([500.0]), "router": level([400.0]), "litellm": level([])},
    }
    header, rows = overhead.throughput_rows("llamacpp", "m", measured, ["router", "litellm"])
    assert header == ["engine", "model", "streams", "direct tok/s", "router tok/s", "router ratio", "litellm tok/s",
                      "litellm ratio", "direct TTFT p50 ms", "router TTFT p50 ms", "litellm TTFT p50 ms",
                      "router CPU µs/token", "litellm CPU µs/token", "errors d/r/l"]
    one, sixteen = rows  # sorted by concurrency
    assert one[:8] == ["llamacpp", "m", 1, 500, 400, 0.8, None, None]  # nothing measured: no ratio, not 0
    assert sixteen[2:8] == [16, 1000, 800, 0.8, 225.0, 0.225]  # medians
    assert sixteen[8:11] == [15.0, 14, 50]  # TTFT p50 per target
    assert sixteen[11] == pytest.approx(50.0) and sixteen[12] is None  # 0.5 s / 10,000 tokens; not measured
    assert sixteen[13] == "0/0/1"
    table = tables.markdown(header, rows, digits=overhead.digits(header))
    assert "| llamacpp | m | 16 | 1,000 | 800 | 0.80 | 225 | 0.23 | 15.0 | 14.0 | 50.0 | 50 | – | 0/0/1 |" in table
    assert level([], tokens=100, cpu_s=0.0).cpu_us_per_token == 0.0  # measured, below the clock's tick


def test_latency_rows_say_what_each_proxy_adds_at_p50():
    header, rows = overhead.latency_rows("vllm", {"direct": [1.0, 2.0, 3.0], "router": [2.0, 3.0, 4.0],
                                                   "litellm": [50.0, 60.0, 70.0]})
    assert header[-2:] == ["router adds p50 ms", "litellm adds p50 ms"]
    assert rows == [["vllm", 2.0, 3.0, 60.0, pytest.approx(2.98), pytest.approx(3.98), pytest.approx(69.8),
                     1.0, 58.0]]


def test_proxies_plot_is_a_small_png(tmp_path):
    series = {"llamacpp": {"direct": {1: 5000.0, 16: 6000.0}, "router": {1: 4000.0, 16: 5000.0},
                           "litellm": {1: 1500.0, 16: None}},
              "vllm": {"direct": {1: None}, "router": {1: None}}}  # nothing measured: no panel
    path = plots.proxies(series, tmp_path / "p.png", "title")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) < 200_000
    assert plots.proxies({"vllm": {"direct": {1: None}}}, tmp_path / "none.png", "t") is None


def test_litellm_config_points_each_engine_name_at_its_port():
    cfg = litellm_proxy.config({"llamacpp": (8002, "tiny-llama-a-gguf"), "vllm": (8001, "tiny-llama-a")})
    assert yaml.safe_load(yaml.safe_dump(cfg)) == {"model_list": [
        {"model_name": "llamacpp-direct", "litellm_params": {
            "model": "openai/tiny-llama-a-gguf", "api_base": "http://127.0.0.1:8002/v1", "api_key": "none"}},
        {"model_name": "vllm-direct", "litellm_params": {
            "model": "openai/tiny-llama-a", "api_base": "http://127.0.0.1:8001/v1", "api_key": "none"}}]}
    assert litellm_proxy.VERSION != "1.107.0"  # the compromised release


def test_litellm_install_is_cached_only_when_finished(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ULLM_LITELLM_COMMAND", raising=False)
    venv = litellm_proxy.venv_dir()
    assert venv == tmp_path / "unified-llm" / f"litellm-{litellm_proxy.VERSION}"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").write_text("")
    (venv / "installed").write_text(litellm_proxy.VERSION)
    assert litellm_proxy.ensure_installed(say=lambda *a, **k: None) == ([str(venv / "bin" / "litellm")], 0.0)


def test_an_installed_litellm_can_be_named_instead(monkeypatch):
    monkeypatch.setenv("ULLM_LITELLM_COMMAND", "env PYTHONPATH=/opt/x python3 -m litellm.proxy.proxy_cli")
    assert litellm_proxy.ensure_installed(say=print) == (
        ["env", "PYTHONPATH=/opt/x", "python3", "-m", "litellm.proxy.proxy_cli"], 0.0)


def test_direct_start_serves_the_plans_argv_on_another_port():
    argv = ["/bin/llama-server", "-m", "x.gguf", "--host", "127.0.0.1", "--port", "8002", "-c", "2048"]
    assert switch.with_port(argv, 40123) == [*argv[:6], "40123", "-c", "2048"]
    assert argv[6] == "8002"  # the plan itself is left alone


def test_switch_rows_list_the_phases_or_the_error():
    starts = [switch.Start("router: a → b", 1.5, 1.6, {"stopping the old process": 0.021, "waiting": 1.4}),
              switch.Start("direct", 80.5, 80.6, {"imports": 13.0, "weights": 2.0}),
              switch.Start("direct, again", error="exited with 1; see log")]
    assert switch.rows("vllm", starts) == [
        ["vllm", "router: a → b", 1.5, 1.6, "stopping the old process 21 ms; waiting 1.4 s"],
        ["vllm", "direct", 80.5, 80.6, "imports 13 s; weights 2.0 s"],
        ["vllm", "direct, again", None, None, "exited with 1; see log"]]


VLLM_LOG = """\
(APIServer pid=10576) INFO 11-27 05:04:49 [api_utils.py:286] non-default args: {'host': '127.0.0.1'}
(EngineCore pid=11317) INFO 11-27 05:05:21 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: x
(Worker pid=11490) INFO 11-27 05:05:38 [cpu_model_runner.py:68] Starting to load model /models/tiny-llama-a...
(Worker pid=11490) INFO 11-27 05:05:38 [default_loader.py:501] Loading weights took 0.01 seconds
(Worker pid=11490) INFO 11-27 05:05:40 [cpu_model_runner.py:87] Warming up model for the compilation...
(Worker pid=11490) INFO 11-27 05:06:42 [cpu_model_runner.py:91] Warming up done.
(EngineCore pid=11317) INFO 11-27 05:07:02 [core.py:402] init engine (profile, create kv cache) took 82.5 s
(APIServer pid=10576) INFO 11-27 05:07:04 [entry.py:140] Starting vLLM server on http://127.0.0.1:37499
(APIServer pid=10576) INFO 11-27 05:07:05 [entry.py:140] Starting vLLM server on (a second time: ignored)
"""


def test_vllm_phases_come_from_its_log_lines():
    started = time.mktime((2026, 11, 27, 5, 4, 31, 0, 0, -1))  # 18 s before the first line
    assert switch.vllm_phases("\x1b[32m" + VLLM_LOG, started) == {
        "imports, arguments": 18.0, "model config, engine process": 32.0, "worker process": 17.0,
        "weights": 2.0, "torch.compile warm-up": 62.0, "KV cache, API server": 22.0}
    assert switch.vllm_phases("no milestones here\n", started) == {}


def test_profile_samples_are_summed_per_function():
    collapsed = ("main (router/__main__.py:26);relay_stream (router/proxy.py:150);write (aiohttp/http_writer.py:80) 6\n"
                 "main (router/__main__.py:26);relay_stream (router/proxy.py:142);readany (aiohttp/streams.py:9) 3\n"
                 "main (router/__main__.py:26);relay_stream (router/proxy.py:150);write (aiohttp/http_writer.py:81) 1\n"
                 "garbage\n")
    total, own, inclusive = profile_router.summarize(collapsed)
    assert total == 10
    assert own == {"write (aiohttp/http_writer.py)": 7, "readany (aiohttp/streams.py)": 3}
    assert inclusive == {"main (router/__main__.py)": 10, "relay_stream (router/proxy.py)": 10}


def test_turns_rotate_so_no_target_always_follows_the_same_one():
    assert [overhead.rotated("drl", n) for n in range(4)] == [list("drl"), list("rld"), list("ldr"), list("drl")]
    assert overhead.rotated([], 2) == []


def test_no_turn_starts_past_the_time_limit(monkeypatch):
    """measure() stops starting turns at its deadline and returns what it has (the report says so)."""
    import asyncio
    import time

    calls = []

    async def fake_run_level(target, streams, rounds, max_tokens, level, timeout_s=600):
        calls.append((streams, target.name))
        level.rates.append(100.0)
        return "ok"

    async def no_settle(pids, **kw):
        return 0.0

    targets = [overhead.Target("direct", None), overhead.Target("router", None)]
    monkeypatch.setattr(overhead, "run_level", fake_run_level)
    monkeypatch.setattr(overhead, "settle", no_settle)
    lines = []
    out = asyncio.run(overhead.measure(targets, [1, 16], 2, 1, 8, say=lambda m, **k: lines.append(m),
                                       deadline=time.monotonic() - 1))
    assert out == {} and calls == [(1, "direct"), (1, "router")]  # the warm-up only
    assert "time limit reached: stopped before 1 streams, repeat 1" in lines[0]
