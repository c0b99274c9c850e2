"""The model benchmark behind scripts/benchmark_full.py and scripts/compare_benchmarks.py.

client: one timed streamed request; admin: the router's catalog, status, load and unload; target: what to load
and how; prompts: the prompt file; phases: load, single stream, parallel; records: the rows and their CSVs;
stats: medians, percentiles, efficiency, threshold; report: summary.json and summary.md; tables: markdown and
CSV writers; compare: the ranking tables across benchmarks; plots: the PNGs; machine: what it ran on.
"""
