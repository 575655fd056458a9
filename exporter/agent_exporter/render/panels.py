"""Grafana building blocks: a query, a panel of each kind, a variable, a dashboard.

Small builders, as grafonnet's, so that every panel gets the same datasource,
units, thresholds and layout; dashboards.py assembles the dashboards from them.
"""

from __future__ import annotations

from string import ascii_uppercase

from .common import number as num

# grafana/grafana:11.5 writes schemaVersion 40 (11.3 added the v40 migration,
# v41 came after 11.5); dashboards at that version load without a migration.
GRAFANA_VERSION = "11.5.2"
SCHEMA_VERSION = 40
TAGS = ["agent-exporter", "orchestrator"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


# -- queries -----------------------------------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False, table: bool = False,
          exemplar: bool = False, heatmap: bool = False) -> dict:
    """One Prometheus query; the panel assigns its refId."""
    fmt = "heatmap" if heatmap else "table" if table else "time_series"
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "exemplar": exemplar,
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }


def _with_ref_ids(targets: list[dict]) -> list[dict]:
    return [dict(t, refId=ascii_uppercase[i]) for i, t in enumerate(targets)]


# -- field config ------------------------------------------------------------


def steps(*pairs: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def upper_limit(limit: float, *, warn: float | None = None) -> dict:
    """Green below `limit` (orange from `warn`), red from it: for ratios, latencies, spend."""
    pairs = [("green", None)]
    if warn is not None:
        pairs.append(("orange", warn))
    pairs.append(("red", limit))
    return steps(*pairs)


def lower_limit(limit: float) -> dict:
    """Red below `limit`, green from it: for success ratios."""
    return steps(("red", None), ("green", limit))


NO_THRESHOLDS = steps(("green", None))


def override(field: str, **properties) -> dict:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": key, "value": value} for key, value in properties.items()],
    }


# -- panels ------------------------------------------------------------------


def _panel(kind: str, title: str, description: str, targets: list[dict], *, unit: str,
           w: int, h: int, options: dict, thresholds: dict = NO_THRESHOLDS,
           defaults: dict | None = None, overrides: list | None = None,
           transformations: list | None = None, links: list | None = None) -> dict:
    panel = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": thresholds, **(defaults or {})},
            "overrides": overrides or [],
        },
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "options": options,
        "targets": _with_ref_ids(targets),
        "title": title,
        "type": kind,
    }
    if transformations:
        panel["transformations"] = transformations
    if links:
        panel["links"] = links
    return panel


def timeseries(title: str, description: str, targets: list[dict], *, unit: str,
               limit: float | None = None, thresholds: dict | None = None,
               min: float | None = None, max: float | None = None, stack: bool = False,
               w: int = 12, h: int = 8, overrides: list | None = None) -> dict:
    """A time series; `limit` draws the alert threshold as a red line."""
    if limit is not None:
        thresholds = upper_limit(limit)
    custom = {
        "drawStyle": "line",
        "fillOpacity": 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    defaults: dict = {"color": {"mode": "palette-classic"}, "custom": custom}
    if min is not None:
        defaults["min"] = min
    if max is not None:
        defaults["max"] = max
    options = {
        "legend": {"calcs": ["mean", "lastNotNull", "max"], "displayMode": "table",
                   "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, targets, unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds or NO_THRESHOLDS,
                  defaults=defaults, overrides=overrides)


def stat(title: str, description: str, target: dict, *, unit: str,
         thresholds: dict = NO_THRESHOLDS, decimals: int | None = None,
         w: int = 4, h: int = 4) -> dict:
    """A single number (one of the legacy dashboard's cards)."""
    defaults = {"color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": "auto",
        "wideLayout": True,
    }
    return _panel("stat", title, description, [target], unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds, defaults=defaults)


def bargauge(title: str, description: str, target: dict, *, unit: str,
             thresholds: dict = NO_THRESHOLDS, overrides: list | None = None, w: int = 12, h: int = 8) -> dict:
    """One bar per series, from an instant query."""
    options = {
        "displayMode": "gradient",
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    return _panel("bargauge", title, description, [target], unit=unit, w=w, h=h,
                  options=options, thresholds=thresholds, overrides=overrides,
                  defaults={"color": {"mode": "thresholds"}, "min": 0})


def table(title: str, description: str, targets: list[dict], *, unit: str,
          overrides: list, hidden: tuple[str, ...] = (), order: tuple[str, ...] = (),
          sort_by: str | None = None, w: int = 24, h: int = 8) -> dict:
    """A table of instant queries merged on their labels (one row per label set).

    Columns are addressed by their names before renaming: a label name, or
    `Value #<refId>` for the value of each query.
    """
    organize = {
        "excludeByName": {name: True for name in ("Time", *hidden)},
        "indexByName": {name: i for i, name in enumerate(order)},
        "renameByName": {},
    }
    options = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else [],
    }
    return _panel("table", title, description, targets, unit=unit, w=w, h=h, options=options,
                  defaults={"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                  overrides=overrides,
                  transformations=[{"id": "merge", "options": {}},
                                   {"id": "organize", "options": organize}])


def heatmap(title: str, description: str, target: dict, *, unit: str,
            w: int = 24, h: int = 9) -> dict:
    """Histogram buckets over time (a `format: heatmap` query), exemplars drawn as dots."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": "ops"},
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                  "scale": "exponential", "scheme": "Oranges", "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
    }
    return _panel("heatmap", title, description, [target], unit=unit, w=w, h=h,
                  options=options, defaults={"custom": {"scaleDistribution": {"type": "linear"}}})


def state_timeline(title: str, description: str, target: dict, *, mappings: list,
                   w: int = 12, h: int = 8) -> dict:
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _panel("state-timeline", title, description, [target], unit="none", w=w, h=h,
                  options=options, defaults={"color": {"mode": "thresholds"},
                                             "mappings": mappings})


def row(title: str) -> dict:
    """A section header; rows hold no queries."""
    return {"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "panels": [], "title": title, "type": "row"}


def value_mapping(value: float, text: str, color: str) -> dict:
    return {"options": {num(value): {"color": color, "index": int(value), "text": text}},
            "type": "value"}


def layout(panels: list[dict]) -> list[dict]:
    """Flow panels left to right in the 24-column grid and number them."""
    x = y = row_height = 0
    placed = []
    for panel_id, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24 or panel["type"] == "row":
            x, y, row_height = 0, y + row_height, 0
        placed.append(dict(panel, id=panel_id, gridPos=dict(grid, x=x, y=y)))
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        if panel["type"] == "row":
            x, y, row_height = 0, y + grid["h"], 0
    return placed


# -- variables and dashboards ------------------------------------------------


def datasource_variable() -> dict:
    return {
        "current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
        "name": "datasource", "options": [], "query": "prometheus", "refresh": 1,
        "regex": "", "skipUrlSync": False, "type": "datasource",
    }


def query_variable(name: str, label: str, expr: str, *, include_all: bool = True) -> dict:
    """A variable from `label_values(...)`: several values or "All" (every value, `.+`), or with
    `include_all=False` one value."""
    variable = {
        "current": {}, "datasource": DATASOURCE, "definition": expr, "hide": 0,
        "includeAll": include_all, "label": label, "multi": include_all, "name": name,
        "options": [],
        "query": {"qryType": 1, "query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1, "type": "query",
    }
    if include_all:
        variable["allValue"] = ".+"
    return variable


def dashboard(uid: str, title: str, description: str, panels: list[dict],
              variables: list[dict]) -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{
            "asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True,
            "tags": TAGS[:1], "targetBlank": False, "title": "Orchestrator dashboards",
            "tooltip": "", "type": "dashboards", "url": "",
        }],
        "panels": layout(panels),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
