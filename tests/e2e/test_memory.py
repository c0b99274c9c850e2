"""Memory-aware admission against the real engines: estimates in the load's answer and in status beside the
measured figure, a refusal with the numbers that changes nothing, `force`, and on-demand loads under the same
rule."""

from __future__ import annotations

from engines.memory import GiB

NO_ROOM = 1_000_000  # GiB of reserve: no model fits beside it


def test_status_shows_each_engines_estimate_beside_what_it_really_holds(stack):
    for engine in ("vllm", "llamacpp"):
        state = stack.wait_loaded(engine)
        estimate = state["memory_estimate"]
        assert state["memory_pool"] == "cpu" and estimate["pool"] == "cpu"
        assert estimate["total_bytes"] >= estimate["weights_bytes"] > 0 and estimate["kv_cache_bytes"] > 0
        assert state["memory_rss_bytes"] > 0
        print(f"\n{engine} {state['model']}: estimate {estimate['total_bytes'] / GiB:.2f} GiB "
              f"({estimate['basis']}), measured RSS {state['memory_rss_bytes'] / GiB:.2f} GiB")


def test_a_load_that_does_not_fit_is_refused_with_the_numbers_and_force_overrides(stack, restore_llamacpp):
    before = stack.wait_loaded("llamacpp")
    with stack.router_settings(memory_reserve_gib=NO_ROOM):
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"})
        assert status == 409 and body["error"]["code"] == "insufficient_memory", body
        message = body["error"]["message"]
        assert "needs about" in message and "GiB is available" in message and "vllm holds" in message, message
        state = stack.status()["llamacpp"]  # nothing was stopped
        assert state["status"] == "loaded" and (state["model"], state["pid"]) == (before["model"], before["pid"])
        assert stack.api("POST", "/v1/completions", {"engine": "vllm", "prompt": "Hi", "max_tokens": 4})[0] == 200

        # a request naming the other model asks for an on-demand load: the same rule answers it
        status, body = stack.api("POST", "/v1/completions", {"model": "tiny-llama-b-gguf", "prompt": "Hi",
                                                              "max_tokens": 4})
        assert status == 409 and body["error"]["code"] == "insufficient_memory", body
        assert stack.status()["llamacpp"]["model"] == before["model"]

        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf",
                                                             "force": True})
        assert status == 200 and body["model"] == "tiny-llama-b-gguf", body
        assert body["memory_estimate"]["kv_cache_bytes"] == 2 * 2048 * 1 * 128 * 2  # 2 layers, 1 KV head, f16
