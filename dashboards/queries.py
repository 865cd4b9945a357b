"""Every PromQL query of the dashboards, apart from their layout.

Selectors use the dashboard variables: ``$commune`` (multi-value, used as ``=~``), ``$agent``
(a PC's agent), ``$printer``, ``$router``, ``$ups`` (SNMP ``target`` names), ``$hop`` and
``$service``. Identity labels ``commune`` and ``agent`` are stamped by the collector; SNMP devices
are told apart by ``target`` (the name in the polling agent's config), which the fleet inventory
(``commune_device_info{device,kind,model,agent,target}``) ties to a device id.

Metric names come from ``contract/catalog.yaml`` and the recording rules in ``collector/rules/``;
``tests/test_dashboards.py`` checks that every name used here exists in one of them.
"""
from __future__ import annotations

from contract import thresholds

C = 'commune=~"$commune"'
PC = f'{C}, agent=~"$agent"'
PRINTER = f'{C}, target=~"$printer"'
ROUTER = f'{C}, target=~"$router"'
UPS = f'{C}, target=~"$ups"'

# An agent that has not pushed for this long is silent, and the score (0-100) from which a device
# is a replacement candidate: contract/thresholds.yaml, shared with the alerts and the report.
SILENT_AFTER_S = thresholds.AGENT_SILENT_AFTER_S
CANDIDATE_SCORE = thresholds.CANDIDATE_SCORE

PC_KINDS = "pc|laptop"

# ---------------------------------------------------------------- agents and devices

# Collector replicas each export the push times and the inventory: aggregate before joining.
LAST_PUSH_AGE = f"time() - max by (commune, agent) (commune_agent_last_push_timestamp_seconds{{{C}}})"


def inventory(sel: str) -> str:
    return f"max by (commune, device, kind, model, location, agent, target) (commune_device_info{{{sel}}})"


AGENTS_ONLINE = f"count({LAST_PUSH_AGE} < {SILENT_AFTER_S})"
AGENTS_SILENT = f"count({LAST_PUSH_AGE} >= {SILENT_AFTER_S}) or vector(0)"
AGENTS_ONLINE_BY_COMMUNE = f"count by (commune) ({LAST_PUSH_AGE} < {SILENT_AFTER_S})"
AGENTS_SILENT_BY_COMMUNE = f"count by (commune) ({LAST_PUSH_AGE} >= {SILENT_AFTER_S})"
COMMUNES_REPORTING = f"count(count by (commune) ({LAST_PUSH_AGE} < {SILENT_AFTER_S}))"


COMMUNE_NAMES = f"max by (commune, name, province) (commune_office_info{{{C}}})"

# One row per inventoried device: 1 while it reports (PC: pushed recently; SNMP device: polled),
# 0 when it does not, with the inventory's labels (device, kind, model, location, agent, target).
PC_DEVICES = f'{C}, kind=~"{PC_KINDS}"'
SNMP_DEVICES = f'{C}, kind!~"{PC_KINDS}"'


def with_dashboard(expr: str) -> str:
    """Adds a ``dashboard`` label naming the dashboard stem for the device's ``kind`` (data links)."""
    return ('label_replace(label_replace(label_replace('
            f'{expr}, "dashboard", "host", "kind", "pc|laptop"), '
            '"dashboard", "printers", "kind", "printer"), '
            '"dashboard", "commune", "kind", "router|ups")')


DEVICE_STATUS = (
    f"({inventory(PC_DEVICES)} * on (commune, agent) group_left () ({LAST_PUSH_AGE} < bool {SILENT_AFTER_S}))"
    f" or ({inventory(SNMP_DEVICES)} * on (commune, agent, target) group_left ()"
    f" max by (commune, agent, target) (commune_snmp_up{{{C}}}))")
DEVICES_DOWN = f"count(({DEVICE_STATUS}) == 0) or vector(0)"
DEVICES_DOWN_BY_COMMUNE = f"count by (commune) (({DEVICE_STATUS}) == 0)"

ALERTS_FIRING = f'count(ALERTS{{alertstate="firing", {C}}}) or vector(0)'
ALERTS_FIRING_TABLE = f'count by (commune, alertname, severity) (ALERTS{{alertstate="firing", {C}}})'
ALERTS_FIRING_BY_COMMUNE = f'count by (commune) (ALERTS{{alertstate="firing", {C}}})'

INPUT_SUCCESS = f"min by (commune, agent, input) (commune_agent_input_success{{{C}}})"

# ---------------------------------------------------------------- network chain (ICMP by hop)

HOPS = 'hop=~"$hop"'
RTT_BY_HOP = f"avg by (hop) (commune_icmp_rtt_avg_seconds{{{C}}})"
LOSS_BY_HOP = f"avg by (hop) (commune_icmp_packet_loss_ratio{{{C}}})"
JITTER_BY_HOP = f"avg by (hop) (commune_icmp_jitter_seconds{{{C}}})"
RTT_BY_COMMUNE_HOP = f"avg by (commune, hop) (commune_icmp_rtt_avg_seconds{{{C}, {HOPS}}})"
JITTER_BY_COMMUNE_HOP = f"avg by (commune, hop) (commune_icmp_jitter_seconds{{{C}, {HOPS}}})"
LOSS_BY_COMMUNE_HOP = f"avg by (commune, hop) (commune_icmp_packet_loss_ratio{{{C}, {HOPS}}})"
RTT_MAX_BY_COMMUNE_HOP = f"max by (commune, hop) (commune_icmp_rtt_max_seconds{{{C}, {HOPS}}})"
ICMP_UP_BY_TARGET = f'min by (commune, hop, target) (probe_success{{{C}, {HOPS}, module="icmp"}})'
# Link quality of the whole range: share of ICMP checks toward the ISP and beyond that succeeded.
LINK_AVAILABILITY_BY_COMMUNE = (f'avg by (commune) (avg_over_time(probe_success{{{C}, module="icmp", '
                                f'hop=~"isp|upstream"}}[$__range]))')
LINK_LOSS_BY_COMMUNE = f'avg by (commune) (commune_icmp_packet_loss_ratio{{{C}, hop=~"isp|upstream"}})'
LINK_RTT_BY_COMMUNE = f'avg by (commune) (commune_icmp_rtt_avg_seconds{{{C}, hop=~"isp|upstream"}})'

# ---------------------------------------------------------------- router interfaces (SNMP)

IF_IN_BPS = f"rate(commune_snmp_if_in_octets_total{{{ROUTER}}}[$__rate_interval]) * 8"
IF_OUT_BPS = f"rate(commune_snmp_if_out_octets_total{{{ROUTER}}}[$__rate_interval]) * 8"
IF_ERRORS = (f"rate(commune_snmp_if_in_errors_total{{{ROUTER}}}[$__rate_interval])"
             f" + rate(commune_snmp_if_out_errors_total{{{ROUTER}}}[$__rate_interval])")
IF_DISCARDS = (f"rate(commune_snmp_if_in_discards_total{{{ROUTER}}}[$__rate_interval])"
               f" + rate(commune_snmp_if_out_discards_total{{{ROUTER}}}[$__rate_interval])")
IF_OPER_STATUS = f"commune_snmp_if_oper_status{{{ROUTER}}}"
IF_SPEED = f"commune_snmp_if_speed_bytes{{{ROUTER}}} * 8"
ROUTER_UPTIME = f"commune_snmp_uptime_seconds{{{ROUTER}}}"
ROUTER_REBOOTS = f"resets(commune_snmp_uptime_seconds{{{ROUTER}}}[$__range])"

# ---------------------------------------------------------------- printers (SNMP, Printer-MIB)

def supply_level(sel: str = PRINTER) -> str:
    return f"commune_printer_supply_level_ratio{{{sel}}}"


def printer_status(sel: str = PRINTER) -> str:
    return f"commune_printer_status{{{sel}}}"


def printer_errors_active(sel: str = PRINTER) -> str:
    """Number of error conditions each printer reports now."""
    return f"sum by (commune, target) (commune_printer_error_state{{{sel}}})"


def printer_up(sel: str = PRINTER) -> str:
    return f"commune_snmp_up{{{sel}}}"


SUPPLY_LEVEL_LOWEST = f"min by (commune, target) (commune_printer_supply_level_ratio{{{PRINTER}}})"
PAGES_PER_DAY = f"sum by (commune, target) (increase(commune_printer_pages_total{{{PRINTER}}}[1d]))"
PAGES_IN_RANGE = f"sum by (commune, target) (increase(commune_printer_pages_total{{{PRINTER}}}[$__range]))"
PAGES_TOTAL = f"sum by (commune, target) (commune_printer_pages_total{{{PRINTER}}})"
PRINTER_ERRORS = f"max by (commune, target, condition) (commune_printer_error_state{{{PRINTER}}})"
PRINTER_ALERTS = f"commune_printer_alert_info{{{PRINTER}}}"
# Share of the time range each printer spent jammed, the ten worst.
MOST_JAMMED = (f'topk(10, avg by (commune, target) (avg_over_time(commune_printer_error_state{{{PRINTER}, '
               f'condition="jammed"}}[$__range])))')

# ---------------------------------------------------------------- UPS (SNMP, UPS-MIB)


def ups(metric: str, sel: str = UPS) -> str:
    """One UPS-MIB value: battery_charge_ratio, battery_runtime_seconds, on_battery, load_ratio ..."""
    return f"commune_ups_{metric}{{{sel}}}"


# ---------------------------------------------------------------- host (node_exporter names)

CPU_BUSY = f'1 - avg by (commune, agent) (rate(node_cpu_seconds_total{{{PC}, mode="idle"}}[$__rate_interval]))'
# Share of CPU time per mode, averaged over the cores of each PC.
CPU_BY_MODE = f'avg by (commune, agent, mode) (rate(node_cpu_seconds_total{{{PC}, mode!="idle"}}[$__rate_interval]))'
MEM_USED_RATIO = (f"1 - node_memory_MemAvailable_bytes{{{PC}}}"
                  f" / node_memory_MemTotal_bytes{{{PC}}}")
MEM_AVAILABLE = f"node_memory_MemAvailable_bytes{{{PC}}}"
MEM_TOTAL = f"node_memory_MemTotal_bytes{{{PC}}}"
# Share of the range with less than 10 % of memory available (the design's pressure signal).
MEM_PRESSURE_TIME = (f"avg_over_time((node_memory_MemAvailable_bytes{{{PC}}}"
                     f" / node_memory_MemTotal_bytes{{{PC}}} < bool 0.1)[$__range:$__interval])")
SWAP_USED = f"node_memory_SwapTotal_bytes{{{PC}}} - node_memory_SwapFree_bytes{{{PC}}}"
FS_USED_RATIO = (f"1 - node_filesystem_avail_bytes{{{PC}}} / node_filesystem_size_bytes{{{PC}}}")
FS_AVAIL = f"node_filesystem_avail_bytes{{{PC}}}"
DISK_READ = f"rate(node_disk_read_bytes_total{{{PC}}}[$__rate_interval])"
DISK_WRITTEN = f"rate(node_disk_written_bytes_total{{{PC}}}[$__rate_interval])"
DISK_BUSY = f"rate(node_disk_io_time_seconds_total{{{PC}}}[$__rate_interval])"
NET_RX = f'rate(node_network_receive_bytes_total{{{PC}, device!="lo"}}[$__rate_interval]) * 8'
NET_TX = f'rate(node_network_transmit_bytes_total{{{PC}, device!="lo"}}[$__rate_interval]) * 8'
NET_ERRORS = (f'rate(node_network_receive_errs_total{{{PC}, device!="lo"}}[$__rate_interval])'
              f' + rate(node_network_transmit_errs_total{{{PC}, device!="lo"}}[$__rate_interval])')
TEMPERATURE = f"node_hwmon_temp_celsius{{{PC}}}"
UPTIME = f"time() - node_boot_time_seconds{{{PC}}}"
BOOTS_IN_RANGE = f"changes(node_boot_time_seconds{{{PC}}}[$__range])"
BOOT_TIME = f"node_boot_time_seconds{{{PC}}} * 1000"
UNEXPECTED_SHUTDOWNS = f"increase(commune_host_unexpected_shutdowns_total{{{PC}}}[$__range])"
BOOT_DURATION = f"commune_host_boot_duration_seconds{{{PC}}}"
LOAD1 = f"node_load1{{{PC}}}"

# ---------------------------------------------------------------- SMART (smart input)

SMART_HEALTHY = f"commune_smart_healthy{{{PC}}}"
SMART_REALLOCATED = f"commune_smart_reallocated_sectors{{{PC}}}"
SMART_PENDING = f"commune_smart_pending_sectors{{{PC}}}"
SMART_WEAR = f"commune_smart_percentage_used_ratio{{{PC}}}"
SMART_TEMPERATURE = f"commune_smart_temperature_celsius{{{PC}}}"

# ---------------------------------------------------------------- software probes

# Probe series carry ``target``/``module``; commune_probe_target_info adds the ``service`` they check.
SERVICE_INFO = f'commune_probe_target_info{{{C}, service=~"$service"}}'
JOIN_SERVICE = "* on (commune, agent, target, module) group_left (service)"


def by_service(expr: str, how: str = "avg", by: str = "service") -> str:
    return f"{how} by ({by}) (({expr}) {JOIN_SERVICE} {SERVICE_INFO})"


PROBE_UP_BY_SERVICE = by_service(f"probe_success{{{C}}}", "min", "commune, service")
PROBE_DURATION_BY_SERVICE = by_service(f"probe_duration_seconds{{{C}}}", "avg", "service")
HTTP_PHASES = by_service(f"probe_http_duration_seconds{{{C}}}", "avg", "service, phase")
HTTP_STATUS = by_service(f"probe_http_status_code{{{C}}}", "max", "commune, service")
CERT_EXPIRY = by_service(f"probe_ssl_earliest_cert_expiry{{{C}}} - time()", "min", "service")
DNS_LOOKUP = by_service(f"probe_dns_lookup_time_seconds{{{C}}}", "avg", "service")
AVAILABILITY_RANGE = by_service(f"avg_over_time(probe_success{{{C}}}[$__range])", "avg", "commune, service")

# ---------------------------------------------------------------- recording rules (collector/rules)

# Availability of each probed service over 1d/7d/30d, per commune and service (availability.yml).
AVAILABILITY_1D = "commune_service:probe_success:avg_over_time_1d"
AVAILABILITY_7D = "commune_service:probe_success:avg_over_time_7d"
AVAILABILITY_30D = "commune_service:probe_success:avg_over_time_30d"


def availability(rule: str, by: str) -> str:
    return f'avg by ({by}) ({rule}{{{C}, service=~"$service"}})'


AVAILABILITY_1D_BY_SERVICE = f"avg by (service) ({AVAILABILITY_1D}{{{C}}})"
AVAILABILITY_7D_BY_SERVICE = f"avg by (service) ({AVAILABILITY_7D}{{{C}}})"
AVAILABILITY_30D_BY_SERVICE = f"avg by (service) ({AVAILABILITY_30D}{{{C}}})"

# Replacement (replacement.yml): factors in [0, 1] per device and factor, the score 0-100, and the
# score with the factor that contributes most as ``reason``.
SCORE = "commune:device_replacement_score:0_100"
SCORE_REASON = "commune:device_replacement_score:top_reason"
FACTOR = "commune:device_replacement_factor:ratio"
REPLACEMENT_CANDIDATES = f"count({SCORE}{{{C}}} >= {CANDIDATE_SCORE}) or vector(0)"
REPLACEMENT_CANDIDATES_BY_COMMUNE = f"count by (commune) ({SCORE}{{{C}}} >= {CANDIDATE_SCORE})"
DEVICE_KIND = 'kind=~"$kind"'


def factor(name: str) -> str:
    return f'max by (commune, device) ({FACTOR}{{{C}, {DEVICE_KIND}, factor="{name}"}})'


# The score with its reason, the inventory's model/agent/target, and the dashboard to open for
# the device's kind.
SCORE_TABLE = with_dashboard(
    f"{SCORE_REASON}{{{C}, {DEVICE_KIND}}} * on (commune, device) group_left (model, agent, target) "
    f"max by (commune, device, model, agent, target) (commune_device_info{{{C}}})")
DEVICE_AGE = f"max by (commune, device) (time() - commune_device_purchase_timestamp_seconds{{{C}}})"
TOP_SCORES = f"topk(20, {SCORE}{{{C}, {DEVICE_KIND}}})"
TOP_SCORES_OVER_TIME = f"topk(10, {SCORE}{{{C}, {DEVICE_KIND}}})"
CANDIDATES_BY_REASON = f"count by (reason) ({SCORE_REASON}{{{C}, {DEVICE_KIND}}} >= {CANDIDATE_SCORE})"
# What to buy (replacement.yml's recommended actions): one row per device and action with its score
# and reason, and the count of each action by kind (the report prices them).
ACTION = "commune:device_replacement_action:info"
ACTION_TABLE = (f"{ACTION}{{{C}, {DEVICE_KIND}}} * on (commune, device, kind) group_left (reason) "
                f"{SCORE_REASON}{{{C}, {DEVICE_KIND}}}")
ACTIONS_BY_KIND = f"count by (action, kind) ({ACTION}{{{C}, {DEVICE_KIND}}})"


# Forecasts (forecasts.yml), in seconds: until a supply runs out (trend since its last refill), until
# a PC's system filesystem is full, until a printer or a UPS battery reaches its rated life.
SUPPLY_TIME_LEFT = f"commune_agent_target:printer_supply_time_left:seconds{{{PRINTER}}}"
SUPPLY_USE_PER_DAY = f"commune_agent_target:printer_supply_use:rate_since_refill{{{PRINTER}}} * 86400"
SUPPLY_LEVEL_FORECAST = (f"max by (commune, agent, target, index, description, type, class) "
                         f"(commune_printer_supply_level_ratio{{{PRINTER}}})"
                         f" and on (commune, agent, target, index, description, type, class) {SUPPLY_TIME_LEFT}")
# Until a device reaches its rated life (label what="device"; the 50 soonest), a printer its rated
# lifetime pages (what="pages") or a UPS battery its rated life (what="battery"), by inventory device.
RATED_LIFE_TIME_LEFT = (
    f'label_replace(bottomk(50, commune:device_rated_life_time_left:seconds{{{C}, {DEVICE_KIND}}}), '
    f'"what", "device", "", "") or '
    f'label_replace(commune:device_rated_pages_time_left:seconds{{{C}, {DEVICE_KIND}}}, "what", "pages", "", "")'
    f' or label_replace(commune:device_ups_battery_time_left:seconds{{{C}, {DEVICE_KIND}}}, "what", "battery", "", "")')
DISK_TIME_LEFT = (f"commune_agent:node_filesystem_system_time_left:seconds{{{C}}}"
                  f" * on (commune, agent) group_left (device) "
                  f'max by (commune, agent, device) (commune_device_info{{{C}, {DEVICE_KIND}, kind=~"{PC_KINDS}"}})')
DISK_USE_PER_DAY = (f"commune_agent:node_filesystem_system_use:rate_since_cleanup{{{C}}} * 86400"
                    f" * on (commune, agent) group_left (device) "
                    f'max by (commune, agent, device) (commune_device_info{{{C}, {DEVICE_KIND}, kind=~"{PC_KINDS}"}})')
