#!/usr/bin/env bash
# Installs everything the test suite needs on Debian (apt packages, a venv with the project and
# its test extras) and runs the whole suite. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(prometheus prometheus-alertmanager snmpd snmp victoria-metrics haproxy
  prometheus-node-exporter prometheus-snmp-exporter prometheus-blackbox-exporter
  fping smartmontools nftables iproute2 chromium poppler-utils python3-venv
  libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,test]'

# The Windows bundle tests build real Windows wheelhouses; the suite has no network below, so the
# wheels are fetched now (again only what is missing) and read offline there.
export COMMUNE_WINDOWS_WHEELS="$PWD/.cache/windows-wheels"
.venv/bin/python -m tests.prefetch_windows_wheels "$COMMUNE_WINDOWS_WHEELS" >/dev/null 2>&1 ||
  echo "tests/run.sh: no package index reachable: the Windows bundle tests will skip" >&2
# likewise the Linux bundle's (manylinux x86_64 wheels for CPython 3.9 to 3.12)
export COMMUNE_LINUX_WHEELS="$PWD/.cache/linux-wheels"
.venv/bin/python -m tests.prefetch_linux_wheels "$COMMUNE_LINUX_WHEELS" >/dev/null 2>&1 ||
  echo "tests/run.sh: no package index reachable: the Linux bundle tests will skip" >&2

# The suite runs in a network namespace of its own holding only loopback: no test can reach the
# machine's real gateway or any address beyond 127.0.0.0/8, ::1 and the namespaces tests create
# (the agent's default gateway probe then finds no gateway). Needs root; otherwise run as is.
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
  # a veth pair inside (no route out) gives host-input tests a non-loopback interface to count
  exec unshare --net -- sh -c 'ip link set lo up && { ip link add cm-veth0 type veth peer name cm-veth1 &&
    ip link set cm-veth0 up && ip link set cm-veth1 up || true; } && exec "$0" "$@"' \
    .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
fi
echo "tests/run.sh: not root: running without an isolated network namespace" >&2
exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
