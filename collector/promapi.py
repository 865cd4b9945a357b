"""A small client for Prometheus's HTTP query API (stdlib only), with errors that say what failed.

Used by ``commune-collector status`` and ``commune-collector report``.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import List, Optional


class PrometheusError(Exception):
    """Prometheus could not be asked or refused the query: the message is the one line the operator sees."""


class Prometheus:
    def __init__(self, url: str, timeout: float = 60.0, headers: Optional[dict] = None):
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(f"--prometheus must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = headers or {}

    def _get(self, path: str, params: dict) -> dict:
        body = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except ValueError:
                detail = ""
            raise PrometheusError(f"Prometheus at {self.url} answered {exc.code} to {params.get('query', path)!r}"
                              + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {reason}") from None
        except ValueError:
            raise PrometheusError(f"{self.url} did not answer with Prometheus JSON: is it a Prometheus URL?") from None
        if data.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {data.get('error', data)}")
        return data["data"]

    def query(self, expr: str, at: float) -> List[dict]:
        return self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> List[dict]:
        return self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{step:g}"})["result"]
