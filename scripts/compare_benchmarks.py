#!/usr/bin/env python3
"""Compare every benchmark under benchmarks/ (each folder with a summary.json from benchmark_full.py): the
original write-up's ranking tables as markdown and CSV, and comparison plots, in benchmarks/_comparison/.

  .venv/bin/python scripts/compare_benchmarks.py
  .venv/bin/python scripts/compare_benchmarks.py --rank-length 1024 --pair Qwen3-0.6B=qwen3-0.6b-q8_0

Tables: single-stream ranking, parallel total and per-session tokens/s, efficiency, the largest parallelism
that keeps the per-session threshold, load times, and llama.cpp against vLLM for the same model (same name
once format and quantization are taken off, or --pair). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]
from bench import compare, plots, tables  # noqa: E402

OUTPUT = "_comparison"


def load_summaries(root: Path) -> list[dict]:
    found = []
    for path in sorted(root.glob("*/summary.json")):
        if path.parent.name == OUTPUT:
            continue
        try:
            summary = json.loads(path.read_text())
        except ValueError as exc:
            print(f"compare_benchmarks: skipping {path}: {exc}", file=sys.stderr)
            continue
        if summary.get("schema") == 1:
            found.append(summary)
    return found


def write_plots(summaries: list[dict], out: Path) -> list[Path]:
    threshold = summaries[0]["threshold"]["tokens_per_s"]
    made = [plots.comparison(summaries, "single_stream", "max_tokens", "tokens_per_s", "tokens/s (median)",
                             "generated tokens", "Single stream", out / "single_stream.png"),
            plots.comparison(summaries, "parallel", "parallel", "total_tokens_per_s", "total tokens/s",
                             "parallel streams", "Parallel: total tokens/s", out / "parallel_total.png"),
            plots.comparison(summaries, "parallel", "parallel", "per_session_tokens_per_s", "tokens/s per session",
                             "parallel streams", "Parallel: per-session tokens/s", out / "parallel_per_session.png",
                             threshold=threshold)]
    return [p for p in made if p]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks-dir", type=Path, default=SCRIPTS.parent / "benchmarks",
                   help="folder of benchmark_full.py results (default: benchmarks/)")
    p.add_argument("--output-dir", type=Path, help=f"default: BENCHMARKS_DIR/{OUTPUT}/")
    p.add_argument("--rank-length", type=int, help="single-stream length to rank by (default: the longest all have)")
    p.add_argument("--pair", action="append", default=[], metavar="VLLM_LABEL=LLAMACPP_LABEL",
                   help="the same model on both engines, when their names do not tell")
    args = p.parse_args(argv)
    summaries = load_summaries(args.benchmarks_dir)
    if not summaries:
        print(f"compare_benchmarks: no benchmark results (*/summary.json) in {args.benchmarks_dir}; run "
              "scripts/benchmark_full.py first", file=sys.stderr)
        return 1
    pairs = dict(pair.split("=", 1) for pair in args.pair)
    out = args.output_dir or args.benchmarks_dir / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    built = compare.build(summaries, args.rank_length, pairs)
    parts = [f"# Benchmark comparison: {len(summaries)} benchmarks", "",
             "Models measured through a remote API are marked (remote). Every number is a median; "
             "see docs/benchmarks.md for the columns.", ""]
    for table in built:
        tables.write_csv(out / f"{table.name}.csv", table.header, table.rows)
        parts += [f"## {table.title}", "", tables.markdown(table.header, table.rows, table.digits)
                  if table.rows else "(nothing to compare)\n"]
        if table.note and table.rows:
            parts += [table.note, ""]
    for path in write_plots(summaries, out):
        parts += [f"![{path.stem}]({path.name})", ""]
    (out / "comparison.md").write_text("\n".join(parts))
    print("\n".join(parts) + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
