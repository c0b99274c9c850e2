"""OpenAI request bodies in, response bodies and stream chunks out: parsing and checking only (no model)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from engines.transformers_server.errors import ApiError, bad_request

DIFFUSION_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")  # Dream's `alg` values
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 256}  # OpenAI's default for completions; a chat needs more
MAX_STOPS = 4


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    steps: int | None = None  # diffusion only; None: the CLI's default
    alg: str | None = None  # Dream only
    alg_temp: float | None = None  # Dream only
    ignore_eos: bool = False  # generate max_tokens whatever the end token (benchmarks: a fixed length)


@dataclass(frozen=True)
class Request:
    kind: str  # "completion" or "chat"
    sampling: Sampling
    prompt: str | list[int] | None = None  # completion: text or token ids
    messages: list[dict[str, str]] = field(default_factory=list)  # chat
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, name: str, default: float | None, low: float, high: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise bad_request(f"'{name}' must be {kind} from {low} to {high}", name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise bad_request(f"'stop' must be a non-empty string or a list of at most {MAX_STOPS} of them", "stop")
    return tuple(stops)


def _sampling(body: dict, kind: str) -> Sampling:
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise bad_request("'n' must be 1", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    alg = body.get("alg")
    if alg is not None and alg not in DIFFUSION_ALGS:
        raise bad_request(f"'alg' must be one of {', '.join(DIFFUSION_ALGS)}", "alg")
    return Sampling(
        max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", DEFAULT_MAX_TOKENS[kind], 1, 1 << 20, True),
        temperature=_number(body, "temperature", 1.0, 0, 2),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1),
        seed=_number(body, "seed", None, -(1 << 63), (1 << 63) - 1, integer=True),
        stop=_stop(body),
        steps=_number(body, "steps", None, 1, 1 << 16, integer=True),
        alg=alg,
        alg_temp=_number(body, "alg_temp", None, 0, 100),
        ignore_eos=_flag(body, "ignore_eos"),
    )


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false", name)
    return value


def _stream_options(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    return stream, bool(options.get("include_usage", False))


def check_model(body: dict, served_name: str) -> None:
    model = body.get("model")
    if model is not None and model != served_name:
        raise ApiError(404, f"the model '{model}' does not exist; this engine serves '{served_name}'",
                       param="model", code="model_not_found")


def parse_completion(body: Any, served_name: str) -> Request:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    check_model(body, served_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    ids = isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    if not (isinstance(prompt, str) and prompt) and not ids:
        raise bad_request("'prompt' must be a non-empty string or token list (one prompt per request)", "prompt")
    stream, usage = _stream_options(body)
    return Request("completion", _sampling(body, "completion"), prompt=prompt, stream=stream, include_usage=usage)


def _content(message: dict, index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise bad_request(f"messages[{index}].content must be a string or a list of text parts", "messages")


def parse_chat(body: Any, served_name: str) -> Request:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    check_model(body, served_name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages")
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a 'role'", "messages")
        parsed.append({"role": message["role"], "content": _content(message, i)})
    stream, usage = _stream_options(body)
    return Request("chat", _sampling(body, "chat"), messages=parsed, stream=stream, include_usage=usage)


class Reply:
    """One answer's identity, and its bodies and chunks in the OpenAI shape of its kind."""

    def __init__(self, kind: str, model: str):
        self.kind, self.model, self.created = kind, model, int(time.time())
        prefix, self.object = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
        self.id = f"{prefix}-{uuid.uuid4().hex}"

    def _base(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    def _choice(self, text: str | None, finish_reason: str | None, delta: bool, first: bool = False) -> dict:
        if self.kind == "completion":
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        if not delta:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish_reason}
        content = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}

    def body(self, text: str, finish_reason: str, usage: dict, extra: dict) -> dict:
        return {**self._base(self.object), "choices": [self._choice(text, finish_reason, delta=False)],
                "usage": usage, **extra}

    def chunk(self, text: str | None, finish_reason: str | None = None, first: bool = False) -> dict:
        object_ = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._base(object_), "choices": [self._choice(text, finish_reason, delta=True, first=first)]}

    def usage_chunk(self, usage: dict) -> dict:
        object_ = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._base(object_), "choices": [], "usage": usage}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
