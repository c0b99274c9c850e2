"""The Transformers engine as a real process, once per module for each tiny model: a causal Llama (`generate`), a
random DiffusionGemma (block diffusion) and the Dream stand-in (remote code honouring `diffusion_generate`; not
Dream). Completions and chat, streamed and not, through the `openai` SDK; greedy determinism; a client that leaves
mid-stream frees the engine; a full queue answers 503; /metrics. Figures are printed, never asserted."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from tests.stack import PROJECT, free_port, wait_for

pytestmark = pytest.mark.e2e

MODELS = {  # kind -> (folder under models/, extra arguments)
    "causal": ("tiny-llama-a", []),
    "dream": ("tiny-dream-standin", ["--trust-remote-code", "--diffusion-steps", "8"]),
    "diffusion_gemma": ("tiny-diffusion-gemma", ["--diffusion-steps", "8"]),
}
STREAMING = {"causal": None, "dream": "final-prefix", "diffusion_gemma": "final-block"}
CANVAS = 8  # the tiny DiffusionGemma's block length (scripts/tiny_transformers_models.py)
LONG = {"causal": 3000, "dream": 2000, "diffusion_gemma": 2000}  # max_tokens of a generation that outlasts a test


class Server:
    def __init__(self, kind: str, tmp, python: str = sys.executable):
        folder, extra = MODELS[kind]
        self.kind, self.name, self.port = kind, folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{kind}.log"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp / "hf"),
                   TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1")
        argv = [python, "-m", "engines.transformers_server", "--model", str(PROJECT / "models" / folder),
                "--port", str(self.port), "--max-queue", "1", "--threads", "1", *extra]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def health(self) -> int | None:
        assert self.proc.poll() is None, f"{self.kind} server exited:\n{self.log_path.read_text()[-3000:]}"
        try:
            return urllib.request.urlopen(f"{self.url}/health", timeout=2).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def metrics(self) -> str:
        return urllib.request.urlopen(f"{self.url}/metrics", timeout=5).read().decode()

    def metric(self, name: str, **labels) -> float:
        wanted = {"model_name": self.name, **labels}
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(r"^([^{\s]+)\{([^}]*)\}\s+(\S+)$", line)
            if m and m[1] == name and wanted.items() <= dict(re.findall(r'(\w+)="([^"]*)"', m[2])).items():
                total += float(m[3])
        return total

    def wait_idle(self) -> None:
        wait_for(lambda: self.metric("transformers:requests_running") == 0
                 and self.metric("transformers:requests_waiting") == 0, 60, f"{self.kind} to be idle")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    missing = [f for f, _ in MODELS.values() if not (PROJECT / "models" / f / "build-info.json").is_file()]
    if missing:
        pytest.skip(f"tiny models not built ({', '.join(missing)}): run scripts/build_tiny_models.py")
    tmp = tmp_path_factory.mktemp("transformers-engine")
    started = time.monotonic()
    running = {kind: Server(kind, tmp) for kind in MODELS}  # all three load at once
    try:
        saw_loading = {kind: False for kind in running}
        for kind, server in running.items():
            def ready(server=server, kind=kind):
                status = server.health()
                saw_loading[kind] |= status == 503
                return status == 200
            wait_for(ready, 180, f"the {kind} server to load", interval=0.1)
        print(f"\nthree Transformers engine servers ready in {time.monotonic() - started:.1f}s "
              f"(/health answered 503 while loading: {saw_loading})")
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(params=list(MODELS))
def server(request, servers) -> Server:
    server = servers[request.param]
    server.wait_idle()
    return server


def test_models_and_health(server):
    assert [m.id for m in server.client.models.list().data] == [server.name]
    body = json.loads(urllib.request.urlopen(f"{server.url}/health").read())
    assert (body["kind"], body["streaming"]) == (server.kind, STREAMING[server.kind] or "token")


def test_completion_greedy_is_deterministic_and_streams_the_same_text(server):
    args = dict(model=server.name, prompt="Once upon a time", max_tokens=24, temperature=0)
    started = time.monotonic()
    first = server.client.completions.create(**args)
    seconds = time.monotonic() - started
    second = server.client.completions.create(**args)
    assert first.choices[0].text == second.choices[0].text
    assert 0 < first.usage.completion_tokens <= 24 and first.choices[0].finish_reason in ("stop", "length")
    chunks = list(server.client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert "".join(pieces) == first.choices[0].text
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    steps = (first.model_extra.get("diffusion") or {}).get("steps")
    print(f"\n{server.kind}: {first.usage.completion_tokens} tokens in {seconds:.2f}s = "
          f"{first.usage.completion_tokens / seconds:.0f} tok/s; {len(pieces)} streamed text chunks"
          + (f"; {steps} denoising steps" if steps is not None else ""))
    if server.kind == "causal":
        assert len(pieces) > 1
    if server.kind == "diffusion_gemma":  # one chunk per finished block
        assert len(pieces) <= math.ceil(24 / CANVAS)


def test_chat_streamed_and_not(server):
    messages = [{"role": "user", "content": "Say something."}]
    reply = server.client.chat.completions.create(model=server.name, messages=messages, max_tokens=16,
                                                  temperature=0)
    assert reply.choices[0].message.role == "assistant" and isinstance(reply.choices[0].message.content, str)
    assert reply.usage.prompt_tokens > 0
    raw = server.client.chat.completions.with_raw_response.create(
        model=server.name, messages=messages, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers.get("x-diffusion-streaming") == STREAMING[server.kind]
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens


def test_sampling_with_a_seed_repeats(server):
    args = dict(model=server.name, prompt="The sea", max_tokens=12, temperature=0.9, top_p=0.9, seed=42)
    assert server.client.completions.create(**args).choices[0].text == \
        server.client.completions.create(**args).choices[0].text


def test_bad_input_is_a_400_in_openai_shape(server):
    with pytest.raises(openai.BadRequestError) as caught:
        server.client.completions.create(model=server.name, prompt="x", max_tokens=8, temperature=5)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        server.client.completions.create(model=server.name, prompt="x", max_tokens=100_000)


def open_stream(server: Server, max_tokens: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"model": server.name, "prompt": "Go on", "stream": True,
                                                        "max_tokens": max_tokens, "temperature": 0}),
                 {"Content-Type": "application/json"})
    return conn


def test_a_client_that_leaves_mid_stream_frees_the_engine(server):
    cancelled = server.metric("transformers:requests_total", status="cancelled")
    conn = open_stream(server, LONG[server.kind])
    response = conn.getresponse()
    assert response.status == 200
    wait_for(lambda: server.metric("transformers:requests_running") == 1, 30, "the generation to run")
    conn.sock.shutdown(2)
    conn.close()
    left = time.monotonic()
    wait_for(lambda: server.metric("transformers:requests_total", status="cancelled") == cancelled + 1, 60,
             "the generation to stop")
    server.wait_idle()
    print(f"\n{server.kind}: engine free {time.monotonic() - left:.2f}s after the client left")
    assert server.client.completions.create(model=server.name, prompt="Hi", max_tokens=4).choices


def test_a_full_queue_answers_503(servers):
    server = servers["causal"]  # --max-queue 1: one generating, one waiting, the third refused
    server.wait_idle()
    running = open_stream(server, LONG["causal"])
    assert running.getresponse().status == 200
    waiting = open_stream(server, 4)
    try:
        wait_for(lambda: server.metric("transformers:requests_waiting") == 1, 30, "a request to wait")
        with pytest.raises(openai.APIStatusError) as caught:
            server.client.completions.create(model=server.name, prompt="x", max_tokens=4)
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["code"] == "queue_full"
        assert server.metric("transformers:requests_total", status="queue_full") >= 1
    finally:
        for conn in (running, waiting):
            conn.sock.shutdown(2)
            conn.close()
    server.wait_idle()


def test_metrics(servers):
    for server in servers.values():
        text = server.metrics()
        for name in ("transformers:requests_total", "transformers:prompt_tokens_total",
                     "transformers:generation_tokens_total", "transformers:generation_seconds_bucket",
                     "transformers:queue_seconds_bucket", "transformers:requests_waiting",
                     "transformers:requests_running", "transformers:model_info"):
            assert name in text, f"{server.kind}: no {name}"
        assert server.metric("transformers:requests_total", status="ok") > 0
        assert server.metric("transformers:generation_tokens_total") > 0
        if server.kind != "causal":
            assert server.metric("transformers:diffusion_steps_total") > 0
        assert server.metric("transformers:model_info", kind=server.kind) == 1


def test_a_stop_string_ends_the_text_before_it(server):
    args = dict(model=server.name, prompt="Once upon a time", max_tokens=24, temperature=0)
    full = server.client.completions.create(**args).choices[0].text
    if len(full.strip()) < 8:
        pytest.skip(f"{server.kind}: the greedy text is too short to cut ({full!r})")
    stop = full[4:7]
    cut = server.client.completions.create(**args, stop=[stop]).choices[0]
    assert (cut.text, cut.finish_reason) == (full[:full.find(stop)], "stop")
    streamed = "".join(c.choices[0].text for c in server.client.completions.create(**args, stop=[stop], stream=True)
                       if c.choices)
    assert streamed == cut.text


def test_the_dream_environment_runs_the_stand_in_on_transformers_4_51(tmp_path):
    """.venv-dream (setup: transformers 4.51 over the project venv's packages), the Python a real Dream model's
    engine runs on: the server runs there, says which transformers it has, and the stand-in answers the same as
    on the project's own transformers 5."""
    python = PROJECT / ".venv-dream" / "bin" / "python"
    assert python.exists(), "scripts/setup.sh creates .venv-dream; run it again"
    server = Server("dream", tmp_path, str(python))
    try:
        wait_for(lambda: server.health() == 200, 180, "the dream server on .venv-dream to load", interval=0.2)
        health = json.load(urllib.request.urlopen(f"{server.url}/health", timeout=5))
        assert health["transformers"].startswith("4.51") and health["kind"] == "dream", health
        text = server.client.completions.create(model=server.name, prompt="Once", max_tokens=8,
                                                temperature=0).choices[0].text
    finally:
        server.stop()
    (tmp_path / "on-5").mkdir()
    on_5 = Server("dream", tmp_path / "on-5")
    try:
        wait_for(lambda: on_5.health() == 200, 180, "the dream server on the project venv to load", interval=0.2)
        assert json.load(urllib.request.urlopen(f"{on_5.url}/health", timeout=5))["transformers"].startswith("5.")
        assert on_5.client.completions.create(model=on_5.name, prompt="Once", max_tokens=8,
                                              temperature=0).choices[0].text == text
    finally:
        on_5.stop()
