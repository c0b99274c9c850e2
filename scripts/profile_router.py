#!/usr/bin/env python3
"""Where the router spends its CPU while it relays streams: py-spy samples the running router while N
concurrent clients stream through it, then the samples are summed per function (own time, and time including
callees for the router's own functions). Needs a running stack and py-spy (the bench extra); py-spy attaches
with ptrace (root, or CAP_SYS_PTRACE).

  .venv/bin/python scripts/profile_router.py --engine llamacpp --streams 64 256 --out benchmarks/profile
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import overhead, tables  # noqa: E402
from bench.admin import Router  # noqa: E402
from bench.client import Endpoint  # noqa: E402
from bench_router import listening_pid  # noqa: E402

TOP = 15
LINE = re.compile(r":\d+\)$")


def summarize(collapsed: str) -> tuple[int, Counter, Counter]:
    """From py-spy's raw (collapsed) output: samples, own samples per function, and samples including callees
    per function of the router's own code (router/...)."""
    total, own, inclusive = 0, Counter(), Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [LINE.sub(")", f) for f in stack.split(";")]  # "send (asyncio/x.py:12)" -> per function
        total += n
        own[frames[-1]] += n
        for frame in set(f for f in frames if "router/" in f):
            inclusive[frame] += n
    return total, own, inclusive


def table(title: str, counts: Counter, total: int) -> str:
    rows = [[frame, count, count / total * 100] for frame, count in counts.most_common(TOP)]
    return f"{title}\n\n" + tables.markdown(["function (file)", "samples", "% of samples"], rows, digits=1)


async def drive(endpoint: Endpoint, pid: int, streams: int, rounds: int, tokens: int) -> overhead.Level:
    level = overhead.Level()
    await overhead.run_level(overhead.Target("router", endpoint, pid), streams, rounds, tokens, level)
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", default="http://127.0.0.1:8080")
    parser.add_argument("--engine", default="llamacpp")
    parser.add_argument("--streams", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/profile"))
    args = parser.parse_args()

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    pid = listening_pid(args.router)
    info = Router(args.router).status()[args.engine]
    endpoint = Endpoint(f"{args.router}/v1", info["model"], api="completions",
                        extra={"ignore_eos": True, "engine": args.engine})
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for streams in args.streams:
        raw = args.out / f"router-{args.engine}-{streams}.txt"
        # py-spy stops on SIGINT and writes what it has; --nonblocking: the router is never paused
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
                                     "--nonblocking", "--output", str(raw)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        level = asyncio.run(drive(endpoint, pid, streams, args.rounds, args.tokens))
        spy_proc.send_signal(2)
        _, err = spy_proc.communicate(timeout=60)
        if not raw.exists():
            sys.exit(f"py-spy wrote nothing: {err.decode()[-500:]}")
        total, own, inclusive = summarize(raw.read_text())
        head = (f"### {streams} streams through the router to {args.engine} ({info['model']}): "
                f"{level.rate or 0:,.0f} tokens/s, router CPU {level.cpu_us_per_token or 0:.0f} µs/token, "
                f"{len(level.errors)} errors, {total} samples at {args.rate}/s")
        report += [head, "", table("Own time (the function itself):", own, total),
                   table("Including callees, the router's functions:", inclusive, total)]
        print("\n".join(report[-4:]), flush=True)
    (args.out / f"profile-{args.engine}.md").write_text("\n".join(report))


if __name__ == "__main__":
    main()
