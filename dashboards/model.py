"""Small helpers that build Grafana's dashboard JSON model as plain dictionaries.

Only what our dashboards use: time series, stat, gauge, bar gauge, table and state timeline
panels, rows, template variables and data links. Every panel gets a unit, thresholds and a
description (``panel()`` refuses to build one without them). Texts are :class:`Text` pairs; the
whole tree is turned into one language by :func:`localize`, so a dashboard is described once.

Layout is a flow: panels are placed left to right on Grafana's 24-column grid and wrap to the next
line, so ``gridPos`` never has to be written by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

LANGS = ("en", "vi")
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x dashboard JSON model
DS = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Text:
    """A text in English and Vietnamese."""

    en: str
    vi: str

    def __post_init__(self):
        if not self.en.strip() or not self.vi.strip():
            raise ValueError(f"text needs both languages: {self!r}")

    def __add__(self, other: "Text") -> "Text":
        return Text(self.en + other.en, self.vi + other.vi)


def localize(node: Any, lang: str) -> Any:
    """Replace every :class:`Text` in a tree of dicts/lists by its ``lang`` string."""
    if isinstance(node, Text):
        return getattr(node, lang)
    if isinstance(node, dict):
        return {k: localize(v, lang) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [localize(v, lang) for v in node]
    return node


def uid(name: str, lang: str) -> str:
    """Stable dashboard UID: the two language sets can live side by side in one Grafana."""
    return f"cm-{name}-{lang}"


# ---------------------------------------------------------------- queries

@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel: expression, legend, and whether it is an instant table query."""

    expr: str
    legend: str = ""
    instant: bool = False

    def target(self, ref: str) -> dict:
        t = {"datasource": DS, "refId": ref, "expr": self.expr, "legendFormat": self.legend or "__auto",
             "range": not self.instant, "instant": self.instant, "editorMode": "code"}
        if self.instant:
            t["format"] = "table"
        return t


# ---------------------------------------------------------------- thresholds

Steps = Sequence[Tuple[Optional[float], str]]

GOOD_HIGH: Steps = ((None, "red"), (0.9, "orange"), (0.99, "green"))   # availability-like ratios
OK: Steps = ((None, "green"),)                                           # informational


def thresholds(steps: Steps) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def above(warn: float, crit: float) -> Steps:
    """Green below ``warn``, orange from it, red from ``crit``."""
    return ((None, "green"), (warn, "orange"), (crit, "red"))


def below(crit: float, warn: float) -> Steps:
    """Red below ``crit``, orange below ``warn``, green above."""
    return ((None, "red"), (crit, "orange"), (warn, "green"))


# ---------------------------------------------------------------- panels

def panel(kind: str, title: Text, description: Text, queries: Sequence[Q], *, unit: str,
          steps: Steps, w: int = 12, h: int = 8, min: Optional[float] = None, max: Optional[float] = None,
          decimals: Optional[int] = None, options: Optional[dict] = None, custom: Optional[dict] = None,
          overrides: Sequence[dict] = (), links: Sequence[dict] = (), mappings: Sequence[dict] = (),
          transformations: Sequence[dict] = ()) -> dict:
    if not isinstance(title, Text) or not isinstance(description, Text):
        raise TypeError("title and description must be Text in both languages")
    if not unit or not steps:
        raise ValueError(f"panel {title.en!r} needs a unit and thresholds")
    defaults: Dict[str, Any] = {"unit": unit, "thresholds": thresholds(steps),
                                "color": {"mode": "thresholds" if kind != "timeseries" else "palette-classic"}}
    for key, value in (("min", min), ("max", max), ("decimals", decimals)):
        if value is not None:
            defaults[key] = value
    if custom:
        defaults["custom"] = custom
    if links:
        defaults["links"] = list(links)
    if mappings:
        defaults["mappings"] = list(mappings)
    p = {"type": kind, "title": title, "description": description, "datasource": DS,
         "targets": [q.target(chr(ord("A") + i)) for i, q in enumerate(queries)],
         "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
         "options": options or {}, "_size": (w, h)}
    if transformations:
        p["transformations"] = list(transformations)
    return p


def timeseries(title, description, queries, *, unit, steps=OK, stack=False, bars=False, **kw) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": "off" if steps == OK else "dashed"}}
    options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"],
                          "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, queries, unit=unit, steps=steps, custom=custom,
                 options=options, **kw)


def stat(title, description, queries, *, unit, steps, w=4, h=4, graph=False, **kw) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "background", "graphMode": "area" if graph else "none",
               "justifyMode": "auto", "textMode": "auto", "orientation": "auto"}
    return panel("stat", title, description, queries, unit=unit, steps=steps, w=w, h=h, options=options, **kw)


def bargauge(title, description, queries, *, unit, steps, **kw) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
               "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
    return panel("bargauge", title, description, queries, unit=unit, steps=steps, options=options, **kw)


def state_timeline(title, description, queries, *, unit, steps, mappings=(), **kw) -> dict:
    options = {"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "single", "sort": "none"}}
    custom = {"fillOpacity": 80, "lineWidth": 0}
    return panel("state-timeline", title, description, queries, unit=unit, steps=steps, options=options,
                 custom=custom, mappings=mappings, **kw)


def table(title, description, queries, *, unit, steps, columns: Dict[str, Any] = None,
          hide: Sequence[str] = (), sort: Optional[Tuple[Text, bool]] = None, merge: bool = False,
          cell_overrides: Sequence[dict] = (), **kw) -> dict:
    """An instant table. ``columns`` renames labels/values (``Value #A`` ...) and fixes their order.

    ``merge`` joins several queries on their common labels (one row per device).
    """
    queries = [Q(q.expr, q.legend, instant=True) for q in queries]
    transformations: List[dict] = []
    if merge:
        transformations.append({"id": "merge", "options": {}})
    excluded = {name: True for name in ("Time", "__name__", *hide)}
    order = {name: i for i, name in enumerate(columns or {})}
    transformations.append({"id": "organize", "options": {"excludeByName": excluded, "indexByName": order,
                                                          "renameByName": dict(columns or {})}})
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort:
        options["sortBy"] = [{"displayName": sort[0], "desc": sort[1]}]
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": True}
    return panel("table", title, description, queries, unit=unit, steps=steps, options=options, custom=custom,
                 transformations=transformations, overrides=cell_overrides, **kw)


def column(name: Union[str, Text], **props) -> dict:
    """A field override for one table column: unit, thresholds (``steps``), cell colouring, links,
    value mappings, ``hidden`` (a column data links use but nobody needs to read)."""
    properties = []
    if "unit" in props:
        properties.append({"id": "unit", "value": props["unit"]})
    if "steps" in props:
        properties.append({"id": "thresholds", "value": thresholds(props["steps"])})
    if "cell" in props:
        properties.append({"id": "custom.cellOptions", "value": {"type": props["cell"]}})
    if "links" in props:
        properties.append({"id": "links", "value": list(props["links"])})
    if "decimals" in props:
        properties.append({"id": "decimals", "value": props["decimals"]})
    if "max" in props:
        properties.append({"id": "max", "value": props["max"]})
    if "mappings" in props:
        properties.append({"id": "mappings", "value": list(props["mappings"])})
    if props.get("hidden"):  # kept for data links, not shown
        properties.append({"id": "custom.hidden", "value": True})
    return {"matcher": {"id": "byName", "options": name}, "properties": properties}


def value_map(values: Dict[str, Tuple[Text, str]]) -> dict:
    """Value -> (display text, colour) mapping for status cells."""
    return {"type": "value", "options": {k: {"text": t, "color": c, "index": i}
                                         for i, (k, (t, c)) in enumerate(values.items())}}


def link(title: Text, url: str) -> dict:
    return {"title": title, "url": url, "targetBlank": False}


# ---------------------------------------------------------------- variables

def datasource_variable() -> dict:
    return {"type": "datasource", "name": "datasource", "label": Text("Data source", "Nguồn dữ liệu"),
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "description": Text("The Prometheus that holds the province's data.",
                                "Prometheus chứa dữ liệu của tỉnh.")}


def query_variable(name: str, label: Text, query: str, description: Text, *, multi: bool = True,
                   include_all: bool = True, all_value: str = ".*") -> dict:
    """A variable filled from ``label_values(...)``; multi-value ones are used as ``=~"$name"``."""
    v = {"type": "query", "name": name, "label": label, "description": description,
         "datasource": DS, "definition": query, "query": {"query": query, "refId": f"var-{name}"},
         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all, "hide": 0,
         "current": {}, "options": [], "regex": ""}
    if include_all:
        v["allValue"] = all_value
    return v


# ---------------------------------------------------------------- dashboards

def row(title: Text) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(items: Iterable[dict]) -> List[dict]:
    """Place panels left to right on the 24-column grid; a row always starts a new line."""
    out, x, y, line_h = [], 0, 0, 0
    for pid, item in enumerate(items, start=1):
        item = dict(item)
        w, h = item.pop("_size")
        if item["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        item["id"] = pid
        item["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        out.append(item)
        x += w
        line_h = max(line_h, h)
        if item["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return out


def dashboard(name: str, lang: str, title: Text, description: Text, variables: Sequence[dict],
              items: Sequence[dict], *, tags: Sequence[str] = (), time_from: str = "now-24h",
              links: Sequence[dict] = ()) -> dict:
    board = {
        "uid": uid(name, lang), "title": title, "description": description,
        "tags": ["commune-monitor", *tags], "timezone": "browser", "editable": True,
        "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "1m",
        "time": {"from": time_from, "to": "now"}, "timepicker": {}, "fiscalYearStartMonth": 0,
        "liveNow": False, "weekStart": "",
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"type": "dashboards", "tags": ["commune-monitor", lang], "asDropdown": True,
                   "title": Text("Dashboards", "Bảng điều khiển"), "includeVars": True, "keepTime": True},
                  *links],
        "panels": layout(items),
    }
    board["tags"].append(lang)
    return localize(board, lang)
