"""Grafana's side of the deployment, checked without a Grafana server: the shipped dashboards against Grafana's
published dashboard schema (@grafana/schema's types, compiled with tsc from tests/schemas/grafana, which
scripts/install.py installs with `npm ci`), and the provisioning files' keys. tests/unit/test_dashboards.py
checks their content and their agreement with Prometheus; tests/unit/test_deployment.py the compose mounts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]
GRAFANA_SCHEMA = PROJECT / "tests" / "schemas" / "grafana"


# @grafana/schema's panel option modules, by panel type (its package.json "exports")
PANEL_OPTIONS = {"timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
                 "stat": "stat/panelcfg/x/StatPanelCfg_types.gen",
                 "bargauge": "bargauge/panelcfg/x/BarGaugePanelCfg_types.gen",
                 "state-timeline": "statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen",
                 "table": "table/panelcfg/x/TablePanelCfg_types.gen"}
WITH_CUSTOM_FIELDS = {"timeseries", "state-timeline"}


def grafana_typescript(boards: dict[str, dict]) -> str:
    """A TypeScript module that assigns each dashboard to @grafana/schema's `Dashboard` type and each panel's
    options to its panel type's `Options`: tsc then checks every key and value against Grafana's schema (object
    literals may carry no unknown key). String enums accept their literal values (`Plain`); panel options may
    omit keys, which Grafana fills with its defaults (`Loose`)."""
    lines = ["import type { Dashboard } from '@grafana/schema';"]
    lines += [f"import type * as P{i} from '@grafana/schema/dist/esm/raw/composable/{module}';"
              for i, module in enumerate(PANEL_OPTIONS.values())]
    lines.append("type Plain<T> = T extends string ? `${T}` : T extends (infer U)[] ? Plain<U>[] : "
                 "T extends object ? { [K in keyof T]: Plain<T[K]> } : T;")
    lines.append("type Loose<T> = T extends string ? `${T}` : T extends (infer U)[] ? Loose<U>[] : "
                 "T extends object ? { [K in keyof T]?: Loose<T[K]> } : T;")
    alias = {kind: f"P{i}" for i, kind in enumerate(PANEL_OPTIONS)}
    for n, (name, board) in enumerate(boards.items()):
        lines.append(f"// {name}\nexport const board{n}: Plain<Dashboard> = {json.dumps(board, indent=1)};")
        for panel in board["panels"]:
            if panel["type"] == "row":  # a row has no options: `Dashboard` checks it as a RowPanel
                continue
            kind, where = alias[panel["type"]], f"b{n}_p{panel['id']}"
            lines.append(f"export const {where}_options: Loose<{kind}.Options> = {json.dumps(panel['options'])};")
            custom = panel["fieldConfig"]["defaults"].get("custom", {})
            if panel["type"] in WITH_CUSTOM_FIELDS:
                lines.append(f"export const {where}_custom: Loose<{kind}.FieldConfig> = {json.dumps(custom)};")
            else:
                assert not custom, f"{name} {panel['title']!r}: {panel['type']} has no custom field config"
    return "\n".join(lines) + "\n"


def tsc(tmp_path: Path, boards: dict[str, dict]) -> subprocess.CompletedProcess:
    compiler = GRAFANA_SCHEMA / "node_modules" / "typescript" / "bin" / "tsc"
    assert compiler.is_file(), "run ./scripts/setup.sh --for-tests (it installs tests/schemas/grafana with npm ci)"
    (tmp_path / "node_modules").symlink_to(GRAFANA_SCHEMA / "node_modules")
    (tmp_path / "dashboards.ts").write_text(grafana_typescript(boards))
    return subprocess.run(["node", str(compiler), "--noEmit", "--strict", "--module", "esnext", "--moduleResolution",
                           "bundler", "--skipLibCheck", "dashboards.ts"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def shipped_dashboards() -> dict[str, dict]:
    boards = {}
    for path in sorted((PROJECT / "grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for variable in board["templating"]["list"]:
            # The known differences from the published schema, both on the overview's `$engine` query variable
            # and both written by Grafana's own dashboard exports (left to grafana/generate.py's owners):
            # `"allValue": null` (the schema: an optional string) and `definition` (not in the schema).
            if "allValue" in variable and variable["allValue"] is None:
                del variable["allValue"]
            variable.pop("definition", None)
        boards[path.name] = board
    assert boards
    return boards


def test_dashboards_match_grafanas_published_schema(tmp_path):
    result = tsc(tmp_path, shipped_dashboards())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_schema_check_catches_a_wrong_dashboard(tmp_path):
    boards = shipped_dashboards()
    board = next(iter(boards.values()))
    board["panels"][0]["gridPos"]["w"] = "12"  # a string where the schema wants a number
    board["panels"][1]["tooltip"] = {}  # a key panels do not have
    board["panels"][2]["options"]["legend"] = {"showLegend": "no"}
    result = tsc(tmp_path, boards)
    assert result.returncode != 0
    assert len(re.findall(r"error TS\d+", result.stdout)) >= 3, result.stdout


# Grafana publishes no schema for provisioning files: the keys its docs list ("Provision Grafana").
DATASOURCE_KEYS = {"name", "type", "uid", "access", "orgId", "url", "user", "database", "basicAuth",
                   "basicAuthUser", "withCredentials", "isDefault", "jsonData", "secureJsonData", "version", "editable"}
PROVIDER_KEYS = {"name", "orgId", "folder", "folderUid", "type", "disableDeletion", "updateIntervalSeconds",
                 "allowUiUpdates", "options"}


def test_provisioning_files_use_only_keys_grafana_knows():
    sources = yaml.safe_load((PROJECT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert sources["apiVersion"] == 1 and set(sources) <= {"apiVersion", "datasources", "deleteDatasources"}
    for source in sources["datasources"]:
        assert set(source) <= DATASOURCE_KEYS, set(source) - DATASOURCE_KEYS
    providers = yaml.safe_load((PROJECT / "grafana/provisioning/dashboards/unified-llm.yml").read_text())
    assert providers["apiVersion"] == 1 and set(providers) == {"apiVersion", "providers"}
    for provider in providers["providers"]:
        assert set(provider) <= PROVIDER_KEYS, set(provider) - PROVIDER_KEYS
        assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}
