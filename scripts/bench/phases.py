"""The measurements: the load (request → first token), single streams at each length, and rounds of N
parallel streams. Each row is appended to its CSV as soon as it is measured; what a resumed run already has
is skipped."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bench import client, records, stats
from bench.ceiling import Limit, percent
from bench.admin import Router, RouterError
from bench.client import Endpoint, StreamResult
from bench.prompts import Prompts
from bench.target import Target

FIRST_TOKENS = 16  # the request that times the load asks for this many tokens


@dataclass
class Plan:
    lengths: list[int]
    repeats: int
    levels: list[int]
    parallel_repeats: int
    parallel_tokens: int
    timeout_s: float  # one request (a parallel round: each of its requests)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def bar(total: int, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="req", dynamic_ncols=True, mininterval=0.5, leave=True)


async def measure_load(router: Router, target: Target, endpoint: Endpoint, prompts: Prompts, cold: bool,
                       timeout_s: float) -> tuple[records.LoadRow, dict]:
    """Load the model through the router and time it until the first token; (row, the engine's status)."""
    row = records.LoadRow(label=target.label, engine=target.engine, model=target.model,
                          model_path=target.model_path, options=target.options, started_at=now())
    before = (await asyncio.to_thread(router.status)).get(target.engine, {})
    row.previous_model = before.get("model") if before.get("status") == "loaded" else None
    row.cold_load = cold
    if cold and row.previous_model:
        print(f"unloading {row.previous_model} from {target.engine} first (--cold-load)", flush=True)
        await asyncio.to_thread(router.unload, target.engine, timeout_s)
    with bar(2, f"load {target.label} on {target.engine}") as progress:
        sent = time.perf_counter()
        try:
            answer = await asyncio.to_thread(router.load, target.engine, target.model_path, target.options,
                                             timeout_s)
        except RouterError as exc:
            row.error = str(exc)
            return row, before
        row.load_request_s = time.perf_counter() - sent
        row.load_seconds = answer.get("load_seconds")
        row.already_loaded = row.load_seconds == 0
        target.model = endpoint.model = row.model = answer.get("model") or target.model
        progress.update(1)
        async with client.session(timeout_s) as session:
            first = await client.stream(session, endpoint, prompts[0], FIRST_TOKENS)
        progress.update(1)
    if first.first_token is not None:
        row.first_token_s = first.first_token - sent
    row.error = first.error and f"first request after the load: {first.error}"
    status = (await asyncio.to_thread(router.status)).get(target.engine, {})
    row.options = status.get("options") or target.options
    row.model_path = status.get("model_path") or row.model_path  # a catalog name, resolved
    return row, status


async def warm_up(endpoint: Endpoint, prompts: Prompts, timeout_s: float) -> StreamResult:
    async with client.session(timeout_s) as session:
        return await client.stream(session, endpoint, prompts[0], FIRST_TOKENS)


def single_row(target: Target, n: int, repeat: int, r: StreamResult, started: str) -> records.SingleRow:
    return records.SingleRow(
        label=target.label, engine=target.engine, model=target.model, max_tokens=n, repeat=repeat,
        prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, ended_early=r.ended_early,
        finish_reason=r.finish_reason, ttft_ms=None if r.ttft_s is None else r.ttft_s * 1000,
        elapsed_s=r.elapsed_s, tokens_per_s=r.tokens_per_s, decode_tokens_per_s=r.decode_tokens_per_s,
        diffusion_steps=r.diffusion_steps, error=r.error, started_at=started)


def with_ceiling(row, limit: Limit | None, context: float | None, streams: int = 1, measured: float | None = None):
    """The row with its ceiling at `context` tokens of context and the percent `measured` reaches."""
    if limit is not None and context is not None:
        row.ceiling_tokens_per_s = limit.tokens_per_s(context, streams)
        row.percent_of_ceiling = percent(measured, row.ceiling_tokens_per_s)
    return row


def mean_context(prompt_tokens: float | None, generated: float | None) -> float | None:
    """The context a decoded token sees on average: the prompt and half the answer."""
    return None if prompt_tokens is None or generated is None else prompt_tokens + generated / 2


async def single_stream(endpoint: Endpoint, target: Target, prompts: Prompts, plan: Plan, csv: Path,
                        done: set[tuple], limit: Limit | None = None) -> None:
    """Each length, `repeats` times, one request at a time (repeat by repeat, so drift hits every length)."""
    todo = [(r, i, n) for r in range(1, plan.repeats + 1) for i, n in enumerate(plan.lengths) if (n, r) not in done]
    if not todo:
        return
    async with client.session(plan.timeout_s) as session:
        with bar(len(todo), "single stream") as progress:
            for repeat, index, n in todo:
                started = now()
                result = await client.stream(session, endpoint, prompts[(repeat - 1) * len(plan.lengths) + index], n)
                row = single_row(target, n, repeat, result, started)
                records.append(csv, with_ceiling(row, limit, mean_context(row.prompt_tokens, row.completion_tokens),
                                                 measured=row.decode_tokens_per_s))
                progress.set_postfix_str(f"{n} tok: {result.tokens_per_s or 0:.1f} tok/s"
                                         + (" ENDED EARLY" if result.ended_early else "")
                                         + (f" error: {result.error[:60]}" if result.error else ""))
                progress.update(1)


def parallel_row(target: Target, n: int, repeat: int, tokens: int, results: list[StreamResult], wall: float,
                 started: str) -> records.ParallelRow:
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    rates = [r.tokens_per_s for r in ok if r.tokens_per_s is not None]
    total = sum(r.completion_tokens for r in ok)
    errors = [r.error for r in results if r.error]
    return records.ParallelRow(
        label=target.label, engine=target.engine, model=target.model, parallel=n, repeat=repeat, max_tokens=tokens,
        requests=len(results), completed=len(ok), ended_early=sum(r.ended_early for r in ok), errors=len(errors),
        completion_tokens=total, wall_s=wall, total_tokens_per_s=stats.rate(total, wall),
        per_session_tokens_per_s=stats.median(rates), per_session_min_tokens_per_s=min(rates, default=None),
        ttft_p50_ms=stats.percentile(ttfts, 50), ttft_p95_ms=stats.percentile(ttfts, 95),
        ttft_max_ms=max(ttfts, default=None), error=errors[0] if errors else None, started_at=started)


async def parallel(endpoint: Endpoint, target: Target, prompts: Prompts, plan: Plan, csv: Path,
                   done: set[tuple], limit: Limit | None = None) -> None:
    """Rounds of N streams sent at once; a round is a row (an interrupted round is not kept)."""
    todo = [(r, n) for r in range(1, plan.parallel_repeats + 1) for n in plan.levels if (n, r) not in done]
    if not todo:
        return
    async with client.session(plan.timeout_s) as session:
        with bar(sum(n for _, n in todo), "parallel") as progress:
            for repeat, n in todo:
                progress.set_description(f"parallel {n}")

                async def one(j: int, offset: int = repeat) -> StreamResult:
                    result = await client.stream(session, endpoint, prompts[j + offset], plan.parallel_tokens)
                    progress.update(1)
                    return result

                started, t0 = now(), time.perf_counter()
                results = await asyncio.gather(*(one(j) for j in range(n)))
                wall = max(r.ended for r in results) - t0
                row = parallel_row(target, n, repeat, plan.parallel_tokens, results, wall, started)
                prompt = stats.median(r.prompt_tokens for r in results if r.ok)
                records.append(csv, with_ceiling(row, limit, mean_context(prompt, plan.parallel_tokens), n,
                                                 row.total_tokens_per_s))
                progress.set_postfix_str(f"{n} streams: {row.total_tokens_per_s or 0:.0f} tok/s total, "
                                         f"{row.per_session_tokens_per_s or 0:.1f} per session"
                                         + (f", {row.errors} errors" if row.errors else ""))
