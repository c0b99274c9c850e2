"""The Transformers engine's request parsing: what it accepts, the defaults it fills, the 400s and 404s it gives."""

import pytest

from engines.transformers_server.errors import ApiError
from engines.transformers_server.protocol import Reply, parse_chat, parse_completion

NAME = "tiny"


def error_of(parse, body) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(body, NAME)
    return caught.value


def test_completion_defaults_and_fields():
    req = parse_completion({"model": NAME, "prompt": "hi", "max_tokens": 5, "temperature": 0, "top_p": 0.5,
                            "seed": 7, "stop": "\n", "stream": True, "stream_options": {"include_usage": True},
                            "steps": 12, "alg": "entropy", "alg_temp": 0.1}, NAME)
    s = req.sampling
    assert (req.kind, req.prompt, req.stream, req.include_usage) == ("completion", "hi", True, True)
    assert (s.max_tokens, s.temperature, s.top_p, s.seed, s.stop) == (5, 0, 0.5, 7, ("\n",))
    assert (s.steps, s.alg, s.alg_temp) == (12, "entropy", 0.1)
    plain = parse_completion({"prompt": ["one prompt"]}, NAME)
    assert (plain.prompt, plain.sampling.max_tokens, plain.sampling.temperature, plain.sampling.steps) == \
        ("one prompt", 16, 1.0, None)
    assert parse_completion({"prompt": [1, 2, 3]}, NAME).prompt == [1, 2, 3]


@pytest.mark.parametrize("body, param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, True]}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "8"}, "max_tokens"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "temperature": True}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "alg": "greedy"}, "alg"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
])
def test_completion_rejects_bad_fields_with_400(body, param):
    error = error_of(parse_completion, body)
    assert (error.status, error.param, error.body()["error"]["type"]) == (400, param, "invalid_request_error")


def test_another_model_name_is_404():
    error = error_of(parse_completion, {"model": "other", "prompt": "x"})
    assert (error.status, error.code) == (404, "model_not_found")


def test_chat_messages_and_text_parts():
    req = parse_chat({"messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "text", "text": "b"}]}],
                      "max_completion_tokens": 9}, NAME)
    assert req.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert req.sampling.max_tokens == 9


@pytest.mark.parametrize("body", [[], {"messages": []}, {"messages": [{"content": "x"}]},
                                  {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}])
def test_chat_rejects_bad_messages(body):
    assert error_of(parse_chat, body).status == 400


def test_reply_shapes():
    chat = Reply("chat", NAME)
    assert chat.chunk("", first=True)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chat.chunk(None, "stop")["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                                      "finish_reason": "stop"}
    assert chat.id.startswith("chatcmpl-") and chat.chunk("x")["object"] == "chat.completion.chunk"
    text = Reply("completion", NAME)
    assert text.body("t", "length", {}, {})["choices"][0]["text"] == "t"
    assert text.usage_chunk({"total_tokens": 1})["choices"] == []


def test_ignore_eos_is_a_flag():
    from engines.transformers_server.protocol import _sampling
    assert _sampling({"ignore_eos": True}, "completion").ignore_eos is True
    assert _sampling({}, "completion").ignore_eos is False
    with pytest.raises(Exception, match="'ignore_eos' must be true or false"):
        _sampling({"ignore_eos": "yes"}, "completion")
