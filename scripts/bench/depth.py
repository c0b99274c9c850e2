"""Prefill and decode by context depth through the router, as llama-bench measures them: `pp P @ dD` is the
prefill rate of P new prompt tokens after D tokens already in the KV cache, `tg N @ dD` the decode rate of N
generated tokens after D. Prompts are random token ids (like llama-bench's), sent to the completions API as
token arrays, so their lengths are exact whatever the tokenizer.

Per depth and repeat: the D-token context is sent first (max_tokens 1, untimed) so the engine's prefix cache
holds it, then the timed request extends it: D + P fresh tokens for pp (rate = P ÷ time to first token), or
D + 1 fresh tokens for tg (rate = (N - 1) ÷ the time after the first token). `cached_tokens` (from the engine's
usage) shows whether the prefix was reused.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from bench import client, records
from bench.anchor import DepthTest
from bench.client import Endpoint, StreamResult
from bench.phases import bar, now
from bench.target import Target


def tokens(vocab: int, count: int, seed: str) -> list[int]:
    """`count` token ids drawn from the middle of the vocabulary (clear of the special tokens at its ends)."""
    rng = random.Random(seed)
    low, high = max(vocab // 8, 1), max(vocab * 7 // 8, 2)
    return [rng.randrange(low, high) for _ in range(count)]


def requests_for(test: DepthTest, repeat: int, vocab: int) -> tuple[list[int] | None, list[int], int]:
    """(the context to cache first or None, the timed prompt, max_tokens) of one repeat of `test`."""
    context = tokens(vocab, test.depth, f"depth-{test.depth}") if test.depth else []
    fresh = tokens(vocab, test.tokens if test.kind == "pp" else 1, f"{test.name}-{repeat}")
    return (context or None), context + fresh, 1 if test.kind == "pp" else test.tokens


def rate(test: DepthTest, result: StreamResult) -> float | None:
    if not result.ok:
        return None
    if test.kind == "pp":
        return test.tokens / result.ttft_s if result.ttft_s else None
    return result.decode_tokens_per_s


def row_of(target: Target, test: DepthTest, repeat: int, result: StreamResult, started: str) -> records.DepthRow:
    return records.DepthRow(
        label=target.label, engine=target.engine, model=target.model, test=test.kind, tokens=test.tokens,
        depth=test.depth, repeat=repeat, prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens,
        completion_tokens=result.completion_tokens,
        ttft_ms=None if result.ttft_s is None else result.ttft_s * 1000, elapsed_s=result.elapsed_s,
        tokens_per_s=rate(test, result), error=result.error, started_at=started)


async def measure(endpoint: Endpoint, target: Target, tests: list[DepthTest], repeats: int, vocab: int, csv: Path,
                  done: set[tuple], timeout_s: float, fill=None) -> None:
    """Each test `repeats` times (depth by depth, so one cached context serves a depth's tests); rows appended
    to `csv` as measured. `fill(row)` adds the ceiling columns."""
    plain = dataclasses.replace(endpoint, api="completions")
    todo = [(t, r) for t in sorted(tests, key=lambda t: (t.depth, t.kind, t.tokens)) for r in range(1, repeats + 1)
            if (t.kind, t.tokens, t.depth, r) not in done]
    if not todo:
        return
    async with client.session(timeout_s) as session:
        await client.stream(session, plain, tokens(vocab, 8, "warm-up"), 2)  # untimed, e.g. after a reload
        with bar(len(todo), "depth") as progress:
            for test, repeat in todo:
                progress.set_description(test.name)
                context, prompt, max_tokens = requests_for(test, repeat, vocab)
                if context:
                    await client.stream(session, plain, context, 1)
                started = now()
                result = await client.stream(session, plain, prompt, max_tokens)
                row = row_of(target, test, repeat, result, started)
                records.append(csv, fill(row) if fill else row)
                progress.set_postfix_str(f"{row.tokens_per_s or 0:.1f} tok/s"
                                         + (f" error: {row.error[:60]}" if row.error else ""))
                progress.update(1)
