"""One streamed completion against an OpenAI-compatible endpoint, timed: time to first token from the first
chunk that carries generated text, token counts from the `usage` of the last chunk (asked for with
stream_options.include_usage), never from counting words or chunks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import aiohttp

# A pooled connection the server closed after its last answer fails before any byte comes back (llama-server
# does this); nothing was generated, so such a request is sent again.
RESENDABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "text")


@dataclass
class Endpoint:
    """Where and how to send requests: the router (with its `engine` field) or any OpenAI-compatible API."""
    base_url: str  # ends with /v1 (or the API's equivalent)
    model: str
    api: str = "chat"  # chat: /chat/completions with messages; completions: /completions with a prompt
    headers: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # added to every request body (engine, ignore_eos, ...)
    temperature: float = 0.7
    top_p: float = 0.95

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{'chat/completions' if self.api == 'chat' else 'completions'}"

    def body(self, prompt: str | list[int], max_tokens: int) -> dict:
        body = {"model": self.model, "max_tokens": max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "stream": True, "stream_options": {"include_usage": True}}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return {**body, **self.extra}


@dataclass
class StreamResult:
    max_tokens: int
    sent: float  # time.perf_counter() when the request was sent
    first_token: float | None = None
    ended: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the engine took from its prefix cache, when it says
    diffusion_steps: int | None = None  # denoising passes a diffusion model ran (the Transformers engine says)
    finish_reason: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.completion_tokens is not None

    @property
    def ended_early(self) -> bool:
        return self.ok and self.completion_tokens < self.max_tokens

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent

    @property
    def elapsed_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.sent

    @property
    def tokens_per_s(self) -> float | None:
        if not self.ok or not self.elapsed_s:
            return None
        return self.completion_tokens / self.elapsed_s

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first ÷ the time after the first token (to the end of the stream, which comes with
        the last token: a chunk of text can hold several tokens, or none)."""
        if not self.ok or self.completion_tokens < 2 or self.first_token is None or self.ended <= self.first_token:
            return None
        return (self.completion_tokens - 1) / (self.ended - self.first_token)


def has_text(event: dict) -> bool:
    for choice in event.get("choices") or []:
        delta = choice.get("delta") or {}
        if any(delta.get(k) for k in TEXT_FIELDS) or choice.get("text"):
            return True
    return False


async def stream(session: aiohttp.ClientSession, endpoint: Endpoint, prompt: str, max_tokens: int) -> StreamResult:
    """Send one streamed request and time it; failures are recorded in the result, never raised."""
    body = endpoint.body(prompt, max_tokens)
    result = StreamResult(max_tokens=max_tokens, sent=time.perf_counter())
    try:
        for attempt in range(3):
            try:
                response = await session.post(endpoint.url, json=body, headers=endpoint.headers)
                break
            except RESENDABLE:
                if attempt == 2:
                    raise
                result.sent = time.perf_counter()
        async with response:
            if response.status != 200:
                text = (await response.text())[:300]
                result.error = f"HTTP {response.status}: {_message(text)}"
                return result
            await _read_events(response, result)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        result.ended = time.perf_counter()
    if result.error is None and result.completion_tokens is None:
        result.error = "the stream ended without usage (token counts unknown)"
    return result


async def _read_events(response: aiohttp.ClientResponse, result: StreamResult) -> None:
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            result.error = f"error event: {_message(json.dumps(event))}"
            break
        now = time.perf_counter()
        if has_text(event):
            result.first_token = result.first_token or now
        for choice in event.get("choices") or []:
            result.finish_reason = choice.get("finish_reason") or result.finish_reason
        if isinstance(event.get("diffusion"), dict):
            result.diffusion_steps = event["diffusion"].get("steps")
        usage = event.get("usage")
        if usage:
            result.completion_tokens = usage.get("completion_tokens")
            result.prompt_tokens = usage.get("prompt_tokens")
            result.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")


def _message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
        return (error.get("message") if isinstance(error, dict) else str(error)) or text
    except (ValueError, AttributeError):
        return text


def session(timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=30))
