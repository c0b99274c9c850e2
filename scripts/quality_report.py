#!/usr/bin/env python3
"""The Japanese quality report: send one Japanese prompt (by default the original write-up's, 人工知能（AI）とは
何か、小学生にもわかるように説明してください) to each listed model and put the answers side by side in
report.md and a self-contained report.html, with flags decided by code (empty output, only repeating the
question, a switch to English part-way, repetition loops) and an empty human rating column.

  .venv/bin/python scripts/quality_report.py tiny-llama-a-gguf tiny-llama-a          # catalog models
  .venv/bin/python scripts/quality_report.py gemini=gemini-2.5-flash \\
      --base-url https://generativelanguage.googleapis.com/v1beta/openai --api-key-env GEMINI_API_KEY

Each answer is kept in evals/_quality/answers/<label>.json, and the report shows every kept answer to the
same prompt: run it once for local models and once per hosted API, and they land in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]
from bench.admin import Router, RouterError  # noqa: E402
from bench.target import add_where_arguments  # noqa: E402
from download_model import DownloadError  # noqa: E402
from engines.spec import ENGINE_NAMES  # noqa: E402
from evaluation import client, flags, params, quality  # noqa: E402
from evaluation.target import api_headers, ensure_loaded, folder_name, request_fields, resolve  # noqa: E402
from evaluation.text import strip_thinking  # noqa: E402

DEFAULT_PROMPT = "人工知能（AI）とは何か、小学生にもわかるように説明してください"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", metavar="[LABEL=]MODEL", nargs="+",
                   help="catalog name, path under a model root or repo id (with --base-url: the API's model id); "
                        "LABEL= names it in the report")
    p.add_argument("--engine", choices=ENGINE_NAMES, help="for models outside the catalog")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the Japanese prompt (default: the original write-up's)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=lambda v: None if v == "none" else int(v), default=1234)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=600, help="seconds per request (default 600)")
    p.add_argument("--load-timeout", type=float, default=1800)
    add_where_arguments(p, "ask", "API", SCRIPTS.parent / "evals" / "_quality", label=False)
    p.add_argument("--fresh", action="store_true", help="forget the answers kept from earlier runs")
    return p.parse_args(argv)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ask(args, spec: str, router: Router | None, headers: dict) -> dict:
    label, _, model = spec.rpartition("=")
    target = resolve(Namespace(model=model, label=label or None, engine=args.engine, base_url=args.base_url),
                     router)
    status = ensure_loaded(router, target, args.load_timeout) if router else {}
    model_path = status.get("model_path") or target.model_path
    endpoint = client.ChatEndpoint(base_url=args.base_url or args.router.rstrip("/") + "/v1", model=target.model,
                                   headers=headers, extra=request_fields(target, {}),
                                   temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)

    async def once() -> client.Reply:
        async with client.session(args.timeout) as session:
            return await client.chat(session, endpoint, [{"role": "user", "content": args.prompt}], args.seed)
    print(f"asking {target.label} ({target.engine}) at {endpoint.url}", flush=True)
    reply = asyncio.run(once())
    found = [f"request failed: {reply.error}"] if reply.error else flags.flag(reply.content, args.prompt)
    return {"schema": 1, "label": target.label, "model": target.model, "engine": target.engine,
            "remote": target.remote, "endpoint": endpoint.url, "model_path": model_path,
            "parameters": params.count(model_path)[0] if router else None, "prompt": args.prompt,
            "settings": settings_of(args), "answer": reply.content, "judged_answer": strip_thinking(reply.content),
            "finish_reason": reply.finish_reason, "completion_tokens": reply.completion_tokens,
            "seconds": reply.seconds, "error": reply.error, "flags": found, "asked_at": now()}


def settings_of(args) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens, "seed": args.seed}


def kept(folder: Path, prompt: str) -> list[dict]:
    """Earlier answers to the same prompt, by label."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            continue
        if entry.get("prompt") == prompt:
            out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    answers = args.output_dir / "answers"
    answers.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for path in answers.glob("*.json"):
            path.unlink()
    try:
        headers = api_headers(args.api_key_env, remote=bool(args.base_url))
        router = None if args.base_url else Router(args.router, headers)
        asked = []
        for spec in args.models:
            entry = ask(args, spec, router, headers)
            (answers / f"{folder_name(entry['label'])}.json").write_text(
                json.dumps(entry, indent=2, ensure_ascii=False) + "\n")
            asked.append(entry)
    except (OSError, ValueError, LookupError, RouterError, DownloadError) as exc:
        print(f"quality_report: {exc}", file=sys.stderr)
        return 1
    labels = [e["label"] for e in asked]
    entries = asked + [e for e in kept(answers, args.prompt) if e["label"] not in labels]
    (args.output_dir / "report.md").write_text(quality.markdown(args.prompt, entries, settings_of(args)))
    (args.output_dir / "report.html").write_text(quality.page(args.prompt, entries, settings_of(args)))
    (args.output_dir / "report.json").write_text(json.dumps({"prompt": args.prompt, "settings": settings_of(args),
                                                             "answers": entries}, indent=2, ensure_ascii=False))
    for e in entries:
        print(f"{e['label']} ({quality.where(e)}): {len(e['judged_answer'])} characters, flags: "
              f"{quality.flags_text(e)}")
    print(f"report: {args.output_dir / 'report.md'} and report.html")
    return 1 if any(e["error"] for e in asked) else 0


if __name__ == "__main__":
    sys.exit(main())
