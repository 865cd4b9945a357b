"""1. Fleet overview for the province: which communes report, what is down, what fires."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import to_board
from dashboards.model import (GOOD_HIGH, OK, Q, Text, above, column, dashboard, row, stat, table,
                              timeseries)

NAME = "fleet"


def build(lang: str) -> dict:
    silent = Text(f"An agent is silent when it has not pushed for {q.SILENT_AFTER_S // 60} minutes.",
                  f"Agent bị coi là im lặng khi không gửi dữ liệu trong {q.SILENT_AFTER_S // 60} phút.")
    items = [
        row(Text("Now", "Hiện tại")),
        stat(Text("Communes reporting", "Xã/phường đang gửi dữ liệu"),
             Text("Communes with at least one agent that pushed recently. ", "Số xã/phường có ít nhất một agent "
                  "vừa gửi dữ liệu. ") + silent,
             [Q(q.COMMUNES_REPORTING)], unit="short", steps=OK),
        stat(Text("Agents online", "Agent trực tuyến"),
             Text("Agents that pushed recently. ", "Số agent vừa gửi dữ liệu. ") + silent,
             [Q(q.AGENTS_ONLINE)], unit="short", steps=OK),
        stat(Text("Agents silent", "Agent im lặng"),
             Text("Agents that stopped pushing: PC off, agent stopped or the office link is down. ",
                  "Số agent ngừng gửi: máy tắt, agent dừng hoặc đường truyền của cơ quan bị mất. ") + silent,
             [Q(q.AGENTS_SILENT)], unit="short", steps=above(1, 5)),
        stat(Text("Devices down", "Thiết bị mất kết nối"),
             Text("Inventoried devices not reporting: PCs whose agent is silent, printers, routers and UPSes "
                  "that do not answer SNMP.",
                  "Thiết bị trong danh mục không phản hồi: máy tính có agent im lặng, máy in, router, bộ lưu điện "
                  "không trả lời SNMP."),
             [Q(q.DEVICES_DOWN)], unit="short", steps=above(1, 5)),
        stat(Text("Firing alerts", "Cảnh báo đang kích hoạt"),
             Text("Alerts firing now in Prometheus (ALERTS series).",
                  "Số cảnh báo đang kích hoạt trong Prometheus (chuỗi ALERTS)."),
             [Q(q.ALERTS_FIRING)], unit="short", steps=above(1, 10)),
        stat(Text("Replacement candidates", "Thiết bị nên thay thế"),
             Text(f"Devices whose replacement score is {q.CANDIDATE_SCORE} or more (see Hardware to replace).",
                  f"Số thiết bị có điểm thay thế từ {q.CANDIDATE_SCORE} trở lên (xem bảng Thiết bị cần thay thế)."),
             [Q(q.REPLACEMENT_CANDIDATES)], unit="short", steps=above(1, 10),
             links=[to_board("replacement", lang, Text("Hardware to replace", "Thiết bị cần thay thế"),
                             commune="${commune}")]),
        row(Text("Communes", "Xã/phường")),
        table(Text("Communes at a glance", "Tổng quan theo xã/phường"),
              Text("One row per commune: agents online and silent, devices down, firing alerts, link "
                   "availability toward the ISP and beyond over the time range, replacement candidates. "
                   "Click a commune to open its dashboard.",
                   "Mỗi dòng một xã/phường: agent trực tuyến và im lặng, thiết bị mất kết nối, cảnh báo, tỷ lệ "
                   "đường truyền tới nhà mạng và xa hơn hoạt động trong khoảng thời gian, thiết bị nên thay. "
                   "Bấm vào mã xã để mở bảng điều khiển của xã."),
              [Q(q.AGENTS_ONLINE_BY_COMMUNE), Q(q.AGENTS_SILENT_BY_COMMUNE), Q(q.DEVICES_DOWN_BY_COMMUNE),
               Q(q.ALERTS_FIRING_BY_COMMUNE), Q(q.LINK_AVAILABILITY_BY_COMMUNE),
               Q(q.REPLACEMENT_CANDIDATES_BY_COMMUNE)],
              unit="short", steps=OK, merge=True, w=24, h=10,
              columns={"commune": Text("Commune", "Mã xã"), "Value #A": Text("Agents online", "Agent trực tuyến"),
                       "Value #B": Text("Agents silent", "Agent im lặng"),
                       "Value #C": Text("Devices down", "Thiết bị mất kết nối"),
                       "Value #D": Text("Firing alerts", "Cảnh báo"),
                       "Value #E": Text("Link availability", "Đường truyền hoạt động"),
                       "Value #F": Text("Replacement candidates", "Nên thay thế")},
              cell_overrides=[
                  column(Text("Commune", "Mã xã"), links=[to_board("commune", lang, Text("Commune dashboard",
                         "Bảng điều khiển của xã"), commune="${__value.raw}")]),
                  column(Text("Agents silent", "Agent im lặng"), steps=above(1, 3), cell="color-background"),
                  column(Text("Devices down", "Thiết bị mất kết nối"), steps=above(1, 3), cell="color-background"),
                  column(Text("Firing alerts", "Cảnh báo"), steps=above(1, 5), cell="color-background"),
                  column(Text("Link availability", "Đường truyền hoạt động"), unit="percentunit",
                         steps=GOOD_HIGH, cell="color-background", decimals=2)]),
        table(Text("Commune names", "Tên xã/phường"),
              Text("Commune codes and names from the fleet inventory.", "Mã và tên xã/phường trong danh mục thiết bị."),
              [Q(q.COMMUNE_NAMES)], unit="none", steps=OK, hide=("Value", "job", "instance", "agent"),
              columns={"commune": Text("Commune", "Mã xã"), "name": Text("Name", "Tên"),
                       "province": Text("Province", "Tỉnh")}, w=8, h=8),
        table(Text("Alerts firing by commune", "Cảnh báo đang kích hoạt theo xã"),
              Text("Alerts firing now, by commune, alert and severity.",
                   "Cảnh báo đang kích hoạt theo xã, tên cảnh báo và mức độ."),
              [Q(q.ALERTS_FIRING_TABLE)], unit="short", steps=OK, w=16, h=8,
              columns={"commune": Text("Commune", "Mã xã"), "alertname": Text("Alert", "Cảnh báo"),
                       "severity": Text("Severity", "Mức độ"), "Value": Text("Count", "Số lượng")}),
        row(Text("Links and software", "Đường truyền và phần mềm")),
        timeseries(Text("Packet loss toward the ISP and beyond", "Tỷ lệ mất gói tới nhà mạng và xa hơn"),
                   Text("Average ICMP packet loss of the isp and upstream hops, by commune.",
                        "Tỷ lệ mất gói ICMP trung bình của chặng isp và upstream, theo xã/phường."),
                   [Q(q.LINK_LOSS_BY_COMMUNE, "{{commune}}")], unit="percentunit", steps=above(0.02, 0.1),
                   min=0, max=1),
        timeseries(Text("Round-trip time toward the ISP and beyond", "Độ trễ tới nhà mạng và xa hơn"),
                   Text("Average ICMP round-trip time of the isp and upstream hops, by commune.",
                        "Độ trễ ICMP trung bình của chặng isp và upstream, theo xã/phường."),
                   [Q(q.LINK_RTT_BY_COMMUNE, "{{commune}}")], unit="s", steps=above(0.1, 0.3), min=0),
        table(Text("Software availability", "Tính sẵn sàng của phần mềm"),
              Text("Share of successful checks of each service over 1, 7 and 30 days (recording rules), "
                   "all communes together.",
                   "Tỷ lệ kiểm tra thành công của mỗi dịch vụ trong 1, 7 và 30 ngày (luật ghi), gộp mọi xã."),
              [Q(q.AVAILABILITY_1D_BY_SERVICE), Q(q.AVAILABILITY_7D_BY_SERVICE), Q(q.AVAILABILITY_30D_BY_SERVICE)],
              unit="percentunit", steps=GOOD_HIGH, merge=True, w=24, h=8,
              columns={"service": Text("Service", "Dịch vụ"), "Value #A": Text("1 day", "1 ngày"),
                       "Value #B": Text("7 days", "7 ngày"), "Value #C": Text("30 days", "30 ngày")},
              cell_overrides=[column(t, cell="color-background", decimals=2) for t in (
                  Text("1 day", "1 ngày"), Text("7 days", "7 ngày"), Text("30 days", "30 ngày"))]),
    ]
    return dashboard(
        NAME, lang, Text("Fleet overview (province)", "Tổng quan toàn tỉnh"),
        Text("Province-wide view: which communes report, devices down, firing alerts, link quality, "
             "software availability and how many devices should be replaced.",
             "Toàn cảnh cấp tỉnh: xã/phường nào đang gửi dữ liệu, thiết bị mất kết nối, cảnh báo, chất lượng "
             "đường truyền, tính sẵn sàng của phần mềm và số thiết bị nên thay thế."),
        [variables.commune()], items, tags=["fleet"])
