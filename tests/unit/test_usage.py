"""Usage extraction from relayed streams, in the two shapes the engines send it."""

from router.usage import UsageTap, usage_from_json

VLLM = (b'data: {"choices":[{"text":"a"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
        b'data: [DONE]\n\n')
LLAMA = (b'data: {"choices":[{"text":"a","finish_reason":null}]}\n\n'
         b'data: {"choices":[{"text":"","finish_reason":"length"}],"usage":{"completion_tokens":2,"prompt_tokens":3}}'
         b'\n\ndata: [DONE]\n\n')


def relay(tap: UsageTap, stream: bytes, size: int) -> bytes:
    """Feed the stream in `size`-byte pieces, as the network might split it."""
    out = b"".join(tap.feed(stream[i:i + size]) for i in range(0, len(stream), size))
    return out + tap.flush()


def test_usage_is_found_whatever_the_chunking():
    for stream in (VLLM, LLAMA):
        for size in (1, 7, 64, len(stream)):
            tap = UsageTap(strip=False)
            assert relay(tap, stream, size) == stream  # untouched when the client asked for usage
            assert tap.usage["completion_tokens"] == 2 and tap.usage["prompt_tokens"] == 3


def test_injected_usage_is_removed_for_clients_that_did_not_ask():
    tap = UsageTap(strip=True)
    out = relay(tap, VLLM, 5)
    assert b"usage" not in out and out.endswith(b"data: [DONE]\n\n") and out.count(b"data: ") == 2
    assert tap.usage["completion_tokens"] == 2
    tap = UsageTap(strip=True)
    out = relay(tap, LLAMA, 5)
    assert b"usage" not in out and b'"finish_reason":"length"' in out and out.count(b"data: ") == 3


def test_usage_from_a_plain_json_answer():
    assert usage_from_json(b'{"usage": {"completion_tokens": 4}}') == {"completion_tokens": 4}
    assert usage_from_json(b"not json") is None and usage_from_json(b"[1]") is None
