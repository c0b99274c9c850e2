"""The model benchmark behind scripts/benchmark_full.py and scripts/compare_benchmarks.py.

client: one timed streamed request; admin: the router's catalog, status, load and unload; target: what to load
and how; prompts: the prompt file; phases: load, single stream, parallel; records: the rows and their CSVs;
stats: medians, percentiles, efficiency, threshold; report: summary.json and summary.md; tables: markdown and
CSV writers; compare: the ranking tables across benchmarks; plots: the PNGs; machine: what it ran on.

Behind scripts/bench_router.py, bench_switch.py and profile_router.py (what the router costs): overhead: the
same streams direct, through the router and through LiteLLM, and the side-by-side rows; litellm_proxy: LiteLLM's
proxy installed, configured, started and stopped; switch: a model switch against the engine's own cold start.
"""
