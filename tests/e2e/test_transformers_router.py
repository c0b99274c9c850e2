"""The Transformers engine as the router's third engine, on a real stack of its own (the Transformers engine
only, as shipped but for ports): a Dream-family model (the stand-in) loaded at start, streamed through the router
and the openai SDK; on-demand swaps to the tiny DiffusionGemma and to a causal model (token by token); the real
SmolLM2 answering for meaning; a crash restarted with the same model; an unload; its logs and metrics through the
router. The engine process itself: tests/e2e/test_transformers_engine.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import openai
import pytest

from tests.stack import PROJECT, Stack, make_stack, wait_for

pytestmark = pytest.mark.e2e

DREAM, GEMMA, CAUSAL = "tiny-dream-standin", "tiny-diffusion-gemma", "tiny-llama-a-transformers"
REAL = "smollm2-135m-instruct-transformers"
HAS_REAL = (PROJECT / "models" / "smollm2-135m-instruct" / "config.json").exists()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    def transformers_only(config: dict) -> None:
        for engine in ("vllm", "llamacpp"):
            del config["engines"][engine]
        config["models"] = {n: m for n, m in config["models"].items() if m["engine"] == "transformers"}
        config["engines"]["transformers"]["default_model"] = DREAM
    stack = make_stack(tmp_path_factory.mktemp("transformers"), transformers_only)
    stack.start()
    try:
        stack.wait_loaded("transformers", timeout=180)
        yield stack
    finally:
        stack.stop()
    illegal = [line for line in stack.router_log().splitlines() if "illegal transition" in line]
    assert not illegal, illegal


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key="none", max_retries=0, timeout=300)


def stream_text(stack: Stack, model: str, max_tokens: int = 16) -> tuple[str, int]:
    """The streamed completion's text and how many chunks carried some of it."""
    chunks = [c.choices[0].text for c in client(stack).completions.create(
        model=model, prompt="Once upon a time", max_tokens=max_tokens, temperature=0, stream=True) if c.choices]
    return "".join(chunks), sum(1 for c in chunks if c)


def test_a_dream_family_model_is_served_through_the_router_streamed_and_not(stack):
    status = stack.status()
    assert set(status) == {"transformers"} and status["transformers"]["model"] == DREAM
    answer = client(stack).chat.completions.create(model=DREAM, messages=[{"role": "user", "content": "Hi"}],
                                                   max_tokens=16, temperature=0)
    assert answer.model == DREAM and answer.usage.completion_tokens > 0
    text, pieces = stream_text(stack, DREAM)
    assert text and pieces >= 1
    request = urllib.request.Request(stack.base_url + "/v1/completions", method="POST",
                                     data=json.dumps({"model": DREAM, "prompt": "x", "max_tokens": 4,
                                                      "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:  # how it streams, said by the engine, relayed
        assert resp.headers["X-Diffusion-Streaming"] == "final-prefix" and resp.read().endswith(b"[DONE]\n\n")


def test_requests_swap_to_diffusion_gemma_and_to_a_causal_model_on_demand(stack):
    text, _ = stream_text(stack, GEMMA, max_tokens=8)
    assert text and stack.status()["transformers"]["model"] == GEMMA
    text, pieces = stream_text(stack, CAUSAL, max_tokens=16)
    assert stack.status()["transformers"]["model"] == CAUSAL
    assert pieces > 1, "a causal model streams token by token"
    assert stack.router_metric("unified_model_swaps_total", engine="transformers") >= 3  # start, then two swaps


@pytest.mark.skipif(not HAS_REAL, reason="setup could not build the real SmolLM2 (models/smollm2-135m-instruct)")
def test_the_real_smollm2_answers_for_meaning_on_the_transformers_engine(stack):
    answer = client(stack).chat.completions.create(
        model=REAL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24,
        temperature=0)
    assert "Paris" in answer.choices[0].message.content, answer.choices[0].message.content


def test_a_crash_is_restarted_with_the_same_model_and_an_unload_stops_it(stack):
    model = stack.status()["transformers"]["model"]
    with stack.crashes_on_purpose():
        before = stack.status()["transformers"]
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: (s := stack.status()["transformers"])["status"] == "loaded" and s["pid"] != before["pid"],
                 180, "the engine to be back")
        after = stack.status()["transformers"]
        assert after["model"] == model and after["restarts"] == before["restarts"] + 1
        assert client(stack).completions.create(model=model, prompt="x", max_tokens=4).choices
    status, body = stack.api("POST", "/v1/models/unload", {"engine": "transformers"})
    assert status == 200, body
    assert stack.status()["transformers"]["status"] == "idle"
    assert "transformers" in stack.ctl("status", "transformers") and "STOPPED" in stack.ctl("status", "transformers")


def test_its_logs_and_metrics_are_served_through_the_router(stack):
    client(stack).completions.create(model=DREAM, prompt="x", max_tokens=4)  # loads it again on demand
    status, logs = stack.api("GET", "/v1/engines/transformers/logs?lines=50")
    assert status == 200 and any("ready in" in line for line in logs["lines"]), logs
    assert stack.engine_metric("transformers", "transformers:generation_tokens_total") > 0


def run_script(script: str, *args: str) -> str:
    out = subprocess.run([str(PROJECT / ".venv" / "bin" / "python"), str(PROJECT / "scripts" / script), *args],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, f"{script} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def test_the_benchmark_the_evaluation_and_the_ranking_take_a_diffusion_model(stack, tmp_path):
    """benchmark_full.py, eval_instructions.py and rank_models.py with --engine transformers on the Dream
    stand-in: the steps are reported, tokens/s is generated tokens ÷ time."""
    bench, evals = tmp_path / "bench", tmp_path / "evals"
    router = ["--router", stack.base_url]
    run_script("benchmark_full.py", DREAM, "--engine", "transformers", *router, "--output-dir", str(bench),
               "--lengths", "16", "32", "--repeats", "1", "--parallel", "2", "--parallel-tokens", "16",
               "--depths", "--no-bandwidth-probe", "--bandwidth-gbs", "10", "--no-anchor")
    summary = json.loads(next(bench.glob("*/summary.json")).read_text())
    single = {row["max_tokens"]: row for row in summary["single_stream"]}
    assert single[16]["diffusion_steps"] and single[16]["tokens_per_s"] > 0 and single[32]["runs"] == 1
    print("\nDream stand-in, single stream: " + ", ".join(
        f"{n} tokens {row['tokens_per_s']:.0f} tok/s in {row['diffusion_steps']:g} steps" for n, row in single.items()))
    assert "denoising steps" in next(bench.glob("*/summary.md")).read_text()
    run_script("eval_instructions.py", DREAM, "--engine", "transformers", *router, "--output-dir", str(evals),
               "--max-tokens", "16", "--checks", "format", "safety")
    assert list(evals.glob("*/*.json")), "no evaluation written"
    ranking = run_script("rank_models.py", "--evals-dir", str(evals), "--benchmarks-dir", str(bench))
    assert DREAM in ranking
