"""A stand-in for the Zalo Official Account API on loopback, checking what it receives as the real
API would (documented request shapes; the real API was not reachable from here):

    POST /v3.0/oa/message/cs      header access_token; JSON {"recipient": {"user_id"}, "message": {"text"}}
        -> {"error": 0, "message": "Success", "data": {"message_id", "user_id"}}
        -> {"error": -216, "message": "Access token is invalid"} for a wrong or expired token
        -> {"error": -213, ...} for a user who does not follow the OA; -201 for a bad body
    POST /v4/oa/access_token      header secret_key; form app_id, grant_type=refresh_token, refresh_token
        -> {"access_token", "refresh_token", "expires_in": "90000"}; the refresh token is single-use
        -> {"error": -14014, "error_name": "Invalid refresh_token", ...}

``outages`` makes the next N message calls answer 503 (a Zalo outage) before any check.
"""
from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ZaloStandIn:
    APP_ID = "1234567890123456789"

    def __init__(self, followers):
        self.followers = set(followers)
        self.access_token = "zat_" + secrets.token_urlsafe(24)
        self.refresh_token = "zrt_" + secrets.token_urlsafe(24)
        self.secret_key = "zsk_" + secrets.token_urlsafe(16)
        self.messages = []  # (user_id, text) accepted
        self.calls = []  # (path, answer error code or HTTP status) of every call
        self.outages = 0
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stand_in.lock:
                    status, answer = stand_in.answer(self.path, self.headers, raw)
                    stand_in.calls.append((self.path, answer.get("error", status)))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def expire_token(self) -> None:
        """The access token expires (as it does after about 25 hours)."""
        with self.lock:
            self.access_token = "zat_" + secrets.token_urlsafe(24)

    def answer(self, path, headers, raw):
        if path == "/v3.0/oa/message/cs":
            if self.outages:
                self.outages -= 1
                return 503, {"error": 503}
            if headers.get("access_token") != self.access_token:
                return 200, {"error": -216, "message": "Access token is invalid"}
            if not headers.get("Content-Type", "").startswith("application/json"):
                return 200, {"error": -201, "message": "Parameter is invalid: body must be JSON"}
            try:
                body = json.loads(raw)
                user_id, text = body["recipient"]["user_id"], body["message"]["text"]
            except (ValueError, KeyError, TypeError):
                return 200, {"error": -201, "message": "Parameter is invalid"}
            if not isinstance(text, str) or not text or len(text) > 2000:
                return 200, {"error": -201, "message": "Text length must be between 1 and 2000"}
            if user_id not in self.followers:
                return 200, {"error": -213, "message": "User has not followed the OA"}
            self.messages.append((user_id, text))
            return 200, {"error": 0, "message": "Success",
                         "data": {"message_id": secrets.token_hex(16), "user_id": user_id}}
        if path == "/v4/oa/access_token":
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            if headers.get("secret_key") != self.secret_key or form.get("app_id") != self.APP_ID:
                return 200, {"error": -14002, "error_name": "Invalid app", "error_description": "app or secret"}
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.refresh_token:
                return 200, {"error": -14014, "error_name": "Invalid refresh_token",
                             "error_description": "refresh token invalid or used"}
            self.access_token = "zat_" + secrets.token_urlsafe(24)
            self.refresh_token = "zrt_" + secrets.token_urlsafe(24)
            return 200, {"access_token": self.access_token, "refresh_token": self.refresh_token,
                         "expires_in": "90000"}
        return 404, {"error": 404}

    def texts(self, user_id):
        with self.lock:
            return [t for u, t in self.messages if u == user_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
