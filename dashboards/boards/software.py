"""6. Software availability: per service and commune, 1d/7d/30d, response phases, certificates."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import UP_DOWN
from dashboards.model import (GOOD_HIGH, Q, Text, above, below, column, dashboard, row, state_timeline,
                              table, timeseries)

NAME = "software"


def build(lang: str) -> dict:
    periods = (Text("1 day", "1 ngày"), Text("7 days", "7 ngày"), Text("30 days", "30 ngày"))
    items = [
        row(Text("Availability", "Tính sẵn sàng")),
        table(Text("Availability by service and commune", "Tính sẵn sàng theo dịch vụ và xã"),
              Text("Share of successful checks over 1, 7 and 30 days (recording rules), seen from each commune: "
                   "a service down everywhere is the server; down in one commune is that commune's link.",
                   "Tỷ lệ kiểm tra thành công trong 1, 7 và 30 ngày (luật ghi), nhìn từ mỗi xã: dịch vụ lỗi ở mọi "
                   "xã là do máy chủ; lỗi ở một xã là do đường truyền của xã đó."),
              [Q(q.availability(q.AVAILABILITY_1D, "commune, service")),
               Q(q.availability(q.AVAILABILITY_7D, "commune, service")),
               Q(q.availability(q.AVAILABILITY_30D, "commune, service"))],
              unit="percentunit", steps=GOOD_HIGH, merge=True, w=24, h=10,
              columns={"service": Text("Service", "Dịch vụ"), "commune": Text("Commune", "Mã xã"),
                       "Value #A": periods[0], "Value #B": periods[1], "Value #C": periods[2]},
              cell_overrides=[column(t, cell="color-background", decimals=2) for t in periods]),
        table(Text("Availability in the time range", "Tính sẵn sàng trong khoảng thời gian"),
              Text("Share of successful checks in the selected time range, by commune and service.",
                   "Tỷ lệ kiểm tra thành công trong khoảng thời gian đã chọn, theo xã và dịch vụ."),
              [Q(q.AVAILABILITY_RANGE)], unit="percentunit", steps=GOOD_HIGH, w=8, h=10,
              columns={"service": Text("Service", "Dịch vụ"), "commune": Text("Commune", "Mã xã"),
                       "Value": Text("Availability", "Sẵn sàng")},
              cell_overrides=[column(Text("Availability", "Sẵn sàng"), cell="color-background", decimals=2)]),
        state_timeline(Text("Up or down over time", "Hoạt động theo thời gian"),
                       Text("Whether the checks of each service succeeded, by commune (probe_success).",
                            "Kiểm tra mỗi dịch vụ thành công hay không, theo xã (probe_success)."),
                       [Q(q.PROBE_UP_BY_SERVICE, "{{commune}} {{service}}")], unit="none",
                       steps=((None, "red"), (1, "green")), mappings=[UP_DOWN], w=16, h=10),
        row(Text("Response time", "Thời gian phản hồi")),
        timeseries(Text("Response time phases", "Các giai đoạn phản hồi"),
                   Text("Where the time of an HTTP check goes: resolve (DNS), connect (TCP), tls, processing "
                        "(server), transfer. Slow 'processing' is the server; slow 'connect' is the network.",
                        "Thời gian của một lần kiểm tra HTTP: resolve (DNS), connect (TCP), tls, processing (máy chủ xử lý), "
                        "transfer (truyền dữ liệu). 'processing' chậm là do máy chủ; 'connect' chậm là do mạng."),
                   [Q(q.HTTP_PHASES, "{{service}} {{phase}}")], unit="s", steps=above(1, 3), stack=True, min=0, w=12),
        timeseries(Text("Total check duration", "Tổng thời gian kiểm tra"),
                   Text("How long each check took from start to end (probe_duration_seconds).",
                        "Thời gian của mỗi lần kiểm tra từ đầu đến cuối (probe_duration_seconds)."),
                   [Q(q.PROBE_DURATION_BY_SERVICE, "{{service}}")], unit="s", steps=above(2, 5), min=0, w=12),
        timeseries(Text("DNS lookup time", "Thời gian tra cứu DNS"),
                   Text("Time the DNS checks took to get an answer.", "Thời gian các lần kiểm tra DNS nhận được trả lời."),
                   [Q(q.DNS_LOOKUP, "{{service}}")], unit="s", steps=above(0.2, 1), min=0, w=12),
        table(Text("HTTP status", "Mã trạng thái HTTP"),
              Text("Last HTTP status code of each service, by commune (0 when no response).",
                   "Mã trạng thái HTTP gần nhất của mỗi dịch vụ, theo xã (0 khi không có phản hồi)."),
              [Q(q.HTTP_STATUS)], unit="none", steps=((None, "red"), (200, "green"), (400, "red")), w=12,
              columns={"service": Text("Service", "Dịch vụ"), "commune": Text("Commune", "Mã xã"),
                       "Value": Text("Status code", "Mã trạng thái")},
              cell_overrides=[column(Text("Status code", "Mã trạng thái"), cell="color-text")]),
        row(Text("Certificates", "Chứng thư số")),
        table(Text("Certificate expiry", "Hạn chứng thư số"),
              Text("Time until the earliest TLS certificate of each HTTPS service expires.",
                   "Thời gian còn lại đến khi chứng thư TLS sớm nhất của mỗi dịch vụ HTTPS hết hạn."),
              [Q(q.CERT_EXPIRY)], unit="s", steps=below(7 * 86400, 30 * 86400), w=24, h=8,
              columns={"service": Text("Service", "Dịch vụ"), "Value": Text("Expires in", "Hết hạn sau")},
              cell_overrides=[column(Text("Expires in", "Hết hạn sau"), cell="color-background")]),
    ]
    return dashboard(
        NAME, lang, Text("Software availability", "Tính sẵn sàng của phần mềm"),
        Text("Availability of the administrative software by service and commune (1/7/30 days), response time "
             "phases and certificate expiry.",
             "Tính sẵn sàng của phần mềm hành chính theo dịch vụ và xã (1/7/30 ngày), các giai đoạn phản hồi và "
             "hạn chứng thư số."),
        [variables.commune(), variables.service()], items, tags=["software"], time_from="now-7d")
