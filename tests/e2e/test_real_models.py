"""The real small models, as a new user meets them: a stack of its own with the shipped models.yaml (router
settings and default models as shipped, only the ports changed), so both engines start with SmolLM2-135M-Instruct
that setup built from its PyPI package. Answers are checked for meaning, through the unmodified `openai` SDK;
greedy output through the router is compared byte for byte with the same request sent straight to the engine;
llama.cpp swaps between the two real models; the benchmark, the evaluation and the quality report run once on
a real model; the chat page answers a factual question on both engines, and compare mode says how many leading
tokens the two engines agree on when they run the very same weights."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest
import yaml
from openai import OpenAI
from playwright.sync_api import expect

from tests.browser import chromium
from tests.stack import PROJECT, Stack, make_stack

pytestmark = pytest.mark.e2e
PYTHON = str(PROJECT / ".venv" / "bin" / "python")
DOCS = PROJECT / "docs"
QUESTION = "What is the capital of France? Answer in one word."
MODELS = {"vllm": "smollm2-135m-instruct", "llamacpp": "smollm2-135m-instruct-gguf"}
SAME_WEIGHTS_GGUF = "smollm2-135m-instruct-bf16-gguf"  # the bf16 weights vLLM serves, for llama.cpp
GREEDY = {"temperature": 0, "top_p": 1}


def shipped_router_settings(config: dict) -> None:
    """The router section as shipped (make_stack tunes it for the plumbing tests), on the stack's own port."""
    shipped = yaml.safe_load((PROJECT / "config" / "models.yaml").read_text())["router"]
    config["router"] = {**shipped, "host": "127.0.0.1", "port": config["router"]["port"]}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Stack:
    for name in ("smollm2-135m-instruct", "smollm2-135m-instruct-q4_1.gguf", "smollm2-135m-instruct-bf16.gguf",
                 "gemma-3-270m-q4_k_m.gguf"):
        assert (PROJECT / "models" / name).exists(), f"models/{name} is missing: run ./scripts/setup.sh"
    stack = make_stack(tmp_path_factory.mktemp("real"), edit=shipped_router_settings, plumbing=False)
    stack.start()
    try:
        stack.wait_loaded("llamacpp", timeout=120)
        stack.wait_loaded("vllm", timeout=600)  # the shipped load timeout
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def sdk(real) -> OpenAI:
    return OpenAI(base_url=f"{real.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def load(stack: Stack, engine: str, model: str) -> None:
    status, body = stack.api("POST", "/v1/models/load", {"engine": engine, "model_path": model})
    assert status == 200, body


def test_the_defaults_are_the_real_models(real):
    status = real.status()
    assert {engine: status[engine]["model"] for engine in MODELS} == MODELS
    assert all(status[engine]["status"] == "loaded" for engine in MODELS)


@pytest.mark.parametrize("engine", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_answers_a_factual_question(sdk, engine, stream):
    kwargs = dict(model=MODELS[engine], messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
                  extra_body={"engine": engine}, **GREEDY)
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in
                       sdk.chat.completions.create(stream=True, **kwargs) if chunk.choices)
    else:
        text = sdk.chat.completions.create(**kwargs).choices[0].message.content
    assert "Paris" in text, text


@pytest.mark.parametrize("engine", MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_completion_continues_a_fact(sdk, engine, stream):
    kwargs = dict(model=MODELS[engine], prompt="The capital of France is", max_tokens=8,
                  extra_body={"engine": engine}, **GREEDY)
    if stream:
        text = "".join(c.choices[0].text for c in sdk.completions.create(stream=True, **kwargs) if c.choices)
    else:
        text = sdk.completions.create(**kwargs).choices[0].text
    assert "Paris" in text, text


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        return resp.read()


def streamed_text(raw: bytes) -> str:
    events = [line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")]
    return "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events if e != "[DONE]")


@pytest.mark.parametrize("engine", MODELS)
def test_greedy_output_through_the_router_is_the_engines_own(real, engine):
    """The same greedy request, through the router and straight to the engine's port: the same text, byte for
    byte, whole and streamed."""
    port = real.status()[engine]["port"]
    body = {"model": MODELS[engine], "max_tokens": 64, **GREEDY,
            "messages": [{"role": "user", "content": "Name three rivers in Europe and say one thing about each."}]}
    for stream in (False, True):
        asked = {**body, "stream": stream}
        direct = post(f"http://127.0.0.1:{port}/v1/chat/completions", asked)
        routed = post(f"{real.base_url}/v1/chat/completions", {**asked, "engine": engine})
        if stream:
            a, b = streamed_text(direct), streamed_text(routed)
        else:
            a, b = (json.loads(raw)["choices"][0]["message"]["content"] for raw in (direct, routed))
        assert a.encode() == b.encode() and len(a) > 40, (stream, a, b)


def test_llamacpp_swaps_between_the_two_real_models(real, sdk):
    pid = real.engine_pid("llamacpp")
    try:
        load(real, "llamacpp", "gemma-3-270m-gguf")
        status = real.status()["llamacpp"]
        assert status["model"] == "gemma-3-270m-gguf" and status["pid"] != pid
        # a base model: it continues text rather than answering, so the question comes as a pattern to continue
        prompt = "Italy: Rome\nSpain: Madrid\nGermany: Berlin\nFrance:"
        text = sdk.completions.create(model="gemma-3-270m-gguf", prompt=prompt, max_tokens=4,
                                      extra_body={"engine": "llamacpp"}, **GREEDY).choices[0].text
        assert "Paris" in text, text
    finally:
        load(real, "llamacpp", MODELS["llamacpp"])
    reply = sdk.chat.completions.create(model=MODELS["llamacpp"], messages=[{"role": "user", "content": QUESTION}],
                                        max_tokens=16, extra_body={"engine": "llamacpp"}, **GREEDY)
    assert "Paris" in reply.choices[0].message.content


def leading_tokens_in_common(a: str, b: str) -> tuple[int, int]:
    """(tokens both texts begin with, tokens of the longer) in SmolLM2's own tokenizer."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(PROJECT / "models" / "smollm2-135m-instruct")
    ta, tb = tokenizer.encode(a, add_special_tokens=False), tokenizer.encode(b, add_special_tokens=False)
    same = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    return same, max(len(ta), len(tb))


PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@pytest.fixture(scope="module")
def same_weights(real):
    """llama.cpp with the bf16 GGUF of the very weights vLLM serves; the Q4_1 GGUF back afterwards."""
    load(real, "llamacpp", SAME_WEIGHTS_GGUF)
    yield real
    load(real, "llamacpp", MODELS["llamacpp"])


def test_the_same_weights_in_both_engines_agree_then_drift(same_weights, sdk):
    answers = {}
    for engine, model in (("vllm", MODELS["vllm"]), ("llamacpp", SAME_WEIGHTS_GGUF)):
        answers[engine] = sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=128,
            extra_body={"engine": engine}, **GREEDY).choices[0].message.content
    same, total = leading_tokens_in_common(answers["vllm"], answers["llamacpp"])
    print(f"\nsame weights, greedy, 128 tokens: the engines agree on the first {same} of {total} tokens")
    assert same >= 8, answers  # the same weights: the same first words (a quantized copy may differ at once)


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def chat_page(browser, stack: Stack, viewport: dict):
    page = browser.new_context(viewport=viewport).new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(120_000)
    page.goto(stack.base_url + "/")
    expect(page.locator(".engine-card")).to_have_count(len(stack.status()))  # one per configured engine
    expect(page.locator("#model option").first).to_be_attached()
    folded = page.evaluate("!document.querySelector('#settings').open")  # on a phone the chat comes first
    if folded:
        page.click("#settings > summary")
    page.fill("#temperature", "0")  # greedy
    page.fill("#max_tokens", "128")
    if folded:
        page.click("#settings > summary")
    return page, errors


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


@pytest.mark.parametrize("engine", MODELS)
def test_the_chat_page_answers_on_each_engine(real, browser, engine):
    page, errors = chat_page(browser, real, {"width": 1280, "height": 800})
    page.select_option("#engine", engine)
    ask(page, QUESTION)
    answer = page.locator(f'article.assistant[data-engine="{engine}"]')
    expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    assert "Paris" in answer.locator(".content").inner_text()
    page.context.close()
    assert not errors


def test_compare_mode_says_how_far_the_engines_agree(same_weights, browser):
    """The README's screenshots: the real model in both engines, side by side, with the agreement line."""
    page, errors = chat_page(browser, same_weights, {"width": 1280, "height": 800})
    page.check("#compare")
    ask(page, PROMPT)
    for engine in MODELS:
        expect(page.locator(f'article.assistant[data-engine="{engine}"]')).to_have_attribute(
            "data-state", "done", timeout=240_000)
    note = page.locator(".agreement")
    expect(note).to_have_count(1)
    tokens = int(note.get_attribute("data-tokens"))
    print(f"\ncompare view: {note.inner_text()}")
    assert tokens >= 8 and "tokens" in note.inner_text()
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "ui-desktop.png"))
    page.context.close()
    phone, phone_errors = chat_page(browser, same_weights, {"width": 360, "height": 780})
    ask(phone, QUESTION)
    expect(phone.locator("article.assistant")).to_have_attribute("data-state", "done", timeout=120_000)
    phone.screenshot(path=str(DOCS / "ui-phone.png"))
    phone.context.close()
    assert not errors and not phone_errors


def run(stack: Stack, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULLM_")}
    env.update(ULLM_CONFIG=str(stack.config_path), ULLM_HOME=str(stack.home))
    out = subprocess.run([PYTHON, str(PROJECT / "scripts" / script), *args], capture_output=True, text=True,
                         env=env, timeout=900)
    assert out.returncode == 0, f"{script} {' '.join(args)} → {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def test_benchmark_evaluation_and_quality_report_on_the_real_model(real, tmp_path):
    model, router = MODELS["llamacpp"], ["--router", real.base_url]
    run(real, "benchmark_full.py", model, *router, "--output-dir", str(tmp_path / "bench"), "--keep-options",
        "--lengths", "64", "--repeats", "1", "--parallel", "4", "--parallel-tokens", "64")
    summary = json.loads((tmp_path / "bench" / model / "summary.json").read_text())
    assert summary["single_stream"] and summary["parallel"]

    run(real, "eval_instructions.py", model, *router, "--output-dir", str(tmp_path / "evals"))
    result = json.loads((tmp_path / "evals" / model / "results.json").read_text())
    runs = [check["runs"][0] for check in result["checks"]]
    assert len(runs) == 29 and all(r["error"] is None for r in runs)
    # a real model's answers are judged as answers: the broken ones fail with their own reason, and nothing
    # broken passes a check
    broken = [r for r in runs if r["reason"].startswith("degenerate")]
    assert all(not r["passed"] for r in broken)
    print(f"\nevaluation of {model}: {result['summary']['pass_rate']:.1f}% "
          f"({sum(r['passed'] for r in runs)} of 29 passed, {len(broken)} answers degenerate)")

    run(real, "quality_report.py", model, MODELS["vllm"], *router, "--output-dir", str(tmp_path / "quality"),
        "--max-tokens", "200")
    report = (tmp_path / "quality" / "report.md").read_text()
    assert model in report and MODELS["vllm"] in report


def test_vllm_benchmark_beside_vllm_bench_latency_run_as_the_server_runs(real, tmp_path):
    """`--vllm-bench`: vLLM's own tool on the served folder with the server's engine flags (the catalog starts
    SmolLM2 eager; a compiled tool beside an eager server measured two different engines), ours ÷ its figure."""
    model = MODELS["vllm"]
    run(real, "benchmark_full.py", model, "--engine", "vllm", "--router", real.base_url, "--keep-options",
        "--output-dir", str(tmp_path), "--lengths", "16", "--repeats", "1", "--parallel", "--depths", "0",
        "--prefill", "64", "--decode", "16", "--depth-repeats", "1", "--vllm-bench")
    summary = json.loads((tmp_path / model / "summary.json").read_text())
    (tool,) = summary["anchor"]
    assert tool["tool"] == "vllm bench latency" and tool["error"] is None, tool
    assert all("--enforce-eager" in command for command in tool["commands"]), tool["commands"]
    assert all("--port" not in command and "--served-model-name" not in command for command in tool["commands"])
    rows = {(row["test"], row["depth"]): row for row in tool["results"]}
    assert set(rows) == {("pp", 0), ("tg", 0)} and all(row["tokens_per_s"] > 0 for row in rows.values())
    for row in summary["depth"]:
        theirs = row["anchors"]["vllm bench latency"]
        assert theirs["ratio"] > 0
        print(f"\nvLLM {row['name']}: ours {row['tokens_per_s']:.1f} tokens/s, vllm bench latency "
              f"{theirs['tokens_per_s']:.1f}, ours ÷ theirs {theirs['ratio']:.2f}")
