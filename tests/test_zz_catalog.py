"""The metric catalog against what the whole test run emitted (collected last on purpose).

Every sample built in any test (inputs, runner, collector) and every /metrics text recorded with
``tests.support.record_exposition`` is noted by tests/conftest.py. On a full run, a metric that is
emitted but not catalogued, or catalogued but never emitted, fails here; label sets must match.
"""
from __future__ import annotations

import pytest

from contract.catalog import CATALOG_FILE, catalog, parse_catalog
from tests.support import EMITTED

KNOWN_INPUTS = {"runner", "agent", "host", "smart", "icmp", "http", "tcp", "dns", "probes", "process",
                "snmp", "discovery", "queue", "collector", "winprint", "inventory"}


def test_catalog_file_is_well_formed():
    entries = parse_catalog(CATALOG_FILE.read_text())
    assert entries, "empty catalog"
    unknown = {m.name: m.input for m in entries.values() if m.input not in KNOWN_INPUTS}
    assert not unknown, f"entries with an unknown input: {unknown}"
    for m in entries.values():
        assert m.help.endswith("."), f"{m.name}: HELP should be a sentence ending in a period"
        if m.type == "info":
            assert m.name.endswith("_info"), f"{m.name}: info metrics end in _info"


@pytest.mark.parametrize("bad,message", [
    ("metrics:\n- {name: x_total, type: gauge}\n", "missing help, input"),
    ("metrics:\n- {name: x, type: counter, help: a., input: host}\n", "counter names end in _total"),
    ("metrics:\n- {name: 9x, type: gauge, help: a., input: host}\n", "invalid metric name"),
    ("metrics:\n- {name: x, type: histogram, help: a., input: host}\n", "type must be one of"),
    ("metrics:\n- {name: x, type: gauge, help: a., input: host, colour: red}\n", "unknown field colour"),
    ("metrics:\n- {name: x, type: gauge, help: a., input: host}\n- {name: x, type: gauge, help: a., input: host}\n",
     "x is listed twice"),
])
def test_catalog_parser_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_catalog(bad)


def _full_run(request) -> bool:
    opt = request.config.option
    if getattr(opt, "keyword", "") or getattr(opt, "markexpr", "") or getattr(opt, "lf", False):
        return False
    files = {item.fspath.basename for item in request.session.items}
    return len(files) >= 5 and all(a.rstrip("/").endswith("tests") for a in request.config.args or ["tests"])


def test_everything_emitted_is_catalogued():
    missing = sorted(set(EMITTED) - set(catalog()))
    assert not missing, f"emitted but not in contract/catalog.yaml: {missing}"


def test_labels_match_the_catalog():
    cat = catalog()
    identity = {"commune", "agent", "instance", "job"}  # stamped centrally or by Prometheus
    wrong = {}
    for name, labels in EMITTED.items():
        if name in cat and set(labels) - identity != set(cat[name].labels) - identity:
            wrong[name] = (sorted(labels), list(cat[name].labels))
    assert not wrong, f"labels emitted vs catalogued: {wrong}"


def test_everything_catalogued_is_emitted(request):
    if not _full_run(request):
        pytest.skip("only meaningful when the whole suite ran (this run was filtered)")
    never = sorted(set(catalog()) - set(EMITTED))
    assert not never, f"catalogued but never emitted by any test: {never}"
