#!/usr/bin/env python3
"""The model benchmark: load a model through the router, then measure single-stream speed at several lengths,
total and per-session speed at several parallel levels, and prefill and decode by context depth; put every
decode figure beside its memory-bandwidth ceiling and the depth tests beside the engine's own tool
(llama-bench; vllm bench latency with --vllm-bench); write CSVs, summary.json, summary.md and plots to
benchmarks/<label>/. Needs a running router (./scripts/up.sh), or --base-url for any OpenAI-compatible API.

  .venv/bin/python scripts/benchmark_full.py tiny-llama-a-gguf                       # a catalog name
  .venv/bin/python scripts/benchmark_full.py Qwen/Qwen3-0.6B --engine vllm          # downloads it first
  .venv/bin/python scripts/benchmark_full.py LiquidAI/LFM2.5-1.2B-JP-GGUF --gguf Q8_0 --engine llamacpp
  .venv/bin/python scripts/benchmark_full.py gemini-2.5-flash --label gemini-2.5-flash \\
      --base-url https://generativelanguage.googleapis.com/v1beta/openai --api-key-env GEMINI_API_KEY

Every request streams with ignore_eos (local engines), so it generates exactly the asked length; token counts
come from the engine's usage. Ctrl-C keeps what was measured; the same command again resumes. See
docs/benchmarks.md for every column.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]
from bench import anchored, phases, plots, records, report  # noqa: E402
from bench.admin import Router, RouterError  # noqa: E402
from bench.client import Endpoint  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.prompts import DEFAULT as DEFAULT_PROMPTS, Prompts  # noqa: E402
from bench.target import Target, add_where_arguments, api_headers, folder_name, parse_options, resolve  # noqa: E402
from download_model import DownloadError  # noqa: E402
from engines.spec import ENGINE_NAMES  # noqa: E402

OUTPUTS = [records.SINGLE_CSV, records.PARALLEL_CSV, records.LOAD_CSV, records.DEPTH_CSV, records.ANCHOR_CSV,
           "summary.json", "summary.md", "single_stream.png", "parallel.png", "depth.png"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="catalog name, path under a model root, Hugging Face repo id; "
                                                  "with --base-url: the API's model id")
    p.add_argument("--engine", choices=ENGINE_NAMES, help="default: the catalog's, or GGUF → llamacpp")
    where = p.add_argument_group("what to load")
    where.add_argument("--skip-download", action="store_true", help="a repo id is already downloaded")
    where.add_argument("--gguf", metavar="PATTERN", help="which GGUF of a repo: a quantization (Q8_0) or a glob")
    where.add_argument("--download-dir", help="where a repo id is downloaded (default: the first model root)")
    where.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="engine load option, repeatable: ctx_size=8192, parallel=16, max_model_len=4096, ...")
    where.add_argument("--keep-options", action="store_true",
                       help="llama.cpp: keep the catalog's ctx_size/parallel instead of one slot per stream")
    where.add_argument("--cold-load", action="store_true", help="unload first, so the load is timed from scratch")
    what = p.add_argument_group("what to measure")
    what.add_argument("--lengths", type=int, nargs="*", default=[64, 128, 256, 512, 1024],
                      help="single-stream generated tokens (default: 64 128 256 512 1024)")
    what.add_argument("--repeats", type=int, default=3, help="single-stream runs per length (median)")
    what.add_argument("--parallel", type=int, nargs="*", default=[4, 8, 16, 32, 64],
                      help="parallel streams (default: 4 8 16 32 64; none: skip)")
    what.add_argument("--parallel-tokens", type=int, default=256, help="tokens per parallel stream")
    what.add_argument("--parallel-repeats", type=int, default=1, help="rounds per parallel level (median)")
    what.add_argument("--threshold", type=float, default=20.0, help="per-session tokens/s to keep (default 20)")
    what.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="one prompt per line (Japanese)")
    what.add_argument("--api", choices=["chat", "completions"], default="chat")
    what.add_argument("--temperature", type=float, default=0.7)
    what.add_argument("--top-p", type=float, default=0.95)
    what.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=None,
                      help="generate exactly the asked length (default: on for the router, off for --base-url)")
    what.add_argument("--extra-body", type=json.loads, default={}, metavar="JSON", help="added to every request")
    what.add_argument("--timeout", type=float, default=600, help="seconds per request (default 600)")
    what.add_argument("--load-timeout", type=float, default=1800, help="seconds for the load (default 1800)")
    anchored.add_arguments(p)
    out = add_where_arguments(p, "measure", "remote", SCRIPTS.parent / "benchmarks")
    out.add_argument("--fresh", action="store_true", help="discard earlier results of this label instead of resuming")
    args = p.parse_args(argv)
    if args.ignore_eos is None:
        args.ignore_eos = args.base_url is None
    return args


def settings_of(args: argparse.Namespace, target: Target, prompts: Prompts) -> dict:
    """What makes two runs' rows comparable; a resumed run must match."""
    return {"model": target.model_path or target.model, "engine": target.engine,
            "endpoint": args.base_url or args.router, "api": args.api, "prompts": str(args.prompts),
            "prompts_sha256": prompts.sha256, "prompt_count": len(prompts), "temperature": args.temperature,
            "top_p": args.top_p, "ignore_eos": args.ignore_eos, "parallel_tokens": args.parallel_tokens,
            "options": parse_options(args.option), "keep_options": args.keep_options, "extra_body": args.extra_body,
            "kv_bytes_per_element": anchored.ceiling.KV_BYTES}


def prepare(folder: Path, settings: dict, fresh: bool) -> dict:
    """Make the folder; with --fresh remove earlier results; else check that they were measured alike.
    Returns the earlier summary (empty when none)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in OUTPUTS:
            (folder / name).unlink(missing_ok=True)
    path = folder / "summary.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    if earlier and earlier.get("settings") != settings:
        old = earlier.get("settings", {})
        diff = ", ".join(f"{k}: {old.get(k)!r} → {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise ValueError(f"{folder} holds results measured differently ({diff}); run with --fresh to replace them, "
                         "or --label to keep both")
    return earlier


def endpoint_for(args: argparse.Namespace, target: Target, headers: dict) -> Endpoint:
    extra = {"ignore_eos": True} if args.ignore_eos else {}
    if not target.remote:
        extra["engine"] = target.engine
    return Endpoint(base_url=args.base_url or args.router.rstrip("/") + "/v1", model=target.model, api=args.api,
                    headers=headers, extra={**extra, **args.extra_body}, temperature=args.temperature,
                    top_p=args.top_p)


def is_local(url: str) -> bool:
    from urllib.parse import urlparse
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


class LoadFailed(Exception):
    pass


async def measure(args, target: Target, router: Router | None, endpoint: Endpoint, prompts: Prompts, folder: Path,
                  meta: dict) -> None:
    plan = phases.Plan(args.lengths, args.repeats, args.parallel, args.parallel_repeats, args.parallel_tokens,
                       args.timeout)
    limit = None
    if router is not None:
        row, status = await phases.measure_load(router, target, endpoint, prompts, args.cold_load, args.load_timeout)
        records.append(folder / records.LOAD_CSV, row)
        meta.update(model=target.model, options=row.options, model_path=status.get("model_path") or target.model_path,
                    engine_status={k: status.get(k) for k in ("status", "model", "model_path", "options", "pid",
                                                              "memory_rss_bytes", "load_seconds")})
        if row.error:
            raise LoadFailed(row.error)
        if is_local(args.router):
            threads = anchored.engine_threads(target.engine)
            limit, meta["ceiling"] = await asyncio.to_thread(anchored.prepare_limit, args, target, meta["model_path"],
                                                             row.options, meta["machine"], threads)
        else:
            meta["ceiling"] = {"error": "the router is on another machine: its model files and memory are not here"}
    else:
        meta["ceiling"] = {"error": "a remote API: its model and machine are unknown"}
        first = await phases.warm_up(endpoint, prompts, args.timeout)
        if first.error:
            raise LoadFailed(f"the first request to {endpoint.url} failed: {first.error}")
    single_done = records.done_keys(records.read(folder / records.SINGLE_CSV, records.SingleRow))
    await phases.single_stream(endpoint, target, prompts, plan, folder / records.SINGLE_CSV, single_done, limit)
    parallel_done = records.done_keys(records.read(folder / records.PARALLEL_CSV, records.ParallelRow))
    await phases.parallel(endpoint, target, prompts, plan, folder / records.PARALLEL_CSV, parallel_done, limit)
    if router is None or not args.depths or "error" in meta["ceiling"] and "model" not in meta["ceiling"]:
        return
    await anchored.depth_phase(args, router, target, endpoint, folder, meta, limit)


def finish(args, folder: Path, meta: dict, interrupted: bool) -> dict:
    """Summary and plots from every row in the folder (this run's and earlier ones')."""
    single = records.read(folder / records.SINGLE_CSV, records.SingleRow)
    parallel = records.read(folder / records.PARALLEL_CSV, records.ParallelRow)
    loads = records.read(folder / records.LOAD_CSV, records.LoadRow)
    depth = records.read(folder / records.DEPTH_CSV, records.DepthRow)
    planned = ({(n, r) for n in args.lengths for r in range(1, args.repeats + 1)} <= records.done_keys(single)
               and {(n, r) for n in args.parallel for r in range(1, args.parallel_repeats + 1)}
               <= records.done_keys(parallel)
               and {(t["test"], t["tokens"], t["depth"], r) for t in meta.get("depth_plan", {}).get("tests", [])
                    for r in range(1, args.depth_repeats + 1)} <= records.done_keys(depth))
    meta.update(updated_at=phases.now(), interrupted=interrupted, complete=planned and not interrupted)
    summary = report.summarize(meta, single, parallel, loads, args.threshold, args.parallel_tokens, depth)
    summary["plots"] = [p.name for p in (plots.single_stream(summary, folder / "single_stream.png"),
                                         plots.parallel(summary, folder / "parallel.png"),
                                         plots.depth(summary, folder / "depth.png")) if p]
    report.write(folder, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prompts = Prompts(args.prompts)
        headers = api_headers(args.api_key_env, remote=bool(args.base_url))
        router = None if args.base_url else Router(args.router, headers)
        target = resolve(args, router)
        folder = args.output_dir / folder_name(target.label)
        settings = settings_of(args, target, prompts)
        earlier = prepare(folder, settings, args.fresh)
    except (OSError, ValueError, LookupError, RouterError, DownloadError) as exc:
        print(f"benchmark_full: {exc}", file=sys.stderr)
        return 1
    kept = len(records.read(folder / records.SINGLE_CSV, records.SingleRow)) + \
        len(records.read(folder / records.PARALLEL_CSV, records.ParallelRow))
    if kept:
        print(f"resuming: {kept} rows already in {folder} (use --fresh to start over)", flush=True)
    meta = {"schema": 1, "label": target.label, "model": target.model, "engine": target.engine,
            "remote": target.remote, "endpoint": settings["endpoint"], "model_path": target.model_path,
            "options": target.options, "machine": describe(local_router=router is not None and is_local(args.router)),
            "settings": settings, "started_at": earlier.get("started_at") or phases.now(),
            "anchor": earlier.get("anchor", [])}
    endpoint = endpoint_for(args, target, headers)
    interrupted, failed = False, None
    try:
        asyncio.run(measure(args, target, router, endpoint, prompts, folder, meta))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the rows measured so far are kept; run the same command again to resume",
              file=sys.stderr, flush=True)
    except (LoadFailed, RouterError) as exc:
        failed = exc
        print(f"benchmark_full: {exc}", file=sys.stderr, flush=True)
    measured = [name for name in (records.SINGLE_CSV, records.PARALLEL_CSV) if (folder / name).exists()]
    if failed and not measured:
        if not any(folder.iterdir()):
            folder.rmdir()
        return 1
    summary = finish(args, folder, meta, interrupted)
    print(f"\n{report.markdown(summary)}\nresults: {folder}", flush=True)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
