#!/usr/bin/env bash
# Sets up a venv with the agent and runs it on its defaults (this host, gateway ping, /metrics
# on 127.0.0.1:9721). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  command -v python3 >/dev/null && python3 -m venv --help >/dev/null 2>&1 || {
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv; }
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all]'
exec .venv/bin/commune-agent "$@"
