#!/usr/bin/env python3
"""What the router costs, side by side with LiteLLM's proxy: the same streamed workload sent straight to each
engine's internal port, through the router, and (with --litellm) through LiteLLM pointed at the same engine
port and model, in one run, alternating targets so all see the same machine state. Ratios are to direct.

Writes to --out: report.md (throughput, TTFT, CPU per token, latency and memory tables), results.json and
proxies.png. Needs a running stack (scripts/up.sh); LiteLLM is installed into the user cache on first use.

  .venv/bin/python scripts/bench_router.py --litellm --streams 1 16 64 --out benchmarks/proxies
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine, overhead, plots, tables  # noqa: E402
from bench.admin import Router  # noqa: E402
from bench.client import Endpoint  # noqa: E402
from bench.litellm_proxy import VERSION as LITELLM_VERSION, LiteLLMProxy, model_name  # noqa: E402


def listening_pid(url: str) -> int | None:
    """The process listening on the router's port, to charge it the CPU and memory it spends relaying."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return conn.pid
    except psutil.Error:
        pass
    return None


def targets_for(engine: str, info: dict, router: str, router_pid: int | None, litellm: LiteLLMProxy | None,
                api: str) -> list[overhead.Target]:
    # Every sampling field explicit (Endpoint sends temperature and top_p), so no proxy adds a default that
    # changes the engine's work; ignore_eos makes every request generate exactly max_tokens.
    common = {"api": api, "extra": {"ignore_eos": True}}
    targets = [overhead.Target("direct", Endpoint(f"http://127.0.0.1:{info['port']}/v1", info["model"], **common)),
               overhead.Target("router", Endpoint(f"{router}/v1", info["model"], api=api,
                                                  extra={"ignore_eos": True, "engine": engine}), router_pid)]
    if litellm:
        targets.append(overhead.Target("litellm", Endpoint(litellm.base_url, model_name(engine),
                                                               headers=litellm.headers, **common),
                                       litellm.pid))
    return targets


async def bench(args, status: dict, engines: list[str], litellm: LiteLLMProxy | None, router_pid: int | None
                ) -> dict:
    results = {"throughput": [], "latency": [], "series": {}, "runs": {}, "tokens": {}, "errors": {}, "incomplete": []}
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    for engine in engines:
        info = status[engine]
        targets = targets_for(engine, info, args.router, router_pid, litellm, args.api)
        print(f"{engine} ({info['model']}): {', '.join(t.name for t in targets)}", flush=True)
        measured = await overhead.measure(targets, args.streams, args.repeats, args.rounds, args.tokens,
                                          deadline=deadline)
        proxies = [t.name for t in targets if t.name != "direct"]
        results["throughput"].append(overhead.throughput_rows(engine, info["model"], measured, proxies))
        results["series"][engine] = {t.name: {n: measured[n][t.name].rate for n in measured} for t in targets}
        results["runs"][engine] = {t.name: {n: measured[n][t.name].rates for n in measured} for t in targets}
        results["tokens"][engine] = {t.name: {n: measured[n][t.name].tokens for n in measured} for t in targets}
        results["errors"].update({f"{engine}/{n}/{name}": lv.errors[:3] for n, by in measured.items()
                             for name, lv in by.items() if lv.errors})
        results["incomplete"] += [f"{engine} at {n} streams" for n in args.streams
                                  if n not in measured or any(len(lv.rates) < args.repeats
                                                              for lv in measured[n].values())]
        if args.latency_requests and (deadline is None or time.monotonic() < deadline):
            lat = await overhead.latencies(targets, args.latency_requests)
            results["latency"].append(overhead.latency_rows(engine, lat))
    processes = [("router", router_pid)] + ([(f"LiteLLM {LITELLM_VERSION} (1 worker)", litellm.pid)] if litellm else [])
    processes += [(f"{e} engine ({status[e]['model']})", status[e].get("pid")) for e in engines]
    results["memory"] = [[name, overhead.rss_mib(pid), overhead.peak_rss_mib(pid)] for name, pid in processes]
    return results


def merged(tabled: list[tuple[list[str], list[list]]]) -> list[tuple[list[str], list[list]]]:
    """Tables with the same header (engines measured against the same proxies) joined into one."""
    out: list[tuple[list[str], list[list]]] = []
    for header, rows in tabled:
        if out and out[-1][0] == header:
            out[-1][1].extend(rows)
        else:
            out.append((header, list(rows)))
    return out


def report(args, results: dict, info: dict, litellm: LiteLLMProxy | None) -> str:
    parts = [f"Machine: {machine.one_line(info)}.", "",
             f"{args.tokens} tokens per streamed {args.api} request (ignore_eos), {args.rounds} requests per client, "
             f"median of {args.repeats} turns per target.", ""]
    if results["incomplete"]:
        parts += [f"**Stopped at the time limit ({args.time_limit:g} s)**: not every turn was measured for "
                  f"{', '.join(results['incomplete'])}.", ""]
    if litellm:
        parts += [f"LiteLLM {LITELLM_VERSION}: installed in {litellm.install_seconds:.0f} s this run (0: cached), "
                  f"ready {litellm.start_seconds:.1f} s after start.", ""]
    for title, tabled in (("Streamed tokens/s of all clients together, ratio to direct:", results["throughput"]),
                          ("Non-streaming 1-token request, sequential, targets in turn:", results["latency"])):
        if tabled:
            parts += [title, ""] + [tables.markdown(h, r, digits=overhead.digits(h)) for h, r in merged(tabled)]
    parts += ["Every run's tokens/s (the spread behind the medians):", "",
              tables.markdown(["engine", "streams", "target", "runs"],
                              [[e, n, t, ", ".join(f"{r:,.0f}" for r in rates)]
                               for e, by_target in results["runs"].items() for t, by_n in by_target.items()
                               for n, rates in by_n.items()])]
    parts += ["Resident memory of each process tree: after the run, and the peak since the process started (VmHWM; "
              "restart the router before the run to read its peak under this load alone):", "",
              tables.markdown(["process", "RSS MiB", "peak RSS MiB"], results["memory"], digits=0)]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", default="http://127.0.0.1:8080")
    parser.add_argument("--engines", nargs="+", default=["llamacpp", "vllm"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per request (ignore_eos)")
    parser.add_argument("--api", choices=["chat", "completions"], default="chat")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements per target")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="start no measurement after this long; the report holds what was measured")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM's proxy (installed on first use)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/proxies"))
    args = parser.parse_args()

    status = Router(args.router).status()
    engines = [e for e in args.engines if status[e]["status"] == "loaded"]
    for e in set(args.engines) - set(engines):
        print(f"skipping {e}: it is {status[e]['status']}, not loaded", flush=True)
    if not engines:
        sys.exit("no engine to measure: load a model first")
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        litellm = None
        if args.litellm:
            litellm = stack.enter_context(LiteLLMProxy({e: (status[e]["port"], status[e]["model"]) for e in engines},
                                                       args.out / "litellm"))  # its config and log
        results = asyncio.run(bench(args, status, engines, litellm, listening_pid(args.router)))
        info = machine.describe(local_router=True)
        text = report(args, results, info, litellm)
        results.update(machine=info, litellm_version=LITELLM_VERSION if litellm else None,
                       litellm_install_s=litellm.install_seconds if litellm else None,
                       litellm_start_s=litellm.start_seconds if litellm else None, settings={
                           k: v for k, v in vars(args).items() if k != "out"})
    (args.out / "report.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plots.proxies(results["series"], args.out / "proxies.png",
                  f"{args.tokens}-token streams; {info['cpu_count']} cores ({info['cpu']}), "
                  f"{'; '.join(info['gpus']) or 'no GPU'}")
    print("\n" + text, flush=True)


if __name__ == "__main__":
    main()
