"""scripts/bench_router.py and bench_switch.py against the real stack, at a tiny size: the router, LiteLLM's
real proxy (installed into the user cache on first use, about 1.5 min) and each engine direct, doing the same
work; a model switch through the router against the engine's own cold start. Figures are not judged here
(docs/performance.md has them); that every target did the same work, without errors, is."""

import json
import subprocess
import sys

import pytest

from tests.stack import PROJECT

pytestmark = pytest.mark.e2e
PY = str(PROJECT / ".venv" / "bin" / "python")
STREAMS, ROUNDS, TOKENS, REPEATS = (1, 4), 1, 32, 1


def test_router_and_litellm_do_the_same_work_as_direct(stack, tmp_path):
    run = subprocess.run(
        [PY, str(PROJECT / "scripts" / "bench_router.py"), "--router", stack.base_url, "--litellm",
         "--streams", *map(str, STREAMS), "--tokens", str(TOKENS), "--rounds", str(ROUNDS), "--repeats",
         str(REPEATS), "--latency-requests", "5", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    sys.stdout.write(run.stdout[-3000:])  # the install's progress and the tables, for -s and CI logs
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}
    for engine in ("llamacpp", "vllm"):
        work = results["tokens"][engine]
        for target in ("direct", "router", "litellm"):  # ignore_eos reached the engine through every proxy
            assert {int(n): t for n, t in work[target].items()} == \
                {n: n * ROUNDS * REPEATS * TOKENS for n in STREAMS}, (engine, target)
            assert all(rate > 0 for rate in results["series"][engine][target].values())
    latency = {row[0]: row for _header, rows in results["latency"] for row in rows}
    assert set(latency) == {"llamacpp", "vllm"} and all(v > 0 for v in latency["vllm"][1:4])
    memory = {name: (rss, peak) for name, rss, peak in results["memory"]}
    for name in ("router", f"LiteLLM {results['litellm_version']} (1 worker)"):
        rss, peak = memory[name]
        assert 0 < rss <= peak
    assert (tmp_path / "proxies.png").read_bytes().startswith(b"\x89PNG")
    assert "| llamacpp |" in (tmp_path / "report.md").read_text()


def test_switch_through_the_router_against_the_engines_own_cold_start(stack, tmp_path, restore_llamacpp):
    """llama.cpp only: vLLM's four cold starts (~1.5 min each here) are for the script, not CI."""
    before = stack.status()["llamacpp"]["model"]
    run = subprocess.run(
        [PY, str(PROJECT / "scripts" / "bench_switch.py"), "--router", stack.base_url, "--run-dir",
         str(stack.home / "run"), "--engines", "llamacpp", "--timeout", "240", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    sys.stdout.write(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    starts = json.loads((tmp_path / "switch.json").read_text())["llamacpp"]
    assert [s["how"].split(":")[0] for s in starts] == ["router", "router", "direct", "direct, again"]
    for s in starts:
        assert s["error"] is None and 0 < s["ready_s"] <= s["first_token_s"], s
    assert starts[0]["how"].startswith(f"router: {before} → ") and stack.status()["llamacpp"]["model"] == before
    # the router's own account of each switch (/v1/status load_phases), and the direct start's stop
    assert list(starts[0]["phases"]) == ["draining the requests in flight", "stopping the engine's previous process",
                                         "starting the engine", "waiting until the engine answers"]
    assert list(starts[2]["phases"]) == ["stopping it afterwards (SIGTERM to exit)"]
