"""The model benchmark behind scripts/benchmark_full.py and scripts/compare_benchmarks.py: a streaming client
(client), the router's admin calls (admin), what to load (target), the phases (phases), the rows and their CSV
files (records), the statistics (stats), the reports (report, compare) and the plots (plots)."""
