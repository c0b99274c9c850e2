"""The router's API over the real engines: the unmodified openai SDK, switching models, errors."""

from __future__ import annotations

import json
import os
import threading

import openai
import pytest

from tests.stack import wait_for

ENGINES = [("llamacpp", "tiny-llama-a-gguf"), ("vllm", "tiny-llama-a")]


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key="unused", timeout=120, max_retries=0)


@pytest.mark.parametrize("engine, model", ENGINES)
def test_sdk_completion_and_chat(client, engine, model):
    done = client.completions.create(model=model, prompt="Hello", max_tokens=5, extra_body={"engine": engine})
    assert done.choices[0].text is not None and done.usage.completion_tokens > 0
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                          extra_body={"engine": engine})
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens > 0


@pytest.mark.parametrize("engine, model", ENGINES)
def test_sdk_streaming(client, engine, model):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=16, stream=True, extra_body={"engine": engine})
    chunks = [c for c in stream]
    assert len(chunks) > 2  # relayed chunk by chunk, not one buffered blob
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    text = client.completions.create(model=model, prompt="Hi", max_tokens=16, stream=True,
                                     extra_body={"engine": engine})
    assert len([c for c in text]) > 2


def test_engine_is_inferred_from_an_unambiguous_model(client):
    done = client.completions.create(model="tiny-llama-a-gguf", prompt="Hi", max_tokens=3)
    assert done.model == "tiny-llama-a-gguf"


def test_generic_model_name_maps_to_the_loaded_model(client):
    done = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", max_tokens=3,
                                     extra_body={"engine": "vllm"})
    assert done.model == "tiny-llama-a"


def test_models_list_shows_catalog_and_state(client):
    models = {m.id: m for m in client.models.list().data}
    assert models["tiny-llama-a"].model_extra["engine"] == "vllm"
    assert models["tiny-llama-a-gguf"].model_extra["state"] == "loaded"
    assert models["tiny-llama-b"].model_extra["state"] == "available"


def test_switching_models_replaces_the_process(stack, client):
    before = stack.wait_loaded("llamacpp")
    try:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"})
        assert status == 200 and body["status"] == "success" and body["model"] == "tiny-llama-b-gguf", body
        assert body["load_seconds"] > 0
        after = stack.status()["llamacpp"]
        assert after["pid"] != before["pid"]
        with pytest.raises(ProcessLookupError):  # the old engine is gone, not merely replaced in the table
            os.kill(before["pid"], 0)
        done = client.completions.create(model="tiny-llama-b-gguf", prompt="Hi", max_tokens=3)
        assert done.model == "tiny-llama-b-gguf"
        assert stack.status()["vllm"]["status"] == "loaded"  # the other engine kept serving
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})


def test_request_during_a_load_waits_and_succeeds(stack, client):
    loader = threading.Thread(target=stack.api, args=("POST", "/v1/models/load",
                                                      {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"}))
    try:
        loader.start()
        wait_for(lambda: stack.status()["llamacpp"]["status"] == "loading", 10, "the load to begin", 0.02)
        done = client.completions.create(model="anything", prompt="Hi", max_tokens=3, extra_body={"engine": "llamacpp"})
        assert done.model == "tiny-llama-b-gguf"
    finally:
        loader.join(60)
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})


def test_idle_engine_answers_503_with_a_hint(stack, client):
    try:
        status, body = stack.api("POST", "/v1/models/unload", {"engine": "llamacpp"})
        assert status == 200, body
        state = stack.status()["llamacpp"]
        assert state["status"] == "idle" and not state["process_alive"]
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model="x", prompt="Hi", max_tokens=3, extra_body={"engine": "llamacpp"})
        assert err.value.status_code == 503
        assert "/v1/models/load" in err.value.body["message"]
        stack.ctl("restart", "router")  # an explicit unload survives a router restart: no default comes back
        wait_for(lambda: stack._router_up(), 30, "the router to restart")
        # the router decides what to restore before it answers: a default coming back would show as loading
        after = stack.status()["llamacpp"]
        assert after["state"] == "idle" and not after["process_alive"], after
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})


@pytest.mark.parametrize("method, path, data, content_type, status, code", [
    ("POST", "/v1/completions", b"{not json", "application/json", 400, "invalid_json"),
    ("POST", "/v1/completions", b"[1, 2]", "application/json", 400, "invalid_json"),
    ("POST", "/v1/completions", b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    ("POST", "/v1/completions", b'{"engine": "llamacpp", "stream": "yes"}', "application/json", 400, "invalid_type"),
    ("POST", "/v1/completions", b'{"engine": "tgi", "prompt": "x"}', "application/json", 400, "unknown_engine"),
    ("POST", "/v1/completions", b'{"prompt": "x"}', "application/json", 400, "engine_required"),
    ("POST", "/v1/chat/completions", b'{"engine": 5}', "application/json", 400, "invalid_type"),
    ("POST", "/v1/completions", b"prompt=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny-llama-b-gguf"}', "text/plain", 415, "unsupported_media_type"),
    ("POST", "/v1/config/reload", b"{}", "text/plain", 415, "unsupported_media_type"),  # a body must be JSON
    ("GET", "/v1/nope", None, None, 404, "unknown_route"),
    ("GET", "/v1/completions", None, None, 405, "method_not_allowed"),
    ("POST", "/v1/completions", b'{"p": "' + b"x" * (9 * 1024 * 1024) + b'"}', "application/json", 413,
     "body_too_large"),
    ("POST", "/v1/models/load", b'{"model_path": "../../etc/passwd", "engine": "llamacpp"}', "application/json",
     400, "path_not_allowed"),
    ("POST", "/v1/models/load", b'{"model_path": "/etc/passwd"}', "application/json", 400, "path_not_allowed"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny\\u0000.gguf"}', "application/json", 400, "invalid_path"),
    ("POST", "/v1/models/load", b'{"model_path": "' + b"a" * 5000 + b'.gguf"}', "application/json", 400,
     "invalid_path"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny-llama-a-gguf", "ctx_size": true}', "application/json",
     400, "invalid_option"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny-llama-a", "max_model_len": "1; rm -rf /"}',
     "application/json", 400, "invalid_option"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny-llama-a", "extra_args": ["--x"]}', "application/json",
     400, "unknown_field"),
    ("POST", "/v1/models/load", b'{"model_path": "tiny-llama-a", "ctx_size": 4096}', "application/json",
     400, "invalid_option"),
    ("POST", "/v1/models/unload", b'{"engine": "nope"}', "application/json", 400, "unknown_engine"),
])
def test_errors_are_openai_shaped(stack, method, path, data, content_type, status, code):
    got_status, body = stack.api_raw(method, path, data, content_type)
    assert got_status == status, body[:500]
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code and error["message"]
    assert stack.status()["vllm"]["status"] == "loaded"  # and everything keeps serving


def test_symlink_escaping_the_roots_is_refused(stack):
    link = stack.home / "scratch" / "escape.gguf"
    link.symlink_to("/etc/passwd")
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": str(link)})
    assert status == 400 and body["error"]["code"] == "path_not_allowed", body


def test_upstream_errors_pass_through(client):
    with pytest.raises(openai.BadRequestError) as err:  # vLLM's own validation: prompt longer than the context
        client.completions.create(model="tiny-llama-a", prompt="Hi", max_tokens=100000, extra_body={"engine": "vllm"})
    assert err.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as err:  # the router leaves a malformed stream_options alone
        client.completions.create(model="tiny-llama-a", prompt="Hi", max_tokens=3, stream=True,
                                  extra_body={"engine": "vllm", "stream_options": "yes"})
    assert "stream_options" in str(err.value.body)


def test_openapi_document_lists_every_route(stack):
    status, spec = stack.api("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    for path in ("/health", "/v1/status", "/v1/models", "/v1/models/load", "/v1/models/unload",
                 "/v1/completions", "/v1/chat/completions"):
        assert path in spec["paths"], path
