"""benchmark_full.py's hardware side: the decode ceiling of the loaded model on this machine (bench/ceiling.py,
bench/bandwidth.py), the depth phase (bench/depth.py) and the engine's own benchmark tool on the same model
(bench/anchor.py). Only with a router on this machine: the model files and the memory are read here."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path

from bench import anchor, bandwidth, ceiling, depth, records
from bench.admin import Router
from bench.anchor import AnchorRun, DepthTest
from bench.ceiling import Limit
from bench.client import Endpoint
from bench.phases import mean_context, with_ceiling
from bench.target import Target

CONTEXT_ROOM = 16  # tokens beyond the longest test a llama.cpp slot gets for the depth phase


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ceiling, depth and the engine's own benchmark (docs/benchmarks.md)")
    g.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth (GB/s) for the ceiling, instead of the "
                                                       "known-machine table or the probe")
    g.add_argument("--no-bandwidth-probe", action="store_true", help="skip the probe (a few seconds, 3 × ~1 GiB)")
    g.add_argument("--depths", type=int, nargs="*", default=[0, 2048, 8192],
                   help="KV depths of the pp/tg tests (default: 0 2048 8192; none: skip the phase and the anchor)")
    g.add_argument("--prefill", type=int, nargs="*", default=[512, 2048], help="pp sizes (default: 512 2048)")
    g.add_argument("--decode", type=int, nargs="*", default=[128], help="tg sizes (default: 128)")
    g.add_argument("--depth-repeats", type=int, default=3, help="runs per test, ours and the tool's (default 3)")
    g.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=True,
                   help="run llama-bench on the same GGUF (llama.cpp; default on)")
    g.add_argument("--llama-bench-args", default="", metavar="ARGS", help="more llama-bench arguments")
    g.add_argument("--vllm-bench", action="store_true",
                   help="run `vllm bench latency` on the same folder (vLLM; one engine start per length pair)")
    g.add_argument("--anchor-timeout", type=float, default=3600, help="seconds per tool run (default 3600)")


def device_of(engine: str, options: dict) -> str:
    from engines.device import has_cuda_gpu
    return "cuda" if has_cuda_gpu() and (engine == "vllm" or options.get("n_gpu_layers", 1)) else "cpu"


def engine_settings(engine: str):
    """The router's settings for the engine (extra_args, env), from the same models.yaml."""
    from router.config import ConfigError, load_config
    try:
        return load_config().engines.get(engine)
    except ConfigError:
        return None


def engine_threads(engine: str) -> int:
    """The threads the engine computes with: llama-server's -t, else one per physical core (its default, and
    what the probe and llama-bench then use)."""
    argv = server_command(engine, engine_settings(engine))[0] if engine == "llamacpp" else []
    for flag in ("-t", "--threads"):
        if flag in argv[:-1]:
            return int(argv[argv.index(flag) + 1])
    return bandwidth.default_threads()


def prepare_limit(args, target: Target, model_path: str | None, options: dict, machine: dict,
                  threads: int) -> tuple[Limit | None, dict]:
    """The ceiling of the loaded model on this machine, and what summary.json says about it."""
    info: dict = {"kv_bytes_per_element": ceiling.KV_BYTES, "threads": threads}
    try:
        model = ceiling.from_path(model_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, {**info, "error": f"cannot read the model's metadata at {model_path}: {exc}"}
    device = device_of(target.engine, options)
    names = [*machine.get("gpus", []), machine.get("cpu") or ""] if device == "cuda" else \
        [machine.get("cpu") or "", *machine.get("gpus", [])]
    print(f"memory bandwidth: probing the {device} ({'skipped' if args.no_bandwidth_probe else 'a few seconds'})",
          flush=True)
    try:
        bw = bandwidth.choose(args.bandwidth_gbs, names, device, threads, run_probe=not args.no_bandwidth_probe)
    except ValueError as exc:
        return None, {**info, "model": model.summary(), "error": str(exc)}
    limit = Limit(bw.bytes_per_s, model)
    print(f"ceiling: {model.read_bytes / 1e6:,.1f} MB read per token (+{model.kv_bytes(1) / 1e3:,.1f} kB per "
          f"token of context), {bw.gbs:g} GB/s ({bw.source}) → {limit.tokens_per_s(0):,.1f} tokens/s at context 0",
          flush=True)
    return limit, {**info, "device": device, "bandwidth": bw.summary(), "model": model.summary(),
                   "tokens_per_s_at_context_0": limit.tokens_per_s(0)}


def fill_depth(limit: Limit | None):
    def fill(row: records.DepthRow) -> records.DepthRow:
        if row.test != "tg":
            return row
        return with_ceiling(row, limit, mean_context(row.depth + 1, row.tokens), measured=row.tokens_per_s)
    return fill


def plan(args, model_context: int | None, engine_context: int | None) -> tuple[list[DepthTest], list[str]]:
    limits = [c for c in (model_context, engine_context) if c]
    return anchor.plan_tests(args.prefill, args.decode, args.depths, min(limits) if limits else None)


def llamacpp_depth_options(options: dict, tests: list[DepthTest], model_context: int | None) -> dict | None:
    """Options with one slot long enough for the longest test (as llama-bench runs), or None when the loaded
    slots are long enough already."""
    needed = max((t.depth + t.tokens + 1 for t in tests), default=0) + CONTEXT_ROOM
    per_slot = options.get("ctx_size", 0) // max(options.get("parallel", 1), 1)
    if per_slot >= needed:
        return None
    size = -(-needed // 256) * 256
    return {**options, "parallel": 1, "ctx_size": min(size, model_context) if model_context else size}


async def depth_phase(args, router: Router, target: Target, endpoint: Endpoint, folder: Path, meta: dict,
                      limit: Limit | None) -> list[DepthTest]:
    """Reload llama.cpp with one long slot when needed, then measure every test that fits; the tests."""
    status = (await asyncio.to_thread(router.status)).get(target.engine, {})
    options = status.get("options") or {}
    model = limit.model if limit else None
    model_context = model.context_length if model else None
    engine_context = options.get("max_model_len") if target.engine == "vllm" else None
    tests, skipped = plan(args, model_context, engine_context)
    meta["depth_plan"] = {"tests": [{"test": t.kind, "tokens": t.tokens, "depth": t.depth} for t in tests],
                          "skipped": skipped}
    for note in skipped:
        print(f"depth: skipping {note}", flush=True)
    if not tests or not model or not model.vocab_size:
        return tests
    if target.engine == "llamacpp":
        longer = llamacpp_depth_options(options, tests, model_context)
        if longer:
            print(f"depth: reloading llama.cpp with one slot of {longer['ctx_size']} tokens "
                  f"(was {options.get('parallel')} slots of {options.get('ctx_size')})", flush=True)
            answer = await asyncio.to_thread(router.load, target.engine, status.get("model_path") or target.model_path,
                                             longer, args.load_timeout)
            meta["depth_plan"]["reloaded_with"] = longer
            endpoint.model = answer.get("model") or endpoint.model
    await measure_interleaved(args, router, target, endpoint, folder, meta, limit, tests, model.vocab_size)
    return tests


async def measure_interleaved(args, router: Router, target: Target, endpoint: Endpoint, folder: Path, meta: dict,
                              limit: Limit | None, tests: list[DepthTest], vocab: int) -> None:
    """Depth by depth: our tests, then the engine's tool on the same tests at once, so that both see the same
    machine (a shared one drifts within minutes). An earlier run's tool results are kept where they cover."""
    earlier = [a for a in meta.get("anchor", []) if not a["error"]]
    covered = {(r["test"], r["tokens"], r["depth"]) for a in earlier for r in a["results"]}
    merged, tool = None, wants_tool(args, target.engine)
    status = (await asyncio.to_thread(router.status)).get(target.engine, {})  # after a reload
    for d in sorted({t.depth for t in tests}):
        group = [t for t in tests if t.depth == d]
        done = records.done_keys(records.read(folder / records.DEPTH_CSV, records.DepthRow))
        await depth.measure(endpoint, target, group, args.depth_repeats, vocab, folder / records.DEPTH_CSV, done,
                            args.timeout, fill_depth(limit))
        if not tool or {(t.kind, t.tokens, t.depth) for t in group} <= covered:
            continue
        run = await asyncio.to_thread(run_anchor, args, target, status, group, meta["ceiling"]["threads"])
        if run.error:
            print(f"anchor: {run.tool} failed: {run.error}", file=sys.stderr, flush=True)
            tool = False  # measure the other depths, without the tool
        merged = merge(merged, run)
    if merged is not None:
        meta["anchor"] = [merge_summaries(earlier, anchor_summary(merged))]


def merge(into: AnchorRun | None, run: AnchorRun) -> AnchorRun:
    if into is None:
        return run
    into.commands += run.commands
    into.results.update(run.results)
    into.notes += run.notes
    into.error = into.error or run.error
    return into


def merge_summaries(earlier: list[dict], new: dict) -> dict:
    """This run's tool results over an earlier run's for the same tool."""
    old = next((a for a in earlier if a["tool"] == new["tool"]), None)
    if old is None:
        return new
    key = lambda r: (r["test"], r["tokens"], r["depth"])  # noqa: E731
    results = {key(r): r for r in old["results"]} | {key(r): r for r in new["results"]}
    return {**new, "commands": old["commands"] + new["commands"], "results": list(results.values())}


def server_command(engine: str, settings, options: dict | None = None) -> tuple[list[str], dict]:
    """The engine's command line and environment as the router started it (its launch plan in run/engines/),
    else what the loaded options and the config's extra_args and env would give."""
    from engines import spec
    try:
        plan = spec.read_plan(spec.run_dir(), engine)
    except spec.StateFileError:
        plan = None
    if plan is not None and plan.argv:
        return plan.argv, plan.env
    extra, env = (list(settings.extra_args), dict(settings.env)) if settings else ([], {})
    options = options or {}
    if engine == "llamacpp":
        return ["llama-server", *extra], env
    flags = ["--dtype", options.get("dtype", "bfloat16"), "--max-model-len", str(options.get("max_model_len", 8192))]
    return [sys.executable, "-m", "vllm", *flags, *(["--enforce-eager"] if options.get("enforce_eager") else []),
            *extra], env


def wants_tool(args, engine: str) -> bool:
    return args.anchor if engine == "llamacpp" else engine == "vllm" and args.vllm_bench


def run_anchor(args, target: Target, status: dict, tests: list[DepthTest], threads: int) -> AnchorRun | None:
    """The engine's own tool on the loaded model (`status`: the engine's in /v1/status), or None when not
    asked for."""
    settings = engine_settings(target.engine)
    model_path = status.get("model_path") or target.model_path
    options = status.get("options") or {}
    if target.engine == "llamacpp" and args.anchor:
        from engines import build
        argv, env = server_command("llamacpp", settings, options)
        server = argv[0] if Path(argv[0]).is_absolute() else build.find_binary(settings.binary if settings else None)
        extra = anchor.bench_flags(argv[1:], env) + shlex.split(args.llama_bench_args)
        print(f"anchor: llama-bench on {model_path} ({len(tests)} tests, {args.depth_repeats} runs each)", flush=True)
        return anchor.run_llama_bench(build.find_llama_bench(server), Path(model_path), tests, threads,
                                      args.depth_repeats, None, extra, args.anchor_timeout)
    if target.engine == "vllm" and args.vllm_bench:
        argv, env = server_command("vllm", settings, options)
        flags = anchor.vllm_engine_flags(argv)
        print(f"anchor: vllm bench latency on {model_path} with the server's engine flags {' '.join(flags)}",
              flush=True)
        return anchor.run_vllm_latency(model_path, tests, args.depth_repeats, flags, {**os.environ, **env},
                                       args.anchor_timeout)
    return None


def anchor_summary(run: AnchorRun) -> dict:
    return {"tool": run.tool, "commands": [" ".join(shlex.quote(a) for a in c) for c in run.commands],
            "error": run.error, "notes": run.notes,
            "results": [{"test": t.kind, "tokens": t.tokens, "depth": t.depth, **r} for t, r in run.results.items()]}

