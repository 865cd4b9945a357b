"""``commune-collector dashboards push``: upload the generated dashboards to Grafana.

    commune-collector dashboards push --grafana-url URL [--token TOKEN | --user U --password P]
                                      [--folder TITLE] [--folder-uid UID] [--lang vi|en|all] [--dir DIR]

Uses Grafana's HTTP API through grafana-client: the folder is looked up by its UID
(``GET /api/folders/:uid``) and created when missing (``POST /api/folders``); each dashboard is
saved with ``POST /api/dashboards/db`` and ``overwrite: true`` into that folder, so an older
version with the same UID is replaced. The token (a service-account token) may also come from
``GRAFANA_TOKEN``, the password from ``GRAFANA_PASSWORD``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

from dashboards.model import LANGS

DEFAULT_FOLDER = "commune-monitor"
DEFAULT_FOLDER_UID = "commune-monitor"


class PushError(Exception):
    """A problem to report in one line, with exit code 1."""


def parser() -> argparse.ArgumentParser:
    from dashboards.generate import GENERATED

    p = argparse.ArgumentParser(
        prog="commune-collector dashboards push",
        description="Upload the generated Grafana dashboards into a folder, overwriting older versions.")
    p.add_argument("--grafana-url", required=True, metavar="URL",
                   help="Grafana base URL, e.g. https://grafana.example.gov.vn or http://127.0.0.1:3000/grafana")
    p.add_argument("--token", default=os.environ.get("GRAFANA_TOKEN"),
                   help="service-account token (default: $GRAFANA_TOKEN)")
    p.add_argument("--user", help="user for basic auth (instead of a token)")
    p.add_argument("--password", default=os.environ.get("GRAFANA_PASSWORD"),
                   help="password for --user (default: $GRAFANA_PASSWORD)")
    p.add_argument("--folder", default=DEFAULT_FOLDER, help=f"folder title (default: {DEFAULT_FOLDER})")
    p.add_argument("--folder-uid", default=DEFAULT_FOLDER_UID,
                   help=f"folder UID, stable across pushes (default: {DEFAULT_FOLDER_UID})")
    p.add_argument("--lang", choices=[*LANGS, "all"], default="vi",
                   help="which generated set to upload (default: vi)")
    p.add_argument("--dir", type=Path, default=GENERATED,
                   help=f"folder with <lang>/*.json (default: {GENERATED})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default: 30)")
    return p


def load_dashboards(root: Path, lang: str) -> List[dict]:
    langs = LANGS if lang == "all" else (lang,)
    boards = []
    for code in langs:
        files = sorted((Path(root) / code).glob("*.json"))
        if not files:
            raise PushError(f"no dashboards in {Path(root) / code} (run: python -m dashboards generate)")
        for path in files:
            try:
                boards.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise PushError(f"cannot read {path}: {exc}") from None
    return boards


def connect(url: str, token: Optional[str], user: Optional[str], password: Optional[str], timeout: float):
    from grafana_client import GrafanaApi

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise PushError(f"--grafana-url: expected http(s)://host[:port][/path], got {url!r}")
    if token and user:
        raise PushError("give either --token or --user/--password, not both")
    if user and password is None:
        raise PushError("--user needs --password (or GRAFANA_PASSWORD)")
    if not token and not user:
        raise PushError("no credentials: give --token (or GRAFANA_TOKEN) or --user and --password")
    prefix = parsed.path.strip("/")
    return GrafanaApi(auth=token if token else (user, password), host=parsed.hostname, port=parsed.port,
                      url_path_prefix=f"{prefix}/" if prefix else "", protocol=parsed.scheme,
                      timeout=timeout)


def ensure_folder(api, uid: str, title: str) -> dict:
    from grafana_client.client import GrafanaClientError

    try:
        return api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    return api.folder.create_folder(title, uid=uid)


def push(api, boards: List[dict], folder_uid: str, folder_title: str, out=None) -> int:
    out = out or sys.stdout
    folder = ensure_folder(api, folder_uid, folder_title)
    print(f"folder {folder.get('title', folder_title)!r} (uid {folder.get('uid', folder_uid)})", file=out)
    for board in boards:
        payload = {"dashboard": {**board, "id": None}, "folderUid": folder.get("uid", folder_uid),
                   "overwrite": True, "message": "commune-monitor dashboards push"}
        result = api.dashboard.update_dashboard(payload)
        print(f"uploaded {board['uid']} {board['title']!r}: version {result.get('version')} "
              f"{result.get('url', '')}", file=out)
    return len(boards)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaServerError
    from niquests.exceptions import RequestException  # grafana-client's HTTP library

    try:
        boards = load_dashboards(args.dir, args.lang)
        api = connect(args.grafana_url, args.token, args.user, args.password, args.timeout)
        count = push(api, boards, args.folder_uid, args.folder)
    except PushError as exc:
        print(f"dashboards push: {exc}", file=sys.stderr)
        return 1
    except GrafanaClientError as exc:
        if exc.status_code == 401:
            how = "token" if args.token else f"user {args.user!r} and password"
            msg = (f"Grafana at {args.grafana_url} rejected the credentials (401 Unauthorized): "
                   f"check the {how}")
        elif exc.status_code == 403:
            msg = (f"Grafana at {args.grafana_url} refused the request (403 Forbidden): the account needs "
                   "the Editor role on the folder (or Admin to create it)")
        else:
            msg = f"Grafana at {args.grafana_url} answered {exc.status_code}: {exc.message}"
        print(f"dashboards push: {msg}", file=sys.stderr)
        return 1
    except GrafanaServerError as exc:
        print(f"dashboards push: Grafana at {args.grafana_url} failed: {exc.message}", file=sys.stderr)
        return 1
    except GrafanaException as exc:  # timeout and other transport errors grafana-client wraps
        print(f"dashboards push: cannot reach Grafana at {args.grafana_url}: {exc.message}", file=sys.stderr)
        return 1
    except RequestException as exc:  # connection refused, DNS, TLS
        print(f"dashboards push: cannot reach Grafana at {args.grafana_url}: {exc}", file=sys.stderr)
        return 1
    print(f"pushed {count} dashboards to {args.grafana_url}")
    return 0
