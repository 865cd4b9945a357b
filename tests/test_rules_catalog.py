"""Every metric a rule references is in contract/catalog.yaml (with the labels the rule uses on it)
or is recorded by a rule itself."""
from __future__ import annotations

import re

import yaml

from contract.catalog import catalog
from tests.support import REPO

RULES = REPO / "collector" / "rules"
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan", "Inf", "NaN",
            # aggregation operators, which may be followed by by/without before their parenthesis
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
            "topk", "quantile"}
# Series Prometheus makes itself: for every scrape target, and for every active alert (ALERTS,
# which the escalation rule CriticalAlertUnresolved reads).
BUILTIN = {"up", "ALERTS"}


def referenced(expr: str):
    """(metric name, labels matched on it) for every selector of a PromQL expression."""
    text = re.sub(r"#[^\n]*", "", expr)
    out = []
    for m in re.finditer(r"(?<![\w:.\"])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        name, matchers = m.group(1), m.group(2) or ""
        before = text[:m.start()].rstrip()
        after = text[m.end():].lstrip()
        if name in KEYWORDS or (after.startswith("(") and not matchers):
            continue  # function, aggregation or keyword
        if re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$", before):
            continue  # a label name in a grouping clause
        if re.search(r"\"[^\"]*$", before) and before.count('"') % 2 == 1:
            continue  # inside a string
        if re.match(r"^\d", name) or re.search(r"\d\.?$", before) and re.match(r"e\d", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
        out.append((name, labels))
    return out


def rules():
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            yield from group["rules"]


def test_parser_finds_selectors():
    got = referenced('max by (commune, agent) (rate(node_cpu_seconds_total{mode="idle"}[5m])) '
                     '* on (commune) group_left (device) commune_device_info > bool 4.5e9 '
                     'and on () (global:office_hours:bool == 1) # comment_name')
    assert got == [("node_cpu_seconds_total", {"mode"}), ("commune_device_info", set()),
                   ("global:office_hours:bool", set())]


def test_every_referenced_metric_is_catalogued_or_recorded():
    cat = catalog()
    recorded = {r["record"] for r in rules() if "record" in r}
    missing = []
    for rule in rules():
        what = rule.get("alert") or rule.get("record")
        for name, labels in referenced(rule["expr"]):
            if name in recorded or name in BUILTIN:
                continue
            if name not in cat:
                missing.append(f"{what}: {name} is not in contract/catalog.yaml")
                continue
            unknown = labels - set(cat[name].labels) - {"commune", "agent", "job", "instance"}
            if unknown:
                missing.append(f"{what}: {name} has no label {', '.join(sorted(unknown))}")
    assert not missing, "\n".join(missing)
