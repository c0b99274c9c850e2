"""One chat completion, not streamed, through the router or any OpenAI-compatible API: the answer's text,
why it ended and its token counts. Failures are recorded in the reply, never raised."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp

from bench.client import RESENDABLE, _message


@dataclass
class ChatEndpoint:
    base_url: str  # ends with /v1 (or the API's equivalent)
    model: str
    headers: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # added to every body: the router's `engine`, --extra-body
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def body(self, messages: list[dict], seed: int | None) -> dict:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p}
        if seed is not None:
            body["seed"] = seed
        return {**body, **self.extra}


@dataclass
class Reply:
    content: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    error: str | None = None


async def chat(session: aiohttp.ClientSession, endpoint: ChatEndpoint, messages: list[dict],
               seed: int | None) -> Reply:
    reply, sent = Reply(), time.perf_counter()
    try:
        for attempt in range(3):  # a pooled connection the server had closed: nothing was generated, resend
            try:
                response = await session.post(endpoint.url, json=endpoint.body(messages, seed),
                                              headers=endpoint.headers)
                break
            except RESENDABLE:
                if attempt == 2:
                    raise
        async with response:
            text = await response.text()
            if response.status != 200:
                reply.error = f"HTTP {response.status}: {_message(text[:300])}"
                return reply
            data = await response.json(content_type=None)
        choice = (data.get("choices") or [{}])[0]
        reply.content = (choice.get("message") or {}).get("content") or ""
        reply.finish_reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        reply.prompt_tokens, reply.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        reply.seconds = round(time.perf_counter() - sent, 3)
    return reply


def session(timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=30))
