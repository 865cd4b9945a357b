"""The runbooks: every alert's runbook_url, as Prometheus renders it with the external label
runbook_base, opens a page of the real collector with that alert's section in Vietnamese and in
English; docs/runbooks.md has both parts for every section; the Markdown subset is rendered and
escaped."""
from __future__ import annotations

import re
import urllib.error

import pytest

from collector.runbooks import VIETNAMESE_HEADING, parse, to_html
from tests.support import http_get, start_prometheus, wait_until
from tests.test_collector_ingest import collector_metrics, metric_value, start_collector
from tests.test_rules import RUNBOOKS, alerts

VI_LETTERS = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]")


def test_every_section_has_an_english_and_a_vietnamese_part():
    _intro, sections = parse(RUNBOOKS.read_text(encoding="utf-8"))
    assert sorted(s.name for s in sections.values()) == sorted(a["alert"] for a in alerts())
    for section in sections.values():
        assert section.vietnamese, f"## {section.name} has no {VIETNAMESE_HEADING} part"
        assert VIETNAMESE_HEADING not in section.vietnamese, section.name  # one per section
        assert len(VI_LETTERS.findall(section.vietnamese)) > 15, section.name
        # a translation, paragraph for paragraph (meaning, causes, what to do, ...)
        assert len(section.vietnamese.split("\n\n")) == len(section.english.split("\n\n")), section.name
        assert section.english.startswith("*") and "What to do" in section.english, section.name
        # the translation keeps every command, metric and file name of the English part
        codes = set(re.findall(r"`([^`]+)`", section.english))
        assert codes <= set(re.findall(r"`([^`]+)`", section.vietnamese)), (section.name, codes)


def test_markdown_subset_is_rendered_and_escaped():
    html = to_html("*Ổ đĩa* has `<C:>` & **more**\nsecond line\n\n- one\n  continued\n- two\n\n### Tiếng Việt")
    assert html == ("<p><em>Ổ đĩa</em> has <code>&lt;C:&gt;</code> &amp; <strong>more</strong> second line</p>\n"
                    "<ul><li>one continued</li><li>two</li></ul>\n<h4>Tiếng Việt</h4>")


@pytest.fixture
def collector(tmp_path):
    proc, url, _ = start_collector(tmp_path, ["http://127.0.0.1:9/api/v1/write"],
                                   extra={"upstream_check_interval": "0s"})
    yield url
    proc.stop()


def test_each_alerts_link_opens_its_section_in_both_languages(tmp_path, collector):
    """Prometheus renders each annotation with runbook_base = the collector's /runbooks (promtool would
    too, but this is the real template engine with the real external label); every link resolves."""
    _intro, sections = parse(RUNBOOKS.read_text(encoding="utf-8"))
    # one rule per alert with the real runbook_url annotation and an expression that always fires
    import yaml

    rules = {"groups": [{"name": "links", "rules": [
        {"alert": a["alert"], "expr": "vector(1)", "annotations": {"runbook_url": a["annotations"]["runbook_url"]}}
        for a in alerts()]}]}
    path = tmp_path / "links.yml"
    path.write_text(yaml.safe_dump(rules))
    prom, prom_url = start_prometheus(tmp_path, rule_files=[path], extra={"global": {
        "scrape_interval": "1s", "evaluation_interval": "1s",
        "external_labels": {"runbook_base": collector + "/runbooks"}}})
    try:
        def rendered():
            import json

            data = json.loads(http_get(prom_url + "/api/v1/alerts"))["data"]["alerts"]
            return data if len(data) == len(alerts()) else None

        firing = wait_until(rendered, 30, what="every link rule evaluated")
    finally:
        prom.stop()
    assert len(firing) == len(sections) > 40
    for alert in firing:
        link = alert["annotations"]["runbook_url"]
        section = sections[alert["labels"]["alertname"].lower()]
        assert link == f"{collector}/runbooks/{section.anchor}"
        page = http_get(link).decode()
        assert page.startswith('<!doctype html><html lang="vi">') and 'name="viewport"' in page
        vi, en = page.index('<section id="vi" lang="vi">'), page.index('<section id="en" lang="en">')
        assert vi < en and f"<h1>{section.name}</h1>" in page
        # the first sentence of each part, as rendered
        first_vi = to_html(section.vietnamese.split("\n\n")[0])
        first_en = to_html(section.english.split("\n\n")[0])
        assert first_vi in page[vi:en] and first_en in page[en:], section.name
    index = http_get(collector + "/runbooks").decode()
    assert all(f'href="runbooks/{s.anchor}"' in index for s in sections.values())
    with pytest.raises(urllib.error.HTTPError) as missing:
        http_get(collector + "/runbooks/nosuchalert")
    assert missing.value.code == 404
    metrics = collector_metrics(collector)
    assert metric_value(metrics, "commune_collector_requests_total", handler="runbooks", code="200") == len(firing) + 1
