"""A real Prometheus, configured from the shipped prometheus/prometheus.yml, scrapes the real router and the three
engines through it; after mixed traffic and a model load, every query of every Grafana panel returns data (the
Peers row's and the rpc workers panel's: valid, with no data, as the session's router has no peers and no model on
rpc workers). The Transformers engine has no model in
the session's stack: this module loads the tiny Dream stand-in (a diffusion model, so its diffusion steps count
too) for its tests and unloads it afterwards."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.stack import PROJECT, Stack, free_port, wait_for

pytestmark = pytest.mark.e2e

SHIPPED_CONFIG = PROJECT / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((PROJECT / "grafana" / "dashboards").glob("*.json"))
ENGINES = {"vllm": "tiny-llama-a", "llamacpp": "tiny-llama-a-gguf", "transformers": "tiny-dream-standin"}
PREFIXES = {"vllm": "vllm:", "llamacpp": "llamacpp:", "transformers": "transformers:"}  # each engine's own series
ENDPOINTS = ("completions", "chat_completions")
REQUESTS = 'sum(unified_requests_total{engine=~"vllm|llamacpp|transformers"})'
# Series the session's stack cannot have: its router has no peers (`peers:` in models.yaml: the overview's Peers
# row) and no model spread over rpc workers (test_distributed_rpc.py reads that series from the router). Those
# queries must still be valid PromQL (Prometheus answers success), with no data.
NOT_IN_THIS_STACK = {"unified_peer_": "no peers", "unified_rpc_worker_up": "no model on rpc workers"}
# What Grafana would substitute ($datasource only appears in datasource fields, never in a query);
# $__rate_interval is set per run to a window that spans the test's traffic.
VARIABLES = {"__rate_interval": "15s", "__interval": "5s", "__range": "5m",
             "engine": "vllm|llamacpp|transformers"}
INSTALL_HINT = "run ./scripts/setup.sh --for-tests (scripts/install.py installs Debian's `prometheus` package)"


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not found:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def promtool_check(config: Path) -> None:
    out = subprocess.run([binary("promtool"), "check", "config", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"promtool check config {config} failed:\n{out.stdout}{out.stderr}"


def get_json(url: str, timeout: float = 10) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 with a JSON error body
        return json.loads(exc.read() or b"{}")


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str, at: float | None = None) -> dict:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        return get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params), timeout=30)

    def scalar(self, expr: str) -> float:
        result = self.query(expr).get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else 0.0

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def scraped_after(prometheus: Prometheus, instant: float) -> None:
    """Wait until Prometheus has scraped every target after `instant`."""
    wait_for(lambda: prometheus.scalar("min(timestamp(up))") > instant, 30,
             f"every target to be scraped after {instant:.1f}", 0.2)


def test_shipped_config_passes_promtool():
    promtool_check(SHIPPED_CONFIG)


@pytest.fixture(scope="module")
def transformers_model(stack: Stack):
    """The Transformers engine with a model for this module (the session starts it idle), idle again afterwards."""
    code, body = stack.api("POST", "/v1/models/load", {"engine": "transformers", "model_path": ENGINES["transformers"]},
                           timeout=300)
    assert code == 200, f"loading {ENGINES['transformers']} on transformers: {code} {body}"
    try:
        # its requests_total series is labelled by outcome: it exists from the first request on
        code, body = stack.api("POST", "/v1/completions", {"engine": "transformers", "model": ENGINES["transformers"],
                                                           "prompt": "Once", "max_tokens": 4}, timeout=120)
        assert code == 200, body
        yield ENGINES["transformers"]
    finally:
        code, body = stack.api("POST", "/v1/models/unload", {"engine": "transformers"})
        assert code == 200, body
        wait_for(lambda: stack.status()["transformers"]["status"] == "idle", 60, "the Transformers engine to be idle")


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory):
    """Our own Prometheus on a free loopback port, scraping the session's router every second."""
    home = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [f"127.0.0.1:{stack.router_port}" if t == "router:8080" else t
                                 for t in static["targets"]]
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    promtool_check(config_path)
    port = free_port()
    log = home / "prometheus.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = Prometheus(url=f"http://127.0.0.1:{port}", log=log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}):\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False
        wait_for(ready, 60, "prometheus to be ready", interval=0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def dashboard_metric_names() -> set[str]:
    names = set()
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for tgt in panel.get("targets", []):  # a row has none
                names |= set(re.findall(r"\b((?:vllm|llamacpp|transformers):[a-zA-Z0-9_:]*)", tgt["expr"]))
    return names


def exposed_names(text: str) -> set[str]:
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_engines_expose_the_metrics_the_dashboards_use(stack: Stack, transformers_model):
    """Checked on the engines' own ports, so a name the engine does not have is told apart from a router bug."""
    wanted = dashboard_metric_names()
    assert {n.split(":")[0] for n in wanted} == set(ENGINES)
    for engine in ENGINES:
        stack.wait_loaded(engine, timeout=300)
        url = f"http://127.0.0.1:{stack.engine_ports[engine]}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            have = exposed_names(resp.read().decode())
        prefix = PREFIXES[engine]
        missing = sorted(n for n in wanted if n.startswith(prefix) and n not in have)
        assert not missing, f"{engine} does not expose {missing} (it has {sorted(have)[:80]}...)"


def request(stack: Stack, engine: str, endpoint: str, stream: bool, n: int) -> tuple[int, bytes]:
    body = {"engine": engine, "model": ENGINES[engine], "max_tokens": 12, "stream": stream,
            "temperature": 0.7}
    if endpoint == "completions":
        body["prompt"] = f"Request {n}: once upon a time"
    else:
        body["messages"] = [{"role": "user", "content": f"Request {n}: tell me a story"}]
    return stack.api_raw("POST", f"/v1/{endpoint.replace('_', '/')}", json.dumps(body).encode(), timeout=180)


def run_requests(stack: Stack, jobs: list[tuple[str, str, bool, int]]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: (job, request(stack, *job)), jobs))
    bad = [(job, code, body[:200]) for job, (code, body) in results if code != 200 or not body]
    assert not bad, f"requests failed: {bad}"
    assert all(b"data:" in body for (_, _, stream, _), (_, body) in results if stream), "a stream had no events"


def load(stack: Stack, model: str) -> None:
    code, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": model}, timeout=300)
    assert code == 200, f"loading {model} on llamacpp: {code} {body}"


def targets_up(prometheus: Prometheus) -> bool:
    """Every job of prometheus/prometheus.yml (the router, each engine and each engine instance) scraped."""
    jobs = yaml.safe_load((PROJECT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    active = get_json(prometheus.url + "/api/v1/targets").get("data", {}).get("activeTargets", [])
    return len(active) == len(jobs) and all(t["health"] == "up" for t in active)


def expand(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value)
        expr = re.sub(r"\$" + name + r"\b", value, expr)
    assert "$" not in expr, f"a template variable is left in {expr}"
    return expr


def test_every_dashboard_query_returns_data(stack: Stack, prometheus: Prometheus, transformers_model):
    for engine in ENGINES:
        stack.wait_loaded(engine, timeout=300)
    try:
        wait_for(lambda: targets_up(prometheus), 60, "Prometheus to scrape every router endpoint", 1)
    except TimeoutError:
        active = get_json(prometheus.url + "/api/v1/targets").get("data", {}).get("activeTargets", [])
        pytest.fail("scrape targets not up after 60s:\n" + "\n".join(
            f"  {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}" for t in active))

    # One model load (and back) so the load-duration series exist.
    try:
        load(stack, "tiny-llama-b-gguf")
    finally:
        load(stack, "tiny-llama-a-gguf")
    # A first request per engine and endpoint creates the router's series; once Prometheus has them, the
    # traffic below shows up as an increase (a series first scraped at its final value has no rate).
    warm_up = [(engine, endpoint, False, -1) for engine in ENGINES for endpoint in ENDPOINTS]
    before = prometheus.scalar(REQUESTS)
    run_requests(stack, warm_up)
    wait_for(lambda: prometheus.scalar(REQUESTS) >= before + len(warm_up), 60,
             "Prometheus to scrape the first requests", 1)
    scraped_after(prometheus, time.time())  # one more sample of each series before the traffic: a baseline

    started = time.time()
    before = prometheus.scalar(REQUESTS)
    jobs = [(engine, endpoint, stream, n) for engine in ENGINES for endpoint in ENDPOINTS
            for stream in (False, True) for n in range(4)]  # 16 requests per engine, 32 in all
    run_requests(stack, jobs)
    wait_for(lambda: prometheus.scalar(REQUESTS) >= before + len(jobs), 60,
             "Prometheus to scrape the traffic's request counts", 1)
    wait_for(lambda: prometheus.scalar('sum(unified_model_load_duration_seconds_count{engine="llamacpp"})') >= 2,
             30, "Prometheus to scrape the model loads", 1)
    # Evaluate at a fixed instant after the scrapes that saw the traffic, over a rate window that spans the
    # traffic: the rate and histogram panels then show numbers, not 0s and NaNs.
    at = time.time() + 1
    scraped_after(prometheus, at + 1)  # every target scraped after the instant: its data there is final
    variables = VARIABLES | {"__rate_interval": f"{max(15, math.ceil(at - started) + 5)}s"}
    print(f"\nqueries evaluated at {at:.0f} with {variables}")

    # Engine series carry engine=<engine name> (the router keeps vLLM's own engine="0" as exported_engine).
    labelled = prometheus.query('count by (job, engine) ({__name__=~"(vllm|llamacpp|transformers):.+"})',
                                at)["data"]["result"]
    assert {(r["metric"]["job"], r["metric"].get("engine")) for r in labelled} == \
        {(f"unified-llm-{engine}", engine) for engine in ENGINES}, labelled

    failures, report = [], []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for tgt in panel.get("targets", []):  # a row has none
                where = f"{board['title']} › {panel['title']} [{tgt['refId']}]"
                expr = expand(tgt["expr"], variables)
                answer = prometheus.query(expr, at)
                if answer.get("status") != "success":
                    failures.append(f"{where}: {expr}\n    error: {answer.get('error', answer)}")
                    continue
                result = answer["data"]["result"]
                absent = next((why for series, why in NOT_IN_THIS_STACK.items() if series in expr), None)
                if not result and absent:
                    report.append(f"{where}: valid, no data ({absent} in this stack)")
                    continue
                if not result:
                    failures.append(f"{where}: {expr}\n    empty result")
                    continue
                values = [s["value"][1] for s in result]
                if all(v == "NaN" for v in values):  # e.g. a histogram_quantile over buckets that did not move
                    failures.append(f"{where}: {expr}\n    only NaN: {result}")
                    continue
                report.append(f"{where}: {len(result)} series, e.g. {result[0]['metric']} = {values[0]}")
    print("\n".join(report))
    assert not failures, f"{len(failures)} panel queries returned no data:\n" + "\n".join(failures)
