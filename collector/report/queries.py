"""The PromQL the report runs, kept apart from the code that runs it.

``{P}`` is the period as a range (``2419200s``). Evidence is computed from the raw series with
subqueries, so it holds for any period Prometheus has data for, even where the recording rules
were not running yet (backfilled history); scores and factors come from the recording rules of
collector/rules/replacement.yml, taken as their last value within the period.

Each device query returns series keyed by ``commune`` and ``device``: PCs and laptops are tied
to the agent running on them, printers, routers and UPSes to the polling agent and SNMP target,
exactly as the recording rules do through ``commune_device_info``.
"""
from __future__ import annotations

PC_DEVICE = ('* on (commune, agent) group_left (device) '
             'max by (commune, agent, device) (last_over_time(commune_device_info{{kind=~"pc|laptop"}}[{P}]))')
SNMP_DEVICE = ('* on (commune, agent, target) group_left (device) '
               'max by (commune, agent, target, device) '
               '(last_over_time(commune_device_info{{kind=~"printer|router|ups"}}[{P}]))')
OFFICE_HOURS = ('((hour(vector(time() + 25200)) >= bool 7) * (hour(vector(time() + 25200)) < bool 17)'
                ' * (day_of_week(vector(time() + 25200)) >= bool 1) * (day_of_week(vector(time() + 25200)) <= bool 5)'
                ' == 1)')

def _last_recorded(metric: str, by: str) -> str:
    """When ``metric`` was last recorded within the period, per ``by``. The subquery's steps are
    aligned to 5 minutes; the instant part covers a sample newer than the last step."""
    return (f'max by ({by}) ('
            f'label_replace(max_over_time(timestamp({metric})[{{P}}:5m]), "src", "h", "", "")'
            f' or label_replace(timestamp({metric}), "src", "n", "", ""))')


INVENTORY = {
    "communes": "last_over_time(commune_office_info[{P}])",
    "devices": "last_over_time(commune_device_info[{P}])",
    "purchase": "last_over_time(commune_device_purchase_timestamp_seconds[{P}])",
    "rated_life": "last_over_time(commune_device_rated_life_seconds[{P}])",
    # agents that describe their machine: PCs and laptops of the inventory without a fleet entry
    # (agent/inputs/inventory.py); the recording rules' estimate of their purchase (BIOS date) and
    # the rated life of their kind
    "self_registered": "last_over_time(commune_host_hardware_info[{P}])",
    "purchase_estimated": 'last_over_time(commune:device_purchase_timestamp_seconds:max{{source="bios_estimate"}}[{P}])',
    "rated_life_recorded": "last_over_time(commune:device_rated_life_seconds:max[{P}])",
    "rated_pages": "last_over_time(commune_device_rated_life_pages[{P}])",
}

SCORES = {
    "score": "last_over_time(commune:device_replacement_score:0_100[{P}])",
    "reason": "last_over_time(commune:device_replacement_score:top_reason[{P}])",
    "factor": "last_over_time(commune:device_replacement_factor:ratio[{P}])",
    # when each recommended action and each score was last recorded: the actions of a device are
    # those recorded with its latest score (an SSD fitted mid-period is no longer recommended)
    "action_time": _last_recorded("commune:device_replacement_action:info", "commune, device, kind, action"),
    "score_time": _last_recorded("commune:device_replacement_score:0_100", "commune, device, kind"),
}

# name -> PromQL giving one measured value per (commune, device)
EVIDENCE = {
    "memory_pressure_share":
        "avg_over_time((max by (commune, agent) (node_memory_MemAvailable_bytes)"
        " / max by (commune, agent) (node_memory_MemTotal_bytes) < bool 0.10)[{P}:5m]) " + PC_DEVICE,
    "memory_total_bytes":
        "max by (commune, agent) (last_over_time(node_memory_MemTotal_bytes[{P}])) " + PC_DEVICE,
    "cpu_saturated_share":
        "avg_over_time(((1 - avg by (commune, agent) (rate(node_cpu_seconds_total{{mode=\"idle\"}}[5m])))"
        " > bool 0.90 and on () " + OFFICE_HOURS + ")[{P}:5m]) " + PC_DEVICE,
    "smart_reallocated":
        "max by (commune, agent) (max_over_time(commune_smart_reallocated_sectors[{P}])) " + PC_DEVICE,
    "smart_pending":
        "max by (commune, agent) (max_over_time(commune_smart_pending_sectors[{P}])) " + PC_DEVICE,
    "smart_failing":
        "max by (commune, agent) (1 - min_over_time(commune_smart_healthy[{P}])) " + PC_DEVICE,
    "has_hdd":
        "max by (commune, agent) (last_over_time(commune_disk_info{{type=\"hdd\"}}[{P}])) " + PC_DEVICE,
    "battery_capacity":
        "max by (commune, agent) (max_over_time(commune_battery_capacity_ratio[{P}])) " + PC_DEVICE,
    "unexpected_shutdowns":
        "max by (commune, agent) (increase(commune_host_unexpected_shutdowns_total[{P}])) " + PC_DEVICE,
    # the boot duration is held for the whole boot: its median over time is the typical boot, as the
    # slow_boot factor takes it; the maximum shows the worst one (often a boot installing updates)
    "boot_seconds_median":
        "max by (commune, agent) (quantile_over_time(0.5, commune_host_boot_duration_seconds[{P}])) " + PC_DEVICE,
    "boot_seconds_max":
        "max by (commune, agent) (max_over_time(commune_host_boot_duration_seconds[{P}])) " + PC_DEVICE,
    "pages_total":
        "max by (commune, agent, target) (last_over_time(commune_printer_pages_total[{P}])) " + SNMP_DEVICE,
    "pages_in_period":
        "max by (commune, agent, target) (increase(commune_printer_pages_total[{P}])) " + SNMP_DEVICE,
    "error_minutes":
        "sum_over_time((max by (commune, agent, target) (commune_printer_error_state"
        "{{condition=~\"jammed|door_open|service_requested\"}}))[{P}:1m]) " + SNMP_DEVICE,
    "offline_share":
        "avg_over_time(((max by (commune, agent, target) (commune_snmp_up) == bool 0) and on () "
        + OFFICE_HOURS + ")[{P}:5m]) " + SNMP_DEVICE,
    "reboots":
        "max by (commune, agent, target) (resets(commune_snmp_uptime_seconds[{P}])) " + SNMP_DEVICE,
    "interface_error_share":
        "(sum by (commune, agent, target) (increase(commune_snmp_if_in_errors_total[{P}]))"
        " + sum by (commune, agent, target) (increase(commune_snmp_if_out_errors_total[{P}])))"
        " / ((sum by (commune, agent, target) (increase(commune_snmp_if_in_unicast_packets_total[{P}]))"
        " + sum by (commune, agent, target) (increase(commune_snmp_if_out_unicast_packets_total[{P}]))) > 0) "
        + SNMP_DEVICE,
    "battery_replace":
        "max by (commune, agent, target) (max_over_time(commune_ups_battery_replace[{P}])) " + SNMP_DEVICE,
    "battery_runtime_seconds":
        "min by (commune, agent, target) (min_over_time(commune_ups_battery_runtime_seconds[{P}])) " + SNMP_DEVICE,
}

# Per commune (the gateway loss factor of a router is its commune's).
COMMUNE = {
    "gateway_loss": "avg by (commune) (avg_over_time(commune_icmp_packet_loss_ratio{{hop=\"gateway\"}}[{P}]))",
    "availability":
        "avg_over_time((avg by (commune, service) (max by (commune, agent, target, module) (probe_success)"
        " * on (commune, agent, target, module) group_left (service)"
        " max by (commune, agent, target, module, service) (commune_probe_target_info)))[{P}:5m])",
    "response_seconds":
        "avg_over_time((avg by (commune, service) (max by (commune, agent, target, module) (probe_duration_seconds)"
        " * on (commune, agent, target, module) group_left (service)"
        " max by (commune, agent, target, module, service) (commune_probe_target_info)))[{P}:5m])",
    "hop_loss": "avg by (commune, hop) (avg_over_time(commune_icmp_packet_loss_ratio[{P}]))",
    "hop_rtt": "avg by (commune, hop) (avg_over_time(commune_icmp_rtt_avg_seconds[{P}]))",
}

# Daily series for the small charts, by device kind (range queries, step 1d). They are keyed by
# the labels that tie a device to its series (commune, agent[, target]), not joined with the
# inventory in PromQL: the inventory may be younger than the history it describes.
DAILY = {
    "pc": "avg by (commune, agent) (avg_over_time(node_memory_MemAvailable_bytes[1d])"
          " / avg_over_time(node_memory_MemTotal_bytes[1d]))",
    "printer": "max by (commune, agent, target) (increase(commune_printer_pages_total[1d]))",
    "router": "avg by (commune) (avg_over_time(commune_icmp_packet_loss_ratio{{hop=\"gateway\"}}[1d]))",
    "ups": "min by (commune, agent, target) (min_over_time(commune_ups_battery_charge_ratio[1d]))",
}
DAILY["laptop"] = DAILY["pc"]

# Forecasts (collector/rules/forecasts.yml) as of the period's end: the last value the recording
# rules wrote within the hour before it, in days. Keyed as the rules key them (supplies by
# commune, agent, target and supply; disks by commune, agent and mountpoint; rated life by
# commune and device). Not over the whole period: a forecast is about what comes after it.
FORECASTS = {
    "supply_days": "last_over_time(commune_agent_target:printer_supply_time_left:seconds[1h]) / 86400",
    "supply_level": "max by (commune, agent, target, index) (last_over_time(commune_printer_supply_level_ratio[1h]))",
    "rated_life_days": "last_over_time(commune:device_rated_life_time_left:seconds[1h]) / 86400",
    "rated_pages_days": "last_over_time(commune:device_rated_pages_time_left:seconds[1h]) / 86400",
    "ups_battery_days": "last_over_time(commune:device_ups_battery_time_left:seconds[1h]) / 86400",
    "disk_days": "last_over_time(commune_agent:node_filesystem_system_time_left:seconds[1h]) / 86400",
    "disk_bytes_per_day": "last_over_time(commune_agent:node_filesystem_system_use:rate_since_cleanup[1h]) * 86400",
    "battery_rated_seconds": "last_over_time(global:ups_battery_rated_life:seconds[1h])",
    "devices": "last_over_time(commune_device_info[{P}])",
}
