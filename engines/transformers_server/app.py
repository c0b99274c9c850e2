"""The HTTP side: /health, /v1/models, /v1/completions, /v1/chat/completions (streamed or not), /metrics.
The model loads in a thread after the server starts listening (/health says 503 until it is ready)."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engines.transformers_server import protocol
from engines.transformers_server.dream import DiffusionDefaults
from engines.transformers_server.errors import ApiError, NotReady, QueueFull, bad_request
from engines.transformers_server.generation import Cancelled, Job, run_job
from engines.transformers_server.loading import Loaded, detect_kind, load, read_config
from engines.transformers_server.metrics import EngineMetrics
from engines.transformers_server.scheduler import GenerationSlot
from engines.transformers_server.text_stream import TextStream

TRANSFORMERS_VERSION = importlib.metadata.version("transformers")  # of the Python that runs the server
log = logging.getLogger("transformers_server")
LOAD_FAILED_EXIT = 3


@dataclass
class Settings:
    model: Path
    served_name: str
    dtype: str = "auto"
    trust_remote_code: bool = False
    max_queue: int = 8
    device: str = "auto"  # auto: CUDA when torch sees a GPU, else the CPU
    diffusion: DiffusionDefaults = DiffusionDefaults()


class Engine:
    """The app's state: settings, the model once loaded, the generation slot, the metrics."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.kind = detect_kind(read_config(settings.model))
        self.metrics = EngineMetrics(settings.served_name, self.kind)
        self.slot: GenerationSlot | None = None
        self.loaded: Loaded | None = None

    def ready(self) -> Loaded:
        if self.loaded is None:
            raise NotReady(f"loading {self.settings.model}")
        return self.loaded

    async def load(self) -> None:
        s = self.settings
        started = time.monotonic()
        try:
            self.loaded = await asyncio.to_thread(load, s.model, s.dtype, s.trust_remote_code, s.diffusion,
                                                s.device)
        except Exception as exc:  # any failure to load ends the process
            log.error("cannot load %s: %s", s.model, exc)
            os._exit(LOAD_FAILED_EXIT)  # the process must end: supervisord and the router see a failed start
        self.metrics.loaded(self.loaded.generator.STREAMING)
        log.info("%s (%s) ready in %.1f s; streams arrive %s", s.served_name, self.kind,
                 time.monotonic() - started, self.loaded.generator.STREAMING)


ENGINE = web.AppKey("engine", Engine)


def encode(loaded: Loaded, request: protocol.Request) -> list[int]:
    tokenizer = loaded.tokenizer
    if request.kind == "chat":
        try:
            text = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        except (ValueError, TypeError) as exc:  # no template, or one the messages do not fit
            raise bad_request(f"the chat template cannot render these messages: {exc}", "messages") from exc
        return tokenizer(text, add_special_tokens=False).input_ids
    if isinstance(request.prompt, str):
        return tokenizer(request.prompt).input_ids
    if any(not 0 <= t < len(tokenizer) for t in request.prompt):
        raise bad_request(f"token ids must be from 0 to {len(tokenizer) - 1}", "prompt")
    return list(request.prompt)


def check_length(loaded: Loaded, prompt_ids: list[int], max_tokens: int) -> None:
    limit = loaded.context_limit
    if limit and len(prompt_ids) + max_tokens > limit:
        raise bad_request(f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) is over the "
                          f"model's context of {limit} tokens", "max_tokens")


def timed_run(loaded: Loaded, job: Job) -> float:
    started = time.monotonic()
    run_job(loaded.generator, job)
    return time.monotonic() - started


def account(engine: Engine, job: Job, future: asyncio.Future) -> None:
    """When the worker is done, whatever became of the request: count the outcome."""
    m = engine.metrics
    error = None if future.cancelled() else future.exception()
    if error is None:
        m.generation_seconds.observe(future.result())
    m.outcome("ok" if error is None else "cancelled" if isinstance(error, Cancelled) else "error")
    m.prompt_tokens.inc(len(job.prompt_ids))
    m.generation_tokens.inc(job.text.completion_tokens)
    m.diffusion_steps.inc(job.steps)
    if error is not None and not isinstance(error, Cancelled):
        log.error("generation failed: %r", error)


async def start_generation(engine: Engine, loaded: Loaded, request: protocol.Request, prompt_ids: list[int],
                           on_text) -> tuple[Job, asyncio.Future]:
    text = TextStream(functools.partial(loaded.tokenizer.decode, skip_special_tokens=True),
                      () if request.sampling.ignore_eos else loaded.end_ids, request.sampling.stop)
    job = Job(prompt_ids, request.sampling, text, on_text)
    queued = time.monotonic()
    future = await engine.slot.start(functools.partial(timed_run, loaded, job))
    engine.metrics.queue_seconds.observe(time.monotonic() - queued)
    future.add_done_callback(functools.partial(account, engine, job))
    return job, future


def extra_fields(loaded: Loaded, job: Job) -> dict:
    if loaded.kind == "causal":
        return {}
    return {"diffusion": {"steps": job.steps, "streaming": loaded.generator.STREAMING}}


async def complete(request: web.Request, loaded: Loaded, parsed: protocol.Request, prompt_ids: list[int]):
    engine = request.app[ENGINE]
    job, future = await start_generation(engine, loaded, parsed, prompt_ids, lambda piece: None)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        job.cancel.set()  # the client left: the worker stops at its next token or step
        raise
    except Exception as exc:
        raise ApiError(500, f"generation failed: {exc}", "server_error") from exc
    reply = protocol.Reply(parsed.kind, engine.settings.served_name)
    usage = protocol.usage(len(prompt_ids), job.text.completion_tokens)
    return web.json_response(reply.body(job.text.text, job.text.finish_reason, usage, extra_fields(loaded, job)))


def sse(data: dict | str) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


async def stream(request: web.Request, loaded: Loaded, parsed: protocol.Request, prompt_ids: list[int]):
    engine = request.app[ENGINE]
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    job, future = await start_generation(engine, loaded, parsed, prompt_ids,
                                         lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
    future.add_done_callback(lambda _: pieces.put_nowait(None))
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    if loaded.kind != "causal":
        headers["X-Diffusion-Streaming"] = loaded.generator.STREAMING
    response = web.StreamResponse(headers=headers)
    reply = protocol.Reply(parsed.kind, engine.settings.served_name)
    try:
        await response.prepare(request)
        if parsed.kind == "chat":
            await response.write(sse(reply.chunk("", first=True)))
        while (piece := await pieces.get()) is not None:
            await response.write(sse(reply.chunk(piece)))
        error = future.exception()
        if error is not None:
            await response.write(ApiError(500, f"generation failed: {error}", "server_error").sse_event())
        else:
            await response.write(sse(reply.chunk(None if parsed.kind == "chat" else "", job.text.finish_reason)))
            if parsed.include_usage:
                usage = protocol.usage(len(prompt_ids), job.text.completion_tokens)
                await response.write(sse({**reply.usage_chunk(usage), **extra_fields(loaded, job)}))
        await response.write(sse("[DONE]"))
    finally:
        if not future.done():
            job.cancel.set()  # the client left (the handler was cancelled, or a write failed)
    return response


async def serve(request: web.Request, parse) -> web.StreamResponse:
    engine = request.app[ENGINE]
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    parsed = parse(body, engine.settings.served_name)
    loaded = engine.ready()
    prompt_ids = await asyncio.to_thread(encode, loaded, parsed)
    check_length(loaded, prompt_ids, parsed.sampling.max_tokens)
    return await (stream if parsed.stream else complete)(request, loaded, parsed, prompt_ids)


async def completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, protocol.parse_completion)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, protocol.parse_chat)


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.loaded is None:
        return web.json_response({"status": "loading"}, status=503)
    return web.json_response({"status": "ok", "kind": engine.kind, "streaming": engine.loaded.generator.STREAMING,
                              "transformers": TRANSFORMERS_VERSION})  # which environment runs it


async def models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    loaded = engine.ready()
    card = {"id": engine.settings.served_name, "object": "model", "created": int(time.time()),
            "owned_by": "unified-llm", "root": str(engine.settings.model), "max_model_len": loaded.context_limit,
            "kind": engine.kind}
    return web.json_response({"object": "list", "data": [card]})


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.slot is not None:
        engine.metrics.waiting.set(engine.slot.waiting)
        engine.metrics.running.set(engine.slot.running)
    return web.Response(body=generate_latest(engine.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def openai_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        if request.path.startswith("/v1/") and request.method == "POST":
            status = ("queue_full" if isinstance(exc, QueueFull) else "loading" if isinstance(exc, NotReady)
                      else "bad_request" if exc.status < 500 else "error")
            request.app[ENGINE].metrics.outcome(status)
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return ApiError(exc.status, exc.reason, "invalid_request_error" if exc.status < 500 else "server_error"
                        ).response()
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return ApiError(500, "internal error (see the engine's log)", "server_error").response()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[openai_errors], client_max_size=16 << 20)
    engine = Engine(settings)
    app[ENGINE] = engine

    async def lifespan(app: web.Application):
        engine.slot = GenerationSlot(settings.max_queue)
        loading = asyncio.create_task(engine.load())
        yield
        loading.cancel()
        engine.slot.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/metrics", metrics)
    return app
