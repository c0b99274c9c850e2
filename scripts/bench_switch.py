#!/usr/bin/env python3
"""What a model switch costs: POST /v1/models/load to the first token of the new model through the router, and
back again (the second load finds vLLM's compile cache warm), against the engine's own cold start measured
directly with the router's launch plan (same argv and environment, a free port): vLLM once with an empty
compile cache and once with it filled, with its start-up phases read from its log. `--resident`: also the
same switch with both models resident (max_instances ≥ 2), where it is one request.

Writes to --out: switch.md and switch.json. Needs a running stack (scripts/up.sh); leaves each engine with
the model it had. The router's engine is unloaded while the direct starts run, so they start as the router's
would, with nothing else of the engine in memory (on a GPU: no other process holding the device); `--beside`
keeps it loaded instead (memory for two copies is needed).

  .venv/bin/python scripts/bench_switch.py --engines llamacpp vllm --out benchmarks/proxies
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine, switch, tables  # noqa: E402
from bench.admin import Router  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
HEADER = ["engine", "start", "ready s", "first token s", "phases (router: /v1/status load_phases; vLLM: its log)"]


def other_model(router: Router, engine: str, loaded: str) -> str:
    """A catalog model of `engine` other than the loaded one."""
    names = [name for name, m in router.catalog().items() if m.get("engine") == engine and name != loaded]
    if not names:
        sys.exit(f"the catalog has no second {engine} model to switch to")
    return sorted(names)[0]


def measure_engine(router: Router, engine: str, args, scratch: Path, logs: Path) -> list[switch.Start]:
    loaded = router.status()[engine]["model"]
    target = args.to or other_model(router, engine, loaded)
    print(f"{engine}: switching {loaded} → {target} → {loaded} through the router", flush=True)
    starts = [switch.routed_switch(router.url, engine, target, loaded, args.timeout),
              switch.routed_switch(router.url, engine, loaded, target, args.timeout)]
    if args.resident:  # the same pair, both resident: a request for the other model is all a switch takes
        if router.status()[engine].get("max_instances", 1) < 2:
            sys.exit(f"--resident needs engines.{engine}.max_instances of 2 or more in models.yaml")
        router.load(engine, target, {"keep_others": True}, args.timeout)
        starts.append(switch.resident_switch(router.url, engine, target, loaded))
        starts.append(switch.resident_switch(router.url, engine, loaded, target))
        router.call("POST", "/v1/models/unload", {"engine": engine, "model": target}, timeout=args.timeout)
    plan = json.loads((args.run_dir / "engines" / f"{engine}.json").read_text())
    if not args.beside:
        router.unload(engine, args.timeout)
    # vLLM: a compile cache of our own, empty for the first start and filled by it for the second
    env = {"VLLM_CACHE_ROOT": str(scratch / "vllm-cache")} if engine == "vllm" else {}
    for n, label in enumerate(("direct, compile cache empty", "direct, compile cache filled")
                              if engine == "vllm" else ("direct", "direct, again")):
        print(f"{engine}: {label}", flush=True)
        start = switch.direct_start(engine, plan, logs / f"{engine}-direct-{n}.log", args.timeout, env)
        start.how = label
        starts.append(start)
    if not args.beside:
        router.load(engine, loaded, {}, args.timeout)
    for s in starts:
        print(f"  {s.how}: ready {s.ready_s or 0:.2f} s, first token {s.first_token_s or 0:.2f} s"
              f"{' ERROR ' + s.error if s.error else ''}", flush=True)
    return starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", default="http://127.0.0.1:8080")
    parser.add_argument("--run-dir", type=Path, default=PROJECT / "run", help="the stack's run folder (plans)")
    parser.add_argument("--engines", nargs="+", default=["llamacpp", "vllm"])
    parser.add_argument("--to", help="the model to switch to (default: another catalog model of the engine)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--resident", action="store_true",
                        help="also switch between the two models both resident (engines.<engine>.max_instances ≥ 2)")
    parser.add_argument("--beside", action="store_true",
                        help="start the engine directly beside the router's loaded copy instead of unloading it")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/proxies"))
    args = parser.parse_args()

    router = Router(args.router)
    results = {}
    logs = args.out / "switch-logs"  # the direct starts' engine logs
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ullm-switch-") as scratch:  # vLLM's compile cache of its own
        for engine in args.engines:
            if router.status()[engine]["status"] != "loaded":
                sys.exit(f"{engine} has no model loaded: nothing to switch from")
            results[engine] = measure_engine(router, engine, args, Path(scratch), logs)
    rows = [row for engine, starts in results.items() for row in switch.rows(engine, starts)]
    text = (f"Machine: {machine.one_line(machine.describe(local_router=True))}.\n\n"
            + tables.markdown(HEADER, rows, digits=2))
    (args.out / "switch.md").write_text(text)
    (args.out / "switch.json").write_text(json.dumps({e: [asdict(s) for s in ss] for e, ss in results.items()},
                                                     indent=2))
    print("\n" + text, flush=True)
    failed = [s for ss in results.values() for s in ss if s.error]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
