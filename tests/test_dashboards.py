"""Dashboards as code: drift of the committed JSON, the model's rules (units, thresholds,
descriptions, variables, both languages), metric names against the catalog and the recording
rules, PromQL accepted by a real Prometheus, provisioning files, and ``dashboards push``.

Grafana cannot be installed on these machines, so the upload is tested against a small HTTP
server on a loopback port that implements the parts of Grafana's documented HTTP API the
command uses (``GET /api/folders/:uid``, ``POST /api/folders``, ``POST /api/dashboards/db`` with
``overwrite`` and ``folderUid``, bearer-token and basic auth answered 401 when wrong) and records
every request; the test then checks the requests against that API.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
import yaml

from contract.catalog import catalog
from dashboards import push
from dashboards.generate import GENERATED, build_all, write_all
from dashboards.model import LANGS
from tests import support

REPO = support.REPO
RULES_DIR = REPO / "collector" / "rules"
# Series Prometheus itself writes, which no catalog lists.
BUILTIN_SERIES = {"ALERTS", "ALERTS_FOR_STATE"}

# ---------------------------------------------------------------- PromQL helpers (also used by the live test)

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}
_LABEL_LIST_BEFORE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TOKEN = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?|[a-zA-Z_:][a-zA-Z0-9_:]*|\S")


def metric_names(expr: str) -> Set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names in ``by (...)``/``on (...)`` lists, label matchers, strings, durations or variables."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)          # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)          # ranges and subqueries
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)   # dashboard variables
    text = re.sub(r"\boffset\s+-?\w+", " ", text)      # offset durations
    text = _LABEL_LIST_BEFORE.sub(" ", text)         # by (...), on (...), group_left (...)
    tokens = _TOKEN.findall(text)
    names = set()
    for i, tok in enumerate(tokens):
        if not re.match(r"[a-zA-Z_:]", tok) or tok in _KEYWORDS:
            continue
        if i + 1 < len(tokens) and tokens[i + 1] == "(":
            continue  # a function or aggregation
        names.add(tok)
    return names


def variable_query(var: dict) -> Tuple[str, str]:
    """``label_values(SELECTOR, label)`` of a query variable -> (selector, label)."""
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"].strip())
    assert m, f"variable {var['name']}: unsupported query {var['query']['query']!r}"
    return m.group(1), m.group(2)


def panels(board: dict) -> Iterator[dict]:
    for p in board["panels"]:
        if p["type"] != "row":
            yield p


def exprs(board: dict) -> Iterator[Tuple[dict, dict]]:
    for p in panels(board):
        for t in p["targets"]:
            yield p, t


def substitute(expr: str, values: Dict[str, str], range_s: int, rate_interval_s: int = 5) -> str:
    """What Grafana sends: variables replaced (multi-value as a regex), $__range and friends as durations."""
    out = expr.replace("$__rate_interval", f"{rate_interval_s}s").replace("$__interval", "1s")
    out = out.replace("$__range", f"{range_s}s")
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    assert "$" not in out, f"unsubstituted variable in {out}"
    return out


def recorded_names() -> Set[str]:
    names = set()
    for path in sorted(RULES_DIR.glob("*.yml")) if RULES_DIR.is_dir() else []:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in data.get("groups") or []:
            for rule in group.get("rules") or []:
                if "record" in rule:
                    names.add(rule["record"])
    return names


@pytest.fixture(scope="module")
def boards() -> Dict[str, Dict[str, dict]]:
    return build_all()


# ---------------------------------------------------------------- generated files

def test_committed_json_matches_the_code(tmp_path):
    """Drift check: regenerate into a temp dir and compare byte for byte with dashboards/generated."""
    write_all(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*.json"))}
    committed = {p.relative_to(GENERATED): p.read_bytes() for p in sorted(GENERATED.rglob("*.json"))}
    assert sorted(fresh) == sorted(committed), "run: python -m dashboards generate"
    stale = [str(k) for k in fresh if fresh[k] != committed[k]]
    assert not stale, f"generated JSON is stale for {stale}; run: python -m dashboards generate"


def test_generate_command_writes_every_language(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dashboards", "generate", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for lang in LANGS:
        files = sorted(p.name for p in (tmp_path / lang).glob("*.json"))
        assert files == sorted(f"{name}.json" for name in build_all()[lang])
        assert len(files) == 7


# ---------------------------------------------------------------- the model's rules

def test_uids_are_stable_unique_and_per_language(boards):
    seen = set()
    for lang, by_name in boards.items():
        for name, board in by_name.items():
            assert board["uid"] == f"cm-{name}-{lang}"
            assert len(board["uid"]) <= 40
            assert board["uid"] not in seen
            seen.add(board["uid"])


def test_every_panel_has_unit_thresholds_and_description(boards):
    for lang, by_name in boards.items():
        for name, board in by_name.items():
            assert board["description"].strip()
            for p in panels(board):
                where = f"{lang}/{name}: {p['title']!r}"
                defaults = p["fieldConfig"]["defaults"]
                assert defaults.get("unit"), where
                steps = defaults.get("thresholds", {}).get("steps")
                assert steps and steps[0]["value"] is None, where
                assert p["description"].strip() and p["title"].strip(), where
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
                assert p["targets"], where
                for t in p["targets"]:
                    assert t["datasource"] == p["datasource"] and t["expr"].strip(), where


def test_variables_datasource_commune_and_device(boards):
    device_vars = {"commune": set(), "host": {"agent"}, "printers": {"printer"}, "network": {"router", "hop"},
                   "software": {"service"}, "replacement": {"kind"}, "fleet": set()}
    for lang, by_name in boards.items():
        for name, board in by_name.items():
            variables = {v["name"]: v for v in board["templating"]["list"]}
            assert variables["datasource"]["type"] == "datasource"
            assert variables["datasource"]["query"] == "prometheus"
            assert variables["commune"]["type"] == "query"
            assert device_vars[name] <= set(variables), f"{name}: {sorted(variables)}"
            used = " ".join(t["expr"] for _, t in exprs(board))
            for var in variables.values():
                if var["type"] == "query":
                    variable_query(var)
                    assert var["datasource"]["uid"] == "${datasource}"
                    assert f"${var['name']}" in used or any(
                        f"${var['name']}" in variables[o]["query"]["query"]
                        for o in variables if variables[o]["type"] == "query"), f"{name}: ${var['name']} unused"


def test_languages_have_the_same_structure_and_real_translations(boards):
    diacritics = re.compile(r"[ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", re.I)
    for name in boards["en"]:
        en, vi = boards["en"][name], boards["vi"][name]
        assert [p["type"] for p in en["panels"]] == [p["type"] for p in vi["panels"]]
        assert [t["expr"] for _, t in exprs(en)] == [t["expr"] for _, t in exprs(vi)]
        assert [p["gridPos"] for p in en["panels"]] == [p["gridPos"] for p in vi["panels"]]
        assert en["title"] != vi["title"] and diacritics.search(vi["title"]), vi["title"]
        for pe, pv in zip(en["panels"], vi["panels"]):
            assert diacritics.search(pv["title"] + pv.get("description", "")), pv["title"]
            if pe["type"] != "row":
                assert pe["description"] != pv["description"]


def test_panel_titles_are_unique_in_each_dashboard(boards):
    for lang, by_name in boards.items():
        for name, board in by_name.items():
            titles = [p["title"] for p in panels(board)]
            assert len(titles) == len(set(titles)), f"{lang}/{name}: {sorted(titles)}"


def test_table_columns_have_unique_names(boards):
    for lang, by_name in boards.items():
        for board in by_name.values():
            for p in panels(board):
                for t in p.get("transformations", []):
                    if t["id"] == "organize":
                        names = list(t["options"]["renameByName"].values())
                        assert len(names) == len(set(names)), f"{lang} {p['title']}: {names}"


def test_panels_do_not_overlap(boards):
    for board in boards["en"].values():
        cells = set()
        for p in board["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, f"{board['uid']}: {p['title']} overlaps"
            cells |= area


def test_device_tables_link_to_the_device_dashboards(boards):
    """The replacement and commune device tables open the PC, printer or commune dashboard by kind."""
    for lang, by_name in boards.items():
        for name, title in (("replacement", 0), ("commune", 0)):
            table = [p for p in panels(by_name[name]) if p["type"] == "table"][title]
            links = [prop["value"] for o in table["fieldConfig"]["overrides"] for prop in o["properties"]
                     if prop["id"] == "links"]
            assert links and links[0][0]["url"].startswith("/d/cm-${__data.fields.dashboard}-" + lang + "?")
            hidden = [o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]
                      if {"id": "custom.hidden", "value": True} in o["properties"]]
            assert hidden == ["dashboard"]
            expr = table["targets"][0]["expr"]
            for stem in ("host", "printers", "commune"):
                assert f'"dashboard", "{stem}"' in expr and stem in by_name


# ---------------------------------------------------------------- metric names

def test_metric_name_tokenizer():
    expr = ('sum by (commune, service) (avg_over_time(probe_success{commune=~"$commune", module="icmp"}[$__range])'
            ' * on (commune, agent, target) group_left (service) commune_probe_target_info{service=~"a|b"})'
            ' / scalar(count(node_cpu_seconds_total)) > bool 0.5 or vector(0) unless rate(x_total[5m] offset 1h)'
            ' + label_replace(up, "dst", "$1", "src", "(.*)") - 1e3 + time()')
    assert metric_names(expr) == {"probe_success", "commune_probe_target_info", "node_cpu_seconds_total",
                                  "x_total", "up"}


def test_every_queried_metric_is_catalogued_or_recorded(boards):
    known = set(catalog()) | recorded_names() | BUILTIN_SERIES
    unknown = {}
    for lang, by_name in boards.items():
        for name, board in by_name.items():
            for p, t in exprs(board):
                for metric in metric_names(t["expr"]) - known:
                    unknown.setdefault(metric, f"{name}: {p['title']}")
            for var in board["templating"]["list"]:
                if var["type"] == "query":
                    for metric in metric_names(variable_query(var)[0]) - known:
                        unknown.setdefault(metric, f"{name}: variable {var['name']}")
    assert not unknown, f"not in contract/catalog.yaml nor collector/rules/*.yml: {unknown}"


@pytest.mark.slow
def test_every_query_is_valid_promql(boards, prometheus):
    """A real Prometheus parses every query (variables substituted as Grafana would)."""
    _, url = prometheus
    values = {"commune": "09667", "agent": "pc-01", "printer": "printer-01", "router": "router-01", "ups": "ups-01",
              "hop": "gateway|isp", "service": "dichvucong", "kind": "pc|printer"}
    for board in boards["en"].values():
        for p, t in exprs(board):
            support.prom_query(url, substitute(t["expr"], values, 3600))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                support.prom_query(url, substitute(variable_query(var)[0], values, 3600))


# ---------------------------------------------------------------- provisioning

def test_provisioning_files_point_at_the_generated_dashboards():
    root = REPO / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((root / "datasources" / "commune-monitor.yml").read_text(encoding="utf-8"))
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"]
    prov = yaml.safe_load((root / "dashboards" / "commune-monitor.yml").read_text(encoding="utf-8"))
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == push.DEFAULT_FOLDER_UID
    path = Path(provider["options"]["path"])
    assert path.name in LANGS and (GENERATED / path.name).is_dir()
    for board in (GENERATED / path.name).glob("*.json"):
        assert json.loads(board.read_text(encoding="utf-8"))["uid"].endswith("-" + path.name)


# ---------------------------------------------------------------- push, against a recording HTTP server

class FakeGrafana:
    """Grafana's folder and dashboard HTTP API, enough for ``dashboards push``; records requests."""

    def __init__(self, token="glsa_good", user="admin", password="s3cret", viewer_token="glsa_viewer"):
        self.token, self.user, self.password, self.viewer_token = token, user, password, viewer_token
        self.requests: List[dict] = []
        self.folders: Dict[str, dict] = {}
        self.dashboards: Dict[str, dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append({"method": method, "path": self.path, "body": body,
                                      "auth": self.headers.get("Authorization", ""),
                                      "content_type": self.headers.get("Content-Type", "")})
                code, reply = fake.route(method, self.path, body, self.headers.get("Authorization", ""))
                self._reply(code, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def authorized(self, auth: str) -> bool:
        if auth == f"Bearer {self.token}":
            return True
        if auth.startswith("Basic "):
            return base64.b64decode(auth[6:]).decode() == f"{self.user}:{self.password}"
        return False

    def route(self, method, path, body, auth):
        prefix = "/grafana" if path.startswith("/grafana/") else ""
        path = path[len(prefix):]
        if auth == f"Bearer {self.viewer_token}":  # a Viewer may read, not write
            if method == "GET":
                return 404, {"message": "folder not found"}
            return 403, {"message": "You'll need additional permissions to perform this action."}
        if not self.authorized(auth):
            return 401, {"message": "invalid API key" if auth.startswith("Bearer") else "invalid username or password"}
        m = re.fullmatch(r"/api/folders/([\w-]+)", path)
        if method == "GET" and m:
            folder = self.folders.get(m.group(1))
            return (200, folder) if folder else (404, {"message": "folder not found", "status": "not-found"})
        if method == "POST" and path == "/api/folders":
            if not body.get("title"):
                return 400, {"message": "folder title cannot be empty"}
            if body.get("uid") in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            folder = {"id": len(self.folders) + 1, "uid": body.get("uid") or "generated", "title": body["title"],
                      "url": f"/dashboards/f/{body.get('uid')}/", "version": 1}
            self.folders[folder["uid"]] = folder
            return 200, folder
        if method == "POST" and path == "/api/dashboards/db":
            board = body.get("dashboard") or {}
            if not board.get("title") or not board.get("uid"):
                return 400, {"message": "dashboard title and uid required"}
            if body.get("folderUid") not in self.folders:
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(board["uid"])
            if old and not body.get("overwrite"):
                return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            version = (old["version"] + 1) if old else 1
            self.dashboards[board["uid"]] = {"version": version, "folderUid": body["folderUid"], "dashboard": board}
            return 200, {"id": len(self.dashboards), "uid": board["uid"], "url": f"/d/{board['uid']}/x",
                         "status": "success", "version": version, "slug": "x"}
        return 404, {"message": "Not found"}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_push_creates_the_folder_and_overwrites_dashboards(capsys):
    with FakeGrafana() as grafana:
        assert push.main(["--grafana-url", grafana.url, "--token", "glsa_good", "--lang", "vi"]) == 0
        first = list(grafana.requests)
        assert [(r["method"], r["path"]) for r in first[:2]] == [
            ("GET", "/api/folders/commune-monitor"), ("POST", "/api/folders")]
        assert first[1]["body"] == {"title": "commune-monitor", "uid": "commune-monitor"}
        uploads = [r for r in first if r["path"] == "/api/dashboards/db"]
        assert len(uploads) == 7
        for r in uploads:
            assert r["method"] == "POST" and r["auth"] == "Bearer glsa_good"
            assert r["content_type"].startswith("application/json")
            assert r["body"]["overwrite"] is True and r["body"]["folderUid"] == "commune-monitor"
            assert r["body"]["dashboard"]["id"] is None and r["body"]["dashboard"]["uid"].endswith("-vi")
        assert {u["body"]["dashboard"]["uid"] for u in uploads} == {b["uid"] for b in build_all()["vi"].values()}
        # Pushing again finds the folder and replaces every dashboard with a new version.
        grafana.requests.clear()
        assert push.main(["--grafana-url", grafana.url, "--token", "glsa_good"]) == 0
        assert [r["method"] for r in grafana.requests if r["path"].startswith("/api/folders")] == ["GET"]
        assert {d["version"] for d in grafana.dashboards.values()} == {2}
    out = capsys.readouterr().out
    assert "pushed 7 dashboards" in out and "cm-fleet-vi" in out


def test_push_with_basic_auth_all_languages_and_a_path_prefix(capsys):
    with FakeGrafana() as grafana:
        rc = push.main(["--grafana-url", grafana.url + "/grafana", "--user", "admin", "--password", "s3cret",
                        "--lang", "all", "--folder", "Giám sát xã", "--folder-uid", "cm-province"])
        assert rc == 0, capsys.readouterr().err
        assert all(r["path"].startswith("/grafana/api/") for r in grafana.requests)
        assert all(r["auth"] == "Basic " + base64.b64encode(b"admin:s3cret").decode() for r in grafana.requests)
        assert grafana.folders["cm-province"]["title"] == "Giám sát xã"
        assert len(grafana.dashboards) == 14
        assert {d["folderUid"] for d in grafana.dashboards.values()} == {"cm-province"}


@pytest.mark.parametrize("creds", [["--token", "glsa_wrong"], ["--user", "admin", "--password", "wrong"]])
def test_push_bad_credentials_is_a_clear_error(capsys, creds):
    with FakeGrafana() as grafana:
        assert push.main(["--grafana-url", grafana.url, *creds]) == 1
        assert not grafana.dashboards and not grafana.folders
    err = capsys.readouterr().err
    assert "rejected the credentials (401 Unauthorized)" in err and grafana.url in err
    assert "Traceback" not in err and "wrong" not in err  # the secret is never echoed


def test_push_without_write_permission_is_a_clear_error(capsys):
    with FakeGrafana() as grafana:
        assert push.main(["--grafana-url", grafana.url, "--token", "glsa_viewer"]) == 1
        assert not grafana.folders
    err = capsys.readouterr().err
    assert "refused the request (403 Forbidden)" in err and "Editor" in err and "Traceback" not in err


def test_push_errors_without_credentials_or_grafana(capsys, tmp_path):
    assert push.main(["--grafana-url", "http://127.0.0.1:1"]) == 1
    assert "no credentials" in capsys.readouterr().err
    port = support.free_port()
    assert push.main(["--grafana-url", f"http://127.0.0.1:{port}", "--token", "t"]) == 1
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in capsys.readouterr().err
    assert push.main(["--grafana-url", "http://127.0.0.1:1", "--token", "t", "--dir", str(tmp_path)]) == 1
    assert "python -m dashboards generate" in capsys.readouterr().err


def test_commune_collector_dashboards_push_subcommand():
    """The collector CLI routes ``dashboards push`` (and ``generate``) to dashboards.__main__.main."""
    from collector.cli import SUBCOMMANDS

    assert SUBCOMMANDS.get("dashboards") == "dashboards.__main__:main"
    with FakeGrafana() as grafana:
        script = support.VENV_BIN / "commune-collector"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "collector"]
        out = subprocess.run([*cmd, "dashboards", "push", "--grafana-url", grafana.url, "--token", "glsa_good",
                              "--lang", "en"], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert out.returncode == 0, out.stderr
        assert len(grafana.dashboards) == 7 and all(u.endswith("-en") for u in grafana.dashboards)
