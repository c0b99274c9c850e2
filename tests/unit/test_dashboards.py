"""The committed Grafana dashboards, their docs and the Prometheus/Grafana provisioning stay consistent with
grafana/generate.py and with each other (no processes; tests/e2e/test_dashboards.py runs the queries)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from engines.spec import ENGINE_NAMES, MAX_INSTANCES, instance_name
from router.metrics import RouterMetrics

PROJECT = Path(__file__).resolve().parents[2]
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", PROJECT / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()
BOARDS = generate.dashboards()


def committed(name: str) -> dict:
    return json.loads((PROJECT / "grafana" / "dashboards" / name).read_text())


def panels():
    """Every panel that shows data (rows, mere headers, are checked on their own)."""
    for name, board in BOARDS.items():
        for panel in board["panels"]:
            if panel["type"] != "row":
                yield name, panel


def rows():
    for name, board in BOARDS.items():
        for panel in board["panels"]:
            if panel["type"] == "row":
                yield name, panel


def test_committed_files_are_what_the_generator_makes():
    """Regenerated in memory: the dashboards JSON and the panel list in docs/metrics.md cannot drift."""
    stale = [str(path.relative_to(PROJECT)) for path, text in generate.outputs().items()
             if not path.exists() or path.read_text() != text]
    assert not stale, f"out of date, run `python3 grafana/generate.py`: {stale}"
    shipped = {p.name for p in (PROJECT / "grafana" / "dashboards").glob("*.json")}
    assert shipped == set(BOARDS), "grafana/dashboards/ holds JSON the generator does not make"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_committed_json_parses_to_the_generated_dashboard(name):
    assert committed(name) == BOARDS[name]


def test_every_panel_has_a_title_a_unit_and_a_query():
    problems = []
    for name, panel in panels():
        where = f"{name} panel {panel.get('id')} {panel.get('title')!r}"
        if not panel.get("title", "").strip():
            problems.append(f"{where}: no title")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no fieldConfig.defaults.unit")
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr", "").strip() for t in targets):
            problems.append(f"{where}: no target, or a target without expr")
        if not panel.get("description", "").strip():
            problems.append(f"{where}: no description")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{where}: refIds missing or repeated: {ref_ids}")
    assert not problems, "\n".join(problems)


def test_the_datasource_is_a_template_variable_everywhere():
    for name, board in BOARDS.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        for var in variables.values():
            if "datasource" in var and var["type"] != "datasource":
                assert var["datasource"]["uid"] == "${datasource}", f"{name} variable {var['name']}"
        for panel in board["panels"]:
            for holder in [panel, *panel.get("targets", [])]:
                assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, \
                    f"{name} panel {panel['title']!r}: datasource {holder['datasource']}"


def test_ids_are_unique_and_the_grid_does_not_overlap():
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(set(uids)) == len(uids) and all(len(uid) <= 40 for uid in uids)
    titles = [board["title"] for board in BOARDS.values()]
    assert len(set(titles)) == len(titles)
    for name, board in BOARDS.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: repeated panel ids {ids}"
        panel_titles = [panel["title"] for panel in board["panels"]]
        assert len(set(panel_titles)) == len(panel_titles), f"{name}: repeated panel titles"
        cells = {}
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{name} {panel['title']!r}: {grid}"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = panel["title"]


def test_every_variable_a_query_uses_is_defined():
    for name, board in BOARDS.items():
        defined = {v["name"] for v in board["templating"]["list"]} | BUILTIN_VARIABLES
        for panel in board["panels"]:
            for tgt in panel.get("targets", []):
                used = set(re.findall(r"\$\{?(\w+)", tgt["expr"]))
                assert used <= defined, f"{name} {panel['title']!r}: undefined {used - defined}"


def test_rows_are_expanded_full_width_headers():
    """An expanded row keeps no panels of its own: the panels after it, up to the next row, are its."""
    found = list(rows())
    assert ("unified-llm-overview.json", "Peers") in {(name, r["title"]) for name, r in found}
    for name, panel in found:
        assert set(panel) == {"type", "title", "collapsed", "datasource", "gridPos", "panels", "id"}, panel
        assert panel["collapsed"] is False and panel["panels"] == [], f"{name} row {panel['title']!r}"
        assert panel["gridPos"] | {"y": 0} == {"h": 1, "w": 24, "x": 0, "y": 0}, f"{name} row {panel['title']!r}"


def test_the_peers_row_holds_the_peer_panels_and_only_those():
    """Every query below the Peers row reads a unified_peer_* series, and no panel above it does."""
    board = BOARDS["unified-llm-overview.json"]["panels"]
    start = next(n for n, panel in enumerate(board) if panel["type"] == "row" and panel["title"] == "Peers")
    end = next((n for n, panel in enumerate(board[start + 1:], start + 1) if panel["type"] == "row"), len(board))
    inside = board[start + 1:end]
    assert len(inside) >= 6
    for panel in board:
        if panel["type"] == "row":
            continue
        names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        peer = {n for n in names if n.startswith("unified_peer_")}
        assert (peer == names) if panel in inside else not peer, f"{panel['title']!r}: {sorted(names)}"
    used = set().union(*(metric_names(t["expr"]) for panel in inside for t in panel["targets"]))
    exported = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert exported == {"unified_peer_requests", "unified_peer_errors", "unified_peer_request_duration_seconds",
                        "unified_peer_time_to_first_token_seconds", "unified_peer_up", "unified_peer_probe_seconds"}


def row_panels(board: list[dict], title: str) -> list[dict]:
    """The panels under the row `title`, up to the next row."""
    start = next(n for n, panel in enumerate(board) if panel["type"] == "row" and panel["title"] == title)
    end = next((n for n, panel in enumerate(board[start + 1:], start + 1) if panel["type"] == "row"), len(board))
    return board[start + 1:end]


ENGINE_ROWS = {"vLLM": "vllm:", "llama.cpp": "llamacpp:", "Transformers": "transformers:"}


def test_the_engine_detail_has_a_row_per_engine_holding_its_own_series_only():
    """vLLM, llama.cpp and Transformers: each row's queries read that engine's own series and no other's; above the
    rows only the scrape targets."""
    board = BOARDS["unified-llm-engines.json"]["panels"]
    assert [p["title"] for p in board if p["type"] == "row"] == list(ENGINE_ROWS)
    for title, prefix in ENGINE_ROWS.items():
        inside = row_panels(board, title)
        assert len(inside) >= 4, title
        for panel in inside:
            names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
            assert names and all(n.startswith(prefix) for n in names), f"{title} row, {panel['title']!r}: {names}"
    assert board[0]["title"] == "Scrape targets up" and board[1]["type"] == "row"


def test_the_transformers_row_covers_the_engines_series():
    """Throughput, requests by outcome, running and waiting, generation (and queue) time, diffusion steps: every
    transformers:* series the engine exports but its model info, read per instance and model."""
    board = BOARDS["unified-llm-engines.json"]["panels"]
    inside = row_panels(board, "Transformers")
    exprs = [t["expr"] for panel in inside for t in panel["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in metric_names(e)}
    assert used == {"transformers:prompt_tokens_total", "transformers:generation_tokens_total",
                    "transformers:requests_total", "transformers:requests_running", "transformers:requests_waiting",
                    "transformers:generation_seconds", "transformers:queue_seconds",
                    "transformers:diffusion_steps_total"}
    assert all('engine=~"($engine)(-[0-9]+)?"' in e and "by (engine, model" in e for e in exprs), exprs
    titles = {panel["title"]: panel for panel in inside}
    assert {"Transformers token throughput", "Transformers requests by outcome",
            "Transformers running and waiting requests", "Transformers generation time p50 / p95",
            "Transformers diffusion steps/s"} == set(titles)
    outcome = titles["Transformers requests by outcome"]["targets"][0]
    assert "by (engine, model, status)" in outcome["expr"] and "{{status}}" in outcome["legendFormat"]
    quantile = [t["expr"] for t in titles["Transformers generation time p50 / p95"]["targets"]]
    assert [e.split(",")[0] for e in quantile] == ["histogram_quantile(0.5", "histogram_quantile(0.95",
                                                   "histogram_quantile(0.95"]
    # the overview's Instances table names a loaded Transformers instance's model too
    instances = next(p for p in BOARDS["unified-llm-overview.json"]["panels"] if p["title"] == "Instances")
    assert any("transformers:requests_running" in t["expr"] for t in instances["targets"])


def test_queries_are_balanced():
    for name, panel in panels():
        for tgt in panel["targets"]:
            expr = tgt["expr"]
            for open_, close in ("()", "{}", "[]"):
                assert expr.count(open_) == expr.count(close), f"{name} {panel['title']!r}: {expr}"
            assert expr.count('"') % 2 == 0, f"{name} {panel['title']!r}: {expr}"


def metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b((?:unified_|vllm:|llamacpp:|transformers:)[a-zA-Z0-9_:]*)", expr)}


def router_series() -> set[str]:
    """The sample names the router's /metrics can carry: its registry's families, with each type's suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in RouterMetrics().registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_every_router_metric_the_dashboards_use_is_exported():
    """A unified_* name in a query that router/metrics.py does not register would only show "No data"."""
    exported = router_series()
    assert "unified_peer_requests_total" in exported and "unified_peer_up" in exported
    used = {m for _, p in panels() for t in p["targets"] for m in metric_names(t["expr"]) if m.startswith("unified_")}
    assert used and not used - exported, f"not exported by router/metrics.py: {sorted(used - exported)}"


def test_docs_describe_every_metric_the_dashboards_use():
    docs = (PROJECT / "docs" / "metrics.md").read_text()
    used = set().union(*(metric_names(t["expr"]) for _, p in panels() for t in p["targets"]))
    assert used, "no metric names found in the dashboards"
    missing = {m for m in used if f"`{re.sub(r'_(bucket|sum|count)$', '', m)}`" not in docs}
    assert not missing, f"docs/metrics.md does not describe {sorted(missing)}"


def test_docs_list_every_router_metric():
    docs = (PROJECT / "docs" / "metrics.md").read_text()
    router_metrics = [
        "unified_requests_total", "unified_request_duration_seconds", "unified_time_to_first_token_seconds",
        "unified_prompt_tokens_total", "unified_generated_tokens_total", "unified_generation_tokens_per_second",
        "unified_requests_in_flight", "unified_requests_queued", "unified_engine_state",
        "unified_model_load_duration_seconds", "unified_engine_restarts_total", "unified_engine_memory_rss_bytes",
        "unified_engine_cpu_seconds_total", "unified_engine_threads", "unified_router_memory_rss_bytes",
        "unified_router_open_fds", "unified_router_asyncio_tasks", "unified_peer_requests_total",
        "unified_peer_errors_total", "unified_peer_request_duration_seconds",
        "unified_peer_time_to_first_token_seconds", "unified_peer_up", "unified_peer_probe_seconds"]
    assert not [m for m in router_metrics if f"| `{m}` |" not in docs]


def test_prometheus_scrapes_the_router_and_every_engine_instance_through_it():
    config = yaml.safe_load((PROJECT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["metrics_path"]: job for job in config["scrape_configs"]}
    assert ENGINE_NAMES == ("vllm", "llamacpp", "transformers")
    instances = {instance_name(engine, k) for engine in ENGINE_NAMES for k in range(MAX_INSTANCES)}
    assert set(jobs) == {"/metrics"} | {f"/metrics/engines/{name}" for name in instances}
    for job in jobs.values():
        assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["router:8080"]
    interval = config["global"]["scrape_interval"]
    datasource = yaml.safe_load(
        (PROJECT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource[0]["jsonData"]["timeInterval"] == interval, "Grafana's timeInterval must match Prometheus"


def test_the_up_panel_matches_the_job_names():
    jobs = [job["job_name"] for job in
            yaml.safe_load((PROJECT / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]]
    assert all(job.startswith("unified-llm") for job in jobs), jobs


def test_grafana_provisioning_points_at_the_datasource_and_the_dashboards():
    datasources = yaml.safe_load(
        (PROJECT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["uid"], source["type"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    for board in BOARDS.values():
        current = next(v for v in board["templating"]["list"] if v["name"] == "datasource")["current"]
        assert current["value"] == source["uid"]
    providers = yaml.safe_load(
        (PROJECT / "grafana" / "provisioning" / "dashboards" / "unified-llm.yml").read_text())["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert f"grafana/dashboards:{path}" in (PROJECT / "docs" / "metrics.md").read_text(), \
        "docs/metrics.md must show the mount the provider expects"
