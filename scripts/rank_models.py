#!/usr/bin/env python3
"""The ranking table across every model evaluated so far (each evals/<label>/results.json from
eval_instructions.py): rank, model, local or API, engine, parameters, pass rate, tokens/s from the model's
benchmark (benchmarks/<label>/summary.json) when there is one, and grade; plus the pass rate per category.
Writes ranking.md, ranking.csv and categories.csv to evals/_ranking/.

  .venv/bin/python scripts/rank_models.py
  .venv/bin/python scripts/rank_models.py --evals-dir evals --benchmarks-dir benchmarks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent)]
from bench import tables  # noqa: E402
from evaluation import ranking  # noqa: E402

OUTPUT = "_ranking"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evals-dir", type=Path, default=SCRIPTS.parent / "evals",
                   help="eval_instructions.py's results (default: evals/)")
    p.add_argument("--benchmarks-dir", type=Path, default=SCRIPTS.parent / "benchmarks",
                   help="benchmark_full.py's results, for tokens/s (default: benchmarks/)")
    p.add_argument("--output-dir", type=Path, help=f"default: EVALS_DIR/{OUTPUT}/")
    args = p.parse_args(argv)
    results = ranking.load_results(args.evals_dir)
    if not results:
        print(f"rank_models: no evaluation results (*/results.json) in {args.evals_dir}; run "
              "scripts/eval_instructions.py first", file=sys.stderr)
        return 1
    rows = ranking.ranked(results, args.benchmarks_dir)
    out = args.output_dir or args.evals_dir / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "ranking.csv", *ranking.ranking_table(rows, for_csv=True))
    tables.write_csv(out / "categories.csv", *ranking.category_table(rows))
    lengths = sorted({x["speed_tokens"] for x in rows if x["speed_tokens"]})
    speed_note = (f"tokens/s: the model's single-stream median at {', '.join(map(str, lengths))} tokens, from "
                  "benchmarks/<label>/summary.json" if lengths else "tokens/s: no benchmark of these models yet "
                  "(scripts/benchmark_full.py)")
    text = "\n".join([
        f"# Instruction-following ranking ({len(rows)} models)", "",
        "Pass rate over the 29 code-decided checks (mean over repeats; spread: the repeats' lowest and highest), "
        f"grade S ≥ 95%, A+ ≥ 90%, A ≥ 80%, B+ ≥ 75%, B ≥ 67%, B- ≥ 60%, C+ ≥ 55%, C ≥ 40%, C- ≥ 30%, D below; "
        f"{speed_note}. See docs/evaluation.md.", "",
        tables.markdown(*ranking.ranking_table(rows)),
        "## Pass rate per category (%)", "", tables.markdown(*ranking.category_table(rows))])
    (out / "ranking.md").write_text(text)
    print(text + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
