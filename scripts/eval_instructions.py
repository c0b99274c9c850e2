#!/usr/bin/env python3
"""The instruction-following evaluation: 29 Japanese checks (format, length, word constraints, language,
structure, audience, count, compound, safety, persona, role-play), each decided by code, never by a judge
model. Writes every prompt, answer, verdict and reason, the pass rate per category and in total, and the
grade to evals/<label>/results.json and results.md. Needs a running router (./scripts/up.sh), or --base-url
for any OpenAI-compatible API.

  .venv/bin/python scripts/eval_instructions.py tiny-llama-a-gguf                       # a catalog model
  .venv/bin/python scripts/eval_instructions.py Qwen/Qwen3-0.6B --engine vllm --repeats 3
  .venv/bin/python scripts/eval_instructions.py gemini-2.5-flash \\
      --base-url https://generativelanguage.googleapis.com/v1beta/openai --api-key-env GEMINI_API_KEY
  .venv/bin/python scripts/rank_models.py                                               # the ranking

Sampling is fixed and recorded: temperature, top_p and a seed per repeat (--seed, then +1 per repeat), so a
rerun gets the same answers from the same engine and model; --repeats N reports the spread of the pass rate.
See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]
from bench.admin import Router, RouterError  # noqa: E402
from bench.target import add_where_arguments  # noqa: E402
from download_model import DownloadError  # noqa: E402
from engines.spec import ENGINE_NAMES  # noqa: E402
from evaluation import client, params, report, scoring, suite  # noqa: E402
from evaluation.checks import decide  # noqa: E402
from evaluation.target import api_headers, ensure_loaded, folder_name, request_fields, resolve  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="catalog name, path under a model root, Hugging Face repo id; with --base-url: the API's "
                        "model id")
    p.add_argument("--engine", choices=ENGINE_NAMES, help="default: the catalog's, or GGUF → llamacpp")
    p.add_argument("--gguf", metavar="PATTERN", help="which GGUF of a repo id: a quantization (Q8_0) or a glob")
    p.add_argument("--skip-download", action="store_true", help="a repo id is already downloaded")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="engine load option")
    ask = p.add_argument_group("how to ask")
    ask.add_argument("--checks", nargs="*", metavar="ID_OR_CATEGORY", help="only these checks (ids or categories)")
    ask.add_argument("--checks-file", type=Path, default=suite.DEFAULT, help="the checks (default: the suite's)")
    ask.add_argument("--repeats", type=int, default=1, help="run the suite N times (seeds SEED … SEED+N-1)")
    ask.add_argument("--temperature", type=float, default=0.7)
    ask.add_argument("--top-p", type=float, default=0.95)
    ask.add_argument("--seed", type=lambda v: None if v == "none" else int(v), default=1234,
                     help="sampling seed of the first repeat (default 1234; 'none' for APIs that reject it)")
    ask.add_argument("--max-tokens", type=int, default=512,
                     help="per answer (default 512: the longest answer the checks ask for fits; an answer cut off "
                          "there fails as degenerate; a thinking model needs more, e.g. 4096)")
    ask.add_argument("--concurrency", type=int, default=1,
                     help="requests at once (default 1: answers batched together come out different)")
    ask.add_argument("--extra-body", type=json.loads, default={}, metavar="JSON", help="added to every request")
    ask.add_argument("--timeout", type=float, default=600, help="seconds per request (default 600)")
    ask.add_argument("--load-timeout", type=float, default=1800, help="seconds for the load (default 1800)")
    where = add_where_arguments(p, "evaluate", "API", SCRIPTS.parent / "evals")
    where.add_argument("--params", type=params.parse_human, help="parameter count when the files cannot tell "
                                                                  "(a hosted model): 8B, 596M")
    p.add_argument("--list", action="store_true", help="print the checks as a markdown table and exit")
    args = p.parse_args(argv)
    if not args.list and not args.model:
        p.error("MODEL is required")
    if args.repeats < 1 or args.concurrency < 1:
        p.error("--repeats and --concurrency must be at least 1")
    return args


def checks_table(checks: list[suite.Check]) -> str:
    """The checks as docs/evaluation.md lists them."""
    rows = ["| # | check | category | prompt | rule (pass when) | blind spots |", "|---:|---|---|---|---|---|"]
    for n, c in enumerate(checks, 1):
        prompt = " / ".join(m["content"] for m in c.messages if m["role"] == "user") if len(c.messages) > 1 \
            else c.prompt
        cells = [str(n), f"`{c.id}`", suite.CATEGORIES[c.category], prompt, c.rule_text, c.blind_spots]
        rows.append("| " + " | ".join(x.replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    return "\n".join(rows) + "\n"


async def ask_all(endpoint: client.ChatEndpoint, checks: list[suite.Check], seeds: list[int | None],
                  concurrency: int, timeout_s: float) -> list[list[client.Reply]]:
    """Every check once per seed; the first request goes alone, so a broken endpoint fails fast."""
    jobs = [(r, i) for r in range(len(seeds)) for i in range(len(checks))]
    replies: dict[tuple[int, int], client.Reply] = {}
    gate = asyncio.Semaphore(concurrency)
    async with client.session(timeout_s) as session:
        async def one(job):
            r, i = job
            async with gate:
                reply = await client.chat(session, endpoint, checks[i].messages, seeds[r])
            replies[job] = reply
            verdict, _ = (decide(checks[i].rule, reply.content, reply.finish_reason, checks[i].script)
                          if not reply.error else (None, None))
            state = f"error: {reply.error}" if reply.error else ("pass" if verdict.passed else "FAIL: " +
                                                                   verdict.reason)
            print(f"[{len(replies)}/{len(jobs)}] repeat {r + 1} {checks[i].id}: {state}", flush=True)
            return reply
        first = await one(jobs[0])
        if first.error:
            raise RouterError(f"the first request to {endpoint.url} failed: {first.error}")
        await asyncio.gather(*(one(job) for job in jobs[1:]))
    return [[replies[(r, i)] for i in range(len(checks))] for r in range(len(seeds))]


def results_of(checks: list[suite.Check], replies: list[list[client.Reply]], seeds: list) -> list[dict]:
    out = []
    for i, check in enumerate(checks):
        runs = []
        for r, seed in enumerate(seeds):
            reply = replies[r][i]
            if reply.error:
                passed, reason, judged = False, f"request failed: {reply.error}", ""
            else:
                verdict, judged = decide(check.rule, reply.content, reply.finish_reason, check.script)
                passed, reason = verdict.passed, verdict.reason
            runs.append({"repeat": r + 1, "seed": seed, "passed": passed, "reason": reason, "answer": reply.content,
                         "judged_answer": judged, "finish_reason": reply.finish_reason,
                         "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                         "seconds": reply.seconds, "error": reply.error})
        out.append({"id": check.id, "category": check.category, "messages": check.messages, "rule": check.rule,
                    "rule_text": check.rule_text, "blind_spots": check.blind_spots, "runs": runs})
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        all_checks, sha = suite.load(args.checks_file)
        if args.list:
            print(checks_table(all_checks), end="")
            return 0
        checks = suite.select(all_checks, args.checks)
        headers = api_headers(args.api_key_env, remote=bool(args.base_url))
        router = None if args.base_url else Router(args.router, headers)
        target = resolve(args, router)
        status = ensure_loaded(router, target, args.load_timeout) if router else {}
    except (OSError, ValueError, LookupError, RouterError, DownloadError) as exc:
        print(f"eval_instructions: {exc}", file=sys.stderr)
        return 1
    model_path = status.get("model_path") or target.model_path
    count, source = params.count(model_path) if router else (None, None)
    if args.params:
        count, source = args.params, "--params"
    extra = request_fields(target, args.extra_body)
    endpoint = client.ChatEndpoint(base_url=args.base_url or args.router.rstrip("/") + "/v1", model=target.model,
                                   headers=headers, extra=extra, temperature=args.temperature, top_p=args.top_p,
                                   max_tokens=args.max_tokens)
    seeds = [None if args.seed is None else args.seed + r for r in range(args.repeats)]
    started = now()
    print(f"evaluating {target.label} ({target.engine}): {len(checks)} checks × {args.repeats} at {endpoint.url}",
          flush=True)
    try:
        replies = asyncio.run(ask_all(endpoint, checks, seeds, args.concurrency, args.timeout))
    except RouterError as exc:
        print(f"eval_instructions: {exc}", file=sys.stderr)
        return 1
    checked = results_of(checks, replies, seeds)
    runs = [[{"id": c["id"], "category": c["category"], "passed": c["runs"][r]["passed"]} for c in checked]
            for r in range(len(seeds))]
    results = {
        "schema": 1, "kind": "instruction-following", "label": target.label, "model": target.model,
        "engine": target.engine, "remote": target.remote, "endpoint": endpoint.url, "model_path": model_path,
        "parameters": count, "parameters_source": source, "engine_options": status.get("options"),
        "complete": len(checks) == len(all_checks),
        "settings": {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                     "seed": args.seed, "seeds": seeds, "repeats": args.repeats, "concurrency": args.concurrency,
                     "request_fields": extra, "checks_file": str(args.checks_file), "checks_sha256": sha,
                     "suite_size": len(all_checks), "checks": [c.id for c in checks]},
        "started_at": started, "finished_at": now(),
        "summary": scoring.summarize(runs, suite.CATEGORIES), "checks": checked}
    folder = args.output_dir / folder_name(target.label)
    report.write(folder, results)
    s = results["summary"]
    failed = sum(run["error"] is not None for c in checked for run in c["runs"])
    print(f"\n{target.label}: pass rate {s['pass_rate']:.1f}%, grade {s['grade']} ({report.spread(s)})"
          + (f"; {failed} requests failed" if failed else "") + f"\nresults: {folder}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
