"""Template variables the dashboards share: commune, and one per kind of device."""
from __future__ import annotations

from dashboards.model import Text, query_variable


def commune(multi: bool = True) -> dict:
    # Every agent emits commune_agent_input_success, pushed or scraped, so every commune is listed.
    return query_variable(
        "commune", Text("Commune", "Xã/phường"), "label_values(commune_agent_input_success, commune)",
        Text("Administrative code of the commune or ward (the collector's commune label).",
             "Mã đơn vị hành chính của xã/phường (nhãn commune do collector gắn)."),
        multi=multi, include_all=multi)


def agent() -> dict:
    return query_variable(
        "agent", Text("PC", "Máy tính"), 'label_values(node_boot_time_seconds{commune=~"$commune"}, agent)',
        Text("The PC (its agent name) whose health is shown.", "Máy tính (tên agent) cần xem."),
        multi=True)


def snmp_device(name: str, kind: str, label: Text, description: Text) -> dict:
    return query_variable(
        name, label, f'label_values(commune_snmp_device_info{{commune=~"$commune", kind="{kind}"}}, target)',
        description, multi=True)


def printer() -> dict:
    return snmp_device("printer", "printer", Text("Printer", "Máy in"),
                       Text("Printers polled by SNMP (target names).", "Máy in được giám sát qua SNMP (tên target)."))


def router() -> dict:
    return snmp_device("router", "router", Text("Router", "Bộ định tuyến"),
                       Text("Routers polled by SNMP (target names).",
                            "Bộ định tuyến được giám sát qua SNMP (tên target)."))


def ups() -> dict:
    return snmp_device("ups", "ups", Text("UPS", "Bộ lưu điện"),
                       Text("UPSes polled by SNMP (target names).", "Bộ lưu điện được giám sát qua SNMP (tên target)."))


def hop() -> dict:
    return query_variable(
        "hop", Text("Hop", "Chặng mạng"), 'label_values(commune_icmp_rtt_avg_seconds{commune=~"$commune"}, hop)',
        Text("Where the ping goes: gateway (office router), isp, upstream (province/national), service.",
             "Đích ping: gateway (router cơ quan), isp (nhà mạng), upstream (tỉnh/quốc gia), service (dịch vụ)."),
        multi=True)


def service() -> dict:
    return query_variable(
        "service", Text("Service", "Dịch vụ"), 'label_values(commune_probe_target_info{commune=~"$commune"}, service)',
        Text("Business service checked by the probes (e.g. the public service portal).",
             "Dịch vụ nghiệp vụ được kiểm tra (ví dụ Cổng dịch vụ công)."),
        multi=True)


def kind() -> dict:
    return query_variable(
        "kind", Text("Kind", "Loại thiết bị"), 'label_values(commune_device_info{commune=~"$commune"}, kind)',
        Text("Kind of device in the inventory: pc, laptop, printer, router, ups.",
             "Loại thiết bị trong danh mục: pc, laptop, printer (máy in), router, ups (bộ lưu điện)."),
        multi=True)
