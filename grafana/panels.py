"""Building blocks for unified-llm's Grafana dashboards (stdlib only): panels, variables, layout.
grafana/generate.py composes them into the two dashboards."""

from __future__ import annotations

DS = {"type": "prometheus", "uid": "${datasource}"}
TOKENS_PER_SECOND = "suffix: tok/s"  # Grafana custom unit: the value, then " tok/s"
# `$engine` holds engines and instances alike (values of the one `engine` label: `llamacpp`, `llamacpp-1`...). An
# engine's name also selects its instances 1-3, whose series carry `<engine>-<N>`; an instance's name selects it.
ENGINE = 'engine=~"($engine)(-[0-9]+)?"'
RATE = "$__rate_interval"

# unified_engine_state as one number per engine, for the state timeline (value mappings below).
STATE_CODES = {"idle": 0, "loading": 1, "loaded": 2, "error": 3, "stopping": 4}
STATE_COLORS = {"idle": "text", "loading": "yellow", "loaded": "green", "error": "red", "stopping": "orange"}


# ---------------------------------------------------------------------------------------------------- panels

def target(expr: str, legend: str = "", instant: bool = False, table: bool = False) -> dict:
    """A query; `table`: an instant query whose series are rows, for a table panel."""
    instant = instant or table
    found = {"expr": expr, "legendFormat": legend or "__auto", "instant": instant, "range": not instant,
             "editorMode": "code", "datasource": DS}
    if table:
        found["format"] = "table"
    return found


def _panel(kind: str, title: str, unit: str, description: str, targets: list[dict], width: int, height: int,
           defaults: dict | None = None, options: dict | None = None, overrides: list | None = None) -> dict:
    for ref, tgt in zip("ABCDEFGHIJ", targets):
        tgt["refId"] = ref
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": overrides or []},
        "options": options or {},
        "targets": targets,
    }


def timeseries(title: str, unit: str, description: str, targets: list[dict], width: int = 12, height: int = 8,
               minimum: float | None = 0, maximum: float | None = None) -> dict:
    defaults = {"color": {"mode": "palette-classic"},
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                           "spanNulls": False}}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    options = {"legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                          "calcs": ["mean", "max", "lastNotNull"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, unit, description, targets, width, height, defaults, options)


def stat(title: str, unit: str, description: str, targets: list[dict], width: int = 6, height: int = 5,
         mappings: list | None = None, thresholds: list | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": thresholds or [{"color": "green", "value": None}]},
                "mappings": mappings or []}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
               "textMode": "value_and_name"}
    return _panel("stat", title, unit, description, targets, width, height, defaults, options)


def bargauge(title: str, unit: str, description: str, targets: list[dict], width: int = 12, height: int = 8) -> dict:
    defaults = {"color": {"mode": "continuous-GrYlRd"}, "min": 0,
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
               "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
    return _panel("bargauge", title, unit, description, targets, width, height, defaults, options)


def state_timeline(title: str, description: str, targets: list[dict], width: int = 24, height: int = 5,
                   mappings: list | None = None) -> dict:
    """`mappings`: value → text and colour; the engine states' (state_mappings()) unless given."""
    defaults = {"color": {"mode": "thresholds"}, "mappings": mappings or state_mappings(),
                "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]},
                "custom": {"fillOpacity": 80, "lineWidth": 0}}
    options = {"mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
               "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("state-timeline", title, "none", description, targets, width, height, defaults, options)


def state_mappings() -> list[dict]:
    """unified_engine_state's codes (STATE_CODES) shown as the state's name, in its colour."""
    return [{"type": "value", "options": {
        str(code): {"text": state, "color": STATE_COLORS[state], "index": code} for state, code in STATE_CODES.items()}}]


def up_down_mappings() -> list[dict]:
    """A 0/1 gauge (Prometheus' `up`, unified_peer_up) shown as down in red and up in green."""
    return [{"type": "value", "options": {"0": {"text": "down", "color": "red", "index": 0},
                                          "1": {"text": "up", "color": "green", "index": 1}}}]


def row(title: str) -> dict:
    """A Grafana row: a full-width header over the panels that follow it (up to the next row), which it can fold
    away. Expanded (`collapsed` false), so its `panels` stay empty and the panels after it keep their places."""
    return {"type": "row", "title": title, "collapsed": False, "datasource": DS, "gridPos": {"w": 24, "h": 1},
            "panels": []}


def table(title: str, description: str, key: tuple[str, str], labels: dict[str, str],
          columns: list[tuple[str, dict, str, list[dict]]], width: int = 24, height: int = 9) -> dict:
    """One row per value of the label `key` (name, header): each column an instant query (format table) `sum by
    (key)` or the like, the frames merged on the fields they all have (Time and the key). `labels`: other labels
    some query brings (name → header), shown after the key. `columns`: (header, target, unit, extra field
    properties); a header of "" hides the query's value and keeps only its labels (e.g. a model name). Grafana
    names the values "Value #<refId>" when a panel has several queries: the overrides and organize match that."""
    targets = [tgt for _, tgt, _, _ in columns]
    name, header = key
    panel = _panel("table", title, "short", description, targets, width, height, options={
        "showHeader": True, "cellHeight": "sm", "frameIndex": 0, "sortBy": [{"displayName": header, "desc": False}]})
    hidden, order, overrides = {"Time": True}, {name: 0, **{label: n for n, label in enumerate(labels, start=1)}}, []
    for index, (column, tgt, unit, extra) in enumerate(columns, start=len(order)):
        value = f"Value #{tgt['refId']}"
        order[value] = index
        if not column:
            hidden[value] = True
            continue
        overrides.append({"matcher": {"id": "byName", "options": value},
                          "properties": [{"id": "displayName", "value": column}, {"id": "unit", "value": unit},
                                         *extra]})
    panel["fieldConfig"]["overrides"] = overrides
    panel["transformations"] = [{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": hidden, "indexByName": order,
                                                               "renameByName": {name: header, **labels}}}]
    return panel


def quantiles(metric: str, by: str, selector: str = "", legend_prefix: str = "{{engine}}",
              qs: tuple[float, ...] = (0.5, 0.95)) -> list[dict]:
    """histogram_quantile targets over a Prometheus histogram, one per quantile."""
    sel = "{" + selector + "}" if selector else ""
    return [target(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[{RATE}])))",
                   f"{legend_prefix} p{round(q * 100)}") for q in qs]


# ------------------------------------------------------------------------------------------------ dashboards

def datasource_variable() -> dict:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0, "includeAll": False,
            "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False}


def engine_variable() -> dict:
    """Every value of the `engine` label: the engines and their instances (the router exports each instance's
    state, used or not). Queries match it with ENGINE, so an engine's name takes its instances along."""
    query = "label_values(unified_engine_state, engine)"
    return {"name": "engine", "label": "Engine / instance", "type": "query", "datasource": DS,
            "description": "An engine (vllm, llamacpp, transformers) with its instances, or one instance "
                           "(llamacpp-1). Request "
                           "series are counted per engine; process, state and load series per instance.",
            "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "current": {"text": ["All"], "value": ["$__all"]}, "hide": 0, "includeAll": True, "multi": True,
            "allValue": None, "options": [], "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False}


def layout(panels: list[dict]) -> list[dict]:
    """Number the panels and flow them left to right, top to bottom, on Grafana's 24-column grid (a row, 24
    wide, starts a line of its own)."""
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        panel["id"] = number
        panel["gridPos"] = {"h": grid["h"], "w": grid["w"], "x": x, "y": y}
        x += grid["w"]
        row_height = max(row_height, grid["h"])
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["unified-llm"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "unified-llm dashboards", "type": "dashboards", "tags": ["unified-llm"],
                   "asDropdown": True, "includeVars": False, "keepTime": True, "icon": "external link",
                   "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": variables},
        "panels": layout(panels),
    }
