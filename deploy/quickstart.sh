#!/usr/bin/env bash
# commune-monitor quickstart: the whole stack on this machine, on loopback only.
#
#   bash deploy/quickstart.sh [start] [options]   install what is missing, write configs, start
#   bash deploy/quickstart.sh stop [--prefix DIR] stop exactly what start started (by pid files)
#   bash deploy/quickstart.sh status [--prefix DIR]  the processes, then `commune-collector status`
#   bash deploy/quickstart.sh restart [options]   stop, then start
#
# Start installs Debian's prometheus and prometheus-alertmanager (apt) and the project with its
# extras in .venv when they are missing, writes the configs into the prefix (fresh secrets on the
# first run), and starts in the background, each with a pid file and a log in the prefix:
#   Prometheus    with collector/rules, the remote-write receiver and a 7-day out-of-order window
#   Alertmanager  with a receiver that sends nothing anywhere (alerts show on its web page)
#   collector     ingest gateway, with a demo commune in its fleet inventory
#   agent         monitoring this machine (gateway ping included), enrolled with a one-time key
#                 of the demo commune, pushing to the collector
#   Grafana       only when grafana-server is installed: data source and dashboards provisioned
# Running start again keeps what runs, restarts a process whose config changed and starts what is
# missing: never a second copy.
#
# Options (or environment variables):
#   --prefix DIR              QUICKSTART_PREFIX            default ./var/quickstart in the repository
#   --collector-port N        QUICKSTART_COLLECTOR_PORT    default 9722
#   --prometheus-port N       QUICKSTART_PROMETHEUS_PORT   default 9090
#   --alertmanager-port N     QUICKSTART_ALERTMANAGER_PORT default 9093
#   --agent-port N            QUICKSTART_AGENT_PORT        default 9721
#   --grafana-port N          QUICKSTART_GRAFANA_PORT      default 3000
#   --commune CODE            QUICKSTART_COMMUNE           default demo
#   --agent-config FILE       QUICKSTART_AGENT_CONFIG      agent config sections merged over the
#                             generated ones, e.g. "icmp: {gateway: false}" or SNMP targets
#   --lang vi|en              QUICKSTART_LANG              dashboards' language, default vi
# A default port that is taken is replaced by the next free one (and said so); a port given as an
# option that is taken is an error. Ports chosen once are kept in PREFIX/quickstart.env.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_PY="$REPO/deploy/quickstart/stack.py"
VENV=$REPO/.venv
COMPONENTS=(prometheus alertmanager collector agent grafana)   # start order; stop is the reverse

die() { echo "quickstart: $*" >&2; exit 1; }
say() { echo "quickstart: $*"; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

ACTION=start
case "${1:-}" in
  start|stop|status|restart) ACTION=$1; shift ;;
  -h|--help) usage; exit 0 ;;
esac

PREFIX=${QUICKSTART_PREFIX:-$REPO/var/quickstart}
declare -A WANT_PORT=(
  [collector]=${QUICKSTART_COLLECTOR_PORT:-} [prometheus]=${QUICKSTART_PROMETHEUS_PORT:-}
  [alertmanager]=${QUICKSTART_ALERTMANAGER_PORT:-} [agent]=${QUICKSTART_AGENT_PORT:-}
  [grafana]=${QUICKSTART_GRAFANA_PORT:-})
declare -A DEFAULT_PORT=([collector]=9722 [prometheus]=9090 [alertmanager]=9093 [agent]=9721 [grafana]=3000)
COMMUNE=${QUICKSTART_COMMUNE:-}
AGENT_CONFIG=${QUICKSTART_AGENT_CONFIG:-}
LANG_BOARDS=${QUICKSTART_LANG:-}

while [ $# -gt 0 ]; do
  opt=$1
  case "$opt" in
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
  esac
  [ $# -ge 2 ] || { [ "$opt" = -h ] || [ "$opt" = --help ]; } || die "$opt needs a value (see --help)"
  case "$opt" in
    --prefix) PREFIX=$2 ;;
    --collector-port|--prometheus-port|--alertmanager-port|--agent-port|--grafana-port)
      name=${opt#--}; name=${name%-port}
      [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] && [ "$2" -lt 65536 ] || die "$opt: expected a port number, got '$2'"
      WANT_PORT[$name]=$2 ;;
    --commune) COMMUNE=$2 ;;
    --agent-config) AGENT_CONFIG=$2 ;;
    --lang) LANG_BOARDS=$2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
  shift 2
done

if [ "$ACTION" = stop ] || [ "$ACTION" = status ]; then
  [ -d "$PREFIX/run" ] || { say "nothing was started from $PREFIX"; exit 0; }
fi
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
ETC=$PREFIX/etc; DATA=$PREFIX/data; LOG=$PREFIX/log; RUN=$PREFIX/run
STATE_FILE=$PREFIX/quickstart.env
mkdir -p "$ETC" "$DATA" "$LOG" "$RUN"

# One quickstart at a time per prefix.
exec 9>"$PREFIX/.lock"
flock -w 120 9 || die "another quickstart holds $PREFIX/.lock"

# ---------------------------------------------------------------- processes by pid file

# What a component's command line must contain: its own config file in this prefix.
needle() {
  case "$1" in
    prometheus) echo "--config.file=$ETC/prometheus.yml" ;;
    alertmanager) echo "--config.file=$ETC/alertmanager.yml" ;;
    collector) echo "$ETC/collector.yaml" ;;
    agent) echo "$ETC/agent.yaml" ;;
    grafana) echo "--config=$ETC/grafana/grafana.ini" ;;
  esac
}

# The pid of a component started from this prefix and still running, or nothing.
running_pid() {
  local pidfile=$RUN/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(needle "$1")" || return 0
  echo "$pid"
}

stop_one() {
  local name=$1 pidfile=$RUN/$1.pid pid i
  [ -f "$pidfile" ] || return 0
  pid=$(running_pid "$name")
  if [ -z "$pid" ]; then
    say "$name: not running (stale pid file removed, nothing killed)"
    rm -f "$pidfile" "$RUN/$name.sum"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    [ -n "$(running_pid "$name")" ] || break
    sleep 0.1
  done
  if [ -n "$(running_pid "$name")" ]; then
    say "$name (pid $pid) did not stop within 15s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do [ -n "$(running_pid "$name")" ] || break; sleep 0.1; done
    [ -z "$(running_pid "$name")" ] || die "$name (pid $pid) is still running: cannot stop it as $(id -un)"
  fi
  rm -f "$pidfile" "$RUN/$name.sum"
  say "$name stopped (pid $pid)"
}

stop_all() {
  local i
  for ((i=${#COMPONENTS[@]}-1; i>=0; i--)); do stop_one "${COMPONENTS[$i]}"; done
}

# ---------------------------------------------------------------- stop / status

if [ "$ACTION" = stop ]; then
  stop_all
  say "stopped everything started from $PREFIX (data kept; delete the directory to start afresh)"
  exit 0
fi

load_state() { [ -f "$STATE_FILE" ] && . "$STATE_FILE" || true; }

if [ "$ACTION" = status ]; then
  load_state
  for c in "${COMPONENTS[@]}"; do
    [ "$c" != grafana ] || [ -f "$RUN/grafana.pid" ] || command -v grafana-server >/dev/null || continue
    pid=$(running_pid "$c")
    if [ -n "$pid" ]; then state="running, pid $pid"; else state="not running"; fi
    printf '%-13s %s\n' "$c" "$state"
  done
  [ -x "$VENV/bin/commune-collector" ] && [ -n "${PORT_prometheus:-}" ] || exit 0
  echo
  exec "$VENV/bin/commune-collector" status --prometheus "http://127.0.0.1:$PORT_prometheus"
fi

if [ "$ACTION" = restart ]; then
  stop_all
fi

# ---------------------------------------------------------------- install what is missing

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_missing=()
for pkg in prometheus prometheus-alertmanager; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || apt_missing+=("$pkg")
done
command -v python3 >/dev/null || apt_missing+=(python3)
if [ ! -x "$VENV/bin/python" ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt_missing+=(python3-venv)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${apt_missing[*]} and no apt-get: install them by hand"
  [ -z "$SUDO" ] || command -v sudo >/dev/null || die "missing ${apt_missing[*]}: run as root or install sudo"
  say "installing ${apt_missing[*]} (apt)"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" "$STACK_PY" venv-ok "$REPO" 2>/dev/null; then
  say "installing commune-monitor with its extras into $VENV (pip)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO[all]"
fi
PY=$VENV/bin/python

# ---------------------------------------------------------------- settings and ports

load_state
COMMUNE=${COMMUNE:-${SAVED_COMMUNE:-demo}}
LANG_BOARDS=${LANG_BOARDS:-${SAVED_LANG:-vi}}
case "$LANG_BOARDS" in vi|en) ;; *) die "--lang: expected vi or en, got '$LANG_BOARDS'" ;; esac
[[ "$COMMUNE" =~ ^[a-z0-9][a-z0-9._-]{0,62}$ ]] || \
  die "--commune: expected 1-63 lowercase letters, digits, '.', '_' or '-', got '$COMMUNE'"
if [ -n "$AGENT_CONFIG" ]; then
  [ -f "$AGENT_CONFIG" ] || die "--agent-config: no file $AGENT_CONFIG"
  AGENT_CONFIG=$(cd "$(dirname "$AGENT_CONFIG")" && pwd)/$(basename "$AGENT_CONFIG")
else
  AGENT_CONFIG=${SAVED_AGENT_CONFIG:-}
  [ -z "$AGENT_CONFIG" ] || [ -f "$AGENT_CONFIG" ] || die "the agent config fragment $AGENT_CONFIG (from $STATE_FILE) is gone: pass --agent-config"
fi
if [ -z "${SAVED_AGENT_ID:-}" ]; then
  AGENT_ID=$(hostname 2>/dev/null | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/^[^A-Za-z0-9]*//' | cut -c1-63)
  AGENT_ID=${AGENT_ID:-quickstart-pc}
else
  AGENT_ID=$SAVED_AGENT_ID
fi

GRAFANA_BIN=$(command -v grafana-server || true)
GRAFANA_HOME=""
if [ -n "$GRAFANA_BIN" ]; then
  for d in /usr/share/grafana "$(dirname "$(readlink -f "$GRAFANA_BIN")")/.."; do
    [ -d "$d/conf" ] && { GRAFANA_HOME=$(cd "$d" && pwd); break; }
  done
  [ -n "$GRAFANA_HOME" ] || { say "grafana-server found but not its home (conf/ directory): Grafana skipped"; GRAFANA_BIN=""; }
fi

port_owner() {  # who listens on 127.0.0.1:PORT, when ss can tell
  command -v ss >/dev/null || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*' | head -1 | sed 's/users:((/ by /'
}

declare -A PORT=([grafana]=${PORT_grafana:-${DEFAULT_PORT[grafana]}})
taken=()
for c in "${COMPONENTS[@]}"; do
  [ "$c" != grafana ] || [ -n "$GRAFANA_BIN" ] || continue
  saved_var=PORT_$c
  saved=${!saved_var:-}
  mine=$(running_pid "$c")
  if [ -n "${WANT_PORT[$c]}" ]; then
    p=${WANT_PORT[$c]}
    if [ -z "$mine" ] || [ "$p" != "$saved" ]; then
      "$PY" "$STACK_PY" port-free "$p" || die "$c port $p is taken$(port_owner "$p"): choose another with --$c-port"
    fi
  elif [ -n "$saved" ] && { [ -n "$mine" ] || "$PY" "$STACK_PY" port-free "$saved"; }; then
    p=$saved
  else
    p=$("$PY" "$STACK_PY" pick-port "${DEFAULT_PORT[$c]}" "${taken[@]}")
    [ "$p" = "${DEFAULT_PORT[$c]}" ] || say "$c: port ${saved:-${DEFAULT_PORT[$c]}} is taken$(port_owner "${saved:-${DEFAULT_PORT[$c]}}"), using $p"
  fi
  for t in "${taken[@]}"; do [ "$t" != "$p" ] || die "$c port $p is already used by another component of the stack"; done
  PORT[$c]=$p
  taken+=("$p")
done

{
  echo "# deploy/quickstart.sh settings for this prefix (kept across runs)"
  for c in "${COMPONENTS[@]}"; do printf 'PORT_%s=%q\n' "$c" "${PORT[$c]}"; done
  printf 'SAVED_COMMUNE=%q\nSAVED_LANG=%q\nSAVED_AGENT_ID=%q\nSAVED_AGENT_CONFIG=%q\n' \
    "$COMMUNE" "$LANG_BOARDS" "$AGENT_ID" "$AGENT_CONFIG"
} >"$STATE_FILE.tmp"
mv "$STATE_FILE.tmp" "$STATE_FILE"

# ---------------------------------------------------------------- configs

if [ ! -s "$ETC/grafana-admin-password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$ETC/grafana-admin-password")
fi
QS_REPO=$REPO QS_PREFIX=$PREFIX QS_COMMUNE=$COMMUNE QS_AGENT_ID=$AGENT_ID QS_AGENT_CONFIG=$AGENT_CONFIG \
QS_LANG=$LANG_BOARDS QS_MODEL=$(cat /sys/class/dmi/id/product_name 2>/dev/null || true) \
QS_PORT_COLLECTOR=${PORT[collector]} QS_PORT_PROMETHEUS=${PORT[prometheus]} \
QS_PORT_ALERTMANAGER=${PORT[alertmanager]} QS_PORT_AGENT=${PORT[agent]} QS_PORT_GRAFANA=${PORT[grafana]} \
  "$PY" "$STACK_PY" configs

promtool check config "$ETC/prometheus.yml" >"$LOG/check.log" 2>&1 \
  || { cat "$LOG/check.log" >&2; die "promtool rejects $ETC/prometheus.yml"; }
amtool check-config "$ETC/alertmanager.yml" >"$LOG/check.log" 2>&1 \
  || { cat "$LOG/check.log" >&2; die "amtool rejects $ETC/alertmanager.yml"; }
"$VENV/bin/commune-collector" --config.check -c "$ETC/collector.yaml" >/dev/null || die "collector config rejected"
"$VENV/bin/commune-agent" --config.check -c "$ETC/agent.yaml" >/dev/null || die "agent config rejected"
rm -f "$LOG/check.log"

# ---------------------------------------------------------------- start

# CMD=(the command line of a component)
set_cmd() {
  case "$1" in
    prometheus) CMD=(prometheus "--config.file=$ETC/prometheus.yml" "--storage.tsdb.path=$DATA/prometheus"
      "--web.listen-address=127.0.0.1:${PORT[prometheus]}" --web.enable-remote-write-receiver
      --web.enable-lifecycle --storage.tsdb.retention.time=30d
      "--web.external-url=http://127.0.0.1:${PORT[prometheus]}") ;;
    alertmanager) CMD=(prometheus-alertmanager "--config.file=$ETC/alertmanager.yml"
      "--storage.path=$DATA/alertmanager" "--web.listen-address=127.0.0.1:${PORT[alertmanager]}"
      "--cluster.listen-address=") ;;
    collector) CMD=("$VENV/bin/commune-collector" serve -c "$ETC/collector.yaml") ;;
    agent) CMD=("$VENV/bin/commune-agent" -c "$ETC/agent.yaml") ;;
    grafana) CMD=("$GRAFANA_BIN" "--homepath=$GRAFANA_HOME" "--config=$ETC/grafana/grafana.ini") ;;
  esac
}

ready_url() {
  case "$1" in
    prometheus) echo "http://127.0.0.1:${PORT[prometheus]}/-/ready" ;;
    alertmanager) echo "http://127.0.0.1:${PORT[alertmanager]}/-/ready" ;;
    collector) echo "http://127.0.0.1:${PORT[collector]}/-/ready" ;;
    agent) echo "http://127.0.0.1:${PORT[agent]}/metrics" ;;
    grafana) echo "http://127.0.0.1:${PORT[grafana]}/api/health" ;;
  esac
}

# Checksum of what a component runs with: its command line and the files it reads.
config_sum() {
  local files=()
  case "$1" in
    prometheus) files=("$ETC/prometheus.yml") ;;   # the rules are reloaded, see start_one
    alertmanager) files=("$ETC/alertmanager.yml") ;;
    collector) files=("$ETC/collector.yaml") ;;   # the fleet file is re-read by the collector itself
    agent) files=("$ETC/agent.yaml") ;;
    grafana) files=("$ETC/grafana/grafana.ini" "$ETC"/grafana/provisioning/*/*.yml) ;;
  esac
  set_cmd "$1"
  { printf '%s\n' "${CMD[@]}"; cat "${files[@]}"; } | sha256sum | cut -d' ' -f1
}

start_one() {
  local name=$1 pid sum
  sum=$(config_sum "$name")
  pid=$(running_pid "$name")
  if [ -n "$pid" ]; then
    if [ "$(cat "$RUN/$name.sum" 2>/dev/null)" = "$sum" ]; then
      if [ "$name" = prometheus ]; then  # pick up edits of collector/rules without a restart
        "$PY" "$STACK_PY" post "http://127.0.0.1:${PORT[prometheus]}/-/reload" \
          || die "Prometheus refused to reload its rules: see $LOG/prometheus.log"
        say "$name already running (pid $pid), rules reloaded"
      else
        say "$name already running (pid $pid)"
      fi
      return 0
    fi
    say "$name: configuration changed, restarting"
    stop_one "$name"
  fi
  rm -f "$RUN/$name.pid"
  set_cmd "$name"
  echo "--- $(date -u '+%Y-%m-%dT%H:%M:%SZ') starting: ${CMD[*]}" >>"$LOG/$name.log"
  # setsid: its own session, so a Ctrl-C of this script (or of the terminal) does not reach it.
  PROMETHEUS_URL="http://127.0.0.1:${PORT[prometheus]}" setsid "${CMD[@]}" </dev/null >>"$LOG/$name.log" 2>&1 9>&- &
  echo $! >"$RUN/$name.pid"
  echo "$sum" >"$RUN/$name.sum"
  local patience=60
  [ "$name" != grafana ] || patience=300   # its first start migrates its database
  if ! "$PY" "$STACK_PY" wait-http "$(ready_url "$name")" "$patience" "$RUN/$name.pid"; then
    echo "--- last lines of $LOG/$name.log:" >&2
    tail -n 30 "$LOG/$name.log" >&2
    die "$name did not start (log: $LOG/$name.log); stop the rest with: bash deploy/quickstart.sh stop --prefix $PREFIX"
  fi
  say "$name started (pid $(cat "$RUN/$name.pid"))"
}

mkdir -p "$DATA/prometheus" "$DATA/alertmanager" "$DATA/collector" "$DATA/agent"
start_one prometheus
start_one alertmanager
start_one collector

# Enrollment: a one-time key of the commune, traded by the agent for its own push token.
TOKEN_FILE=$DATA/agent/push.token
if [ ! -s "$TOKEN_FILE" ] || ! "$VENV/bin/commune-collector" token list -c "$ETC/collector.yaml" 2>/dev/null \
    | awk -v c="$COMMUNE" -v a="$AGENT_ID" '$2 == c && $3 == a && / active / {ok=1} END {exit !ok}'; then
  stop_one agent   # it would push with a token the collector does not know
  KEY=$("$VENV/bin/commune-collector" enroll-key create --commune "$COMMUNE" --ttl 1h -c "$ETC/collector.yaml" 2>/dev/null) \
    || die "could not create an enrollment key"
  COMMUNE_ENROLL_KEY=$KEY "$VENV/bin/commune-agent" enroll --collector "http://127.0.0.1:${PORT[collector]}" \
    -c "$ETC/agent.yaml" || die "the agent could not enroll"
  unset KEY
fi
start_one agent

if [ -n "$GRAFANA_BIN" ]; then
  mkdir -p "$DATA/grafana" "$LOG/grafana"
  start_one grafana
fi

# Wait for the agent's first samples to come through the collector into Prometheus.
PROM=http://127.0.0.1:${PORT[prometheus]}
if "$PY" "$STACK_PY" has-series "$PROM" "commune_agent_input_success{commune=\"$COMMUNE\",agent=\"$AGENT_ID\"}" 90; then
  say "the agent's data is in Prometheus (commune $COMMUNE, agent $AGENT_ID)"
else
  say "warning: no data of the agent in Prometheus yet; see $LOG/agent.log and $LOG/collector.log"
fi

# ---------------------------------------------------------------- where everything is

STOP_ARGS=""
[ "$PREFIX" = "$REPO/var/quickstart" ] || STOP_ARGS=" --prefix $(printf '%q' "$PREFIX")"

cat <<EOF

commune-monitor is running on this machine (loopback only), from $PREFIX:
  Prometheus    $PROM              (rules: $REPO/collector/rules, alerts page: $PROM/alerts)
  Alertmanager  http://127.0.0.1:${PORT[alertmanager]}              (sends nothing anywhere)
  collector     http://127.0.0.1:${PORT[collector]}              (agents push to /api/v1/write)
  agent         http://127.0.0.1:${PORT[agent]}/metrics      (id $AGENT_ID, commune $COMMUNE)
EOF
if [ -n "$GRAFANA_BIN" ]; then
  echo "  Grafana       http://127.0.0.1:${PORT[grafana]}              (user admin, password in $ETC/grafana-admin-password)"
else
  cat <<EOF
  Grafana       not installed. Install it from Grafana's apt repository
                (https://grafana.com/docs/grafana/latest/setup-grafana/installation/debian/: apt-get
                install grafana) and run this script again to have the dashboards provisioned, or run
                the whole central stack in containers with deploy/compose/compose.yaml.
EOF
fi
cat <<EOF
  configs       $ETC
  logs          $LOG/*.log      pid files: $RUN/*.pid

Summary:  $VENV/bin/commune-collector status --prometheus $PROM
Stop:     bash deploy/quickstart.sh stop$STOP_ARGS
EOF
