"""5. Network: latency, jitter and loss by hop and commune; router interfaces, errors, reboots."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import HOP_ORDER, IF_STATUS, UP_DOWN
from dashboards.model import (OK, Q, Text, above, column, dashboard, row, stat, state_timeline, table,
                              timeseries)

NAME = "network"


def build(lang: str) -> dict:
    items = [
        row(Text("Hops", "Các chặng")),
        timeseries(Text("Round-trip time by commune and hop", "Độ trễ theo xã và chặng"),
                   Text("Average ICMP round-trip time of the last probe. ", "Độ trễ ICMP trung bình của lần đo gần nhất. ")
                   + HOP_ORDER,
                   [Q(q.RTT_BY_COMMUNE_HOP, "{{commune}} {{hop}}")], unit="s", steps=above(0.1, 0.3), min=0, w=12),
        timeseries(Text("Worst round-trip time by commune and hop", "Độ trễ lớn nhất theo xã và chặng"),
                   Text("Longest ICMP round-trip time of the last probe. ", "Độ trễ ICMP lớn nhất của lần đo gần nhất. ")
                   + HOP_ORDER,
                   [Q(q.RTT_MAX_BY_COMMUNE_HOP, "{{commune}} {{hop}}")], unit="s", steps=above(0.2, 0.5), min=0,
                   w=12),
        timeseries(Text("Jitter by commune and hop", "Độ biến thiên độ trễ theo xã và chặng"),
                   Text("Standard deviation of the round-trip times (like ping's mdev): high jitter breaks calls "
                        "and slows web forms. ",
                        "Độ lệch chuẩn của độ trễ (như mdev của ping): biến thiên cao làm gián đoạn cuộc gọi và "
                        "làm chậm biểu mẫu web. ") + HOP_ORDER,
                   [Q(q.JITTER_BY_COMMUNE_HOP, "{{commune}} {{hop}}")], unit="s", steps=above(0.03, 0.1), min=0,
                   w=12),
        timeseries(Text("Packet loss by commune and hop", "Mất gói theo xã và chặng"),
                   Text("Share of echo requests without a reply. ", "Tỷ lệ gói ping không có phản hồi. ") + HOP_ORDER,
                   [Q(q.LOSS_BY_COMMUNE_HOP, "{{commune}} {{hop}}")], unit="percentunit", steps=above(0.02, 0.1),
                   min=0, max=1, w=12),
        state_timeline(Text("Reachability by target", "Khả năng kết nối theo đích"),
                       Text("Whether each ICMP target answered (probe_success).",
                            "Mỗi đích ICMP có trả lời hay không (probe_success)."),
                       [Q(q.ICMP_UP_BY_TARGET, "{{commune}} {{hop}} {{target}}")], unit="none", steps=((None, "red"), (1, "green")),
                       mappings=[UP_DOWN], w=24, h=8),
        row(Text("Routers", "Bộ định tuyến")),
        timeseries(Text("Interface traffic in", "Lưu lượng vào theo cổng"),
                   Text("Bits received per second on each router interface (ifHCInOctets).",
                        "Số bit nhận mỗi giây trên từng cổng của router (ifHCInOctets)."),
                   [Q(q.IF_IN_BPS, "{{target}} {{if_name}}")], unit="bps", steps=OK, min=0, w=12),
        timeseries(Text("Interface traffic out", "Lưu lượng ra theo cổng"),
                   Text("Bits sent per second on each router interface (ifHCOutOctets).",
                        "Số bit gửi mỗi giây trên từng cổng của router (ifHCOutOctets)."),
                   [Q(q.IF_OUT_BPS, "{{target}} {{if_name}}")], unit="bps", steps=OK, min=0, w=12),
        timeseries(Text("Interface errors", "Lỗi trên cổng"),
                   Text("Input and output errors per second on each interface: cabling, duplex or a failing port.",
                        "Số lỗi vào và ra mỗi giây trên từng cổng: do cáp, duplex hoặc cổng hỏng."),
                   [Q(q.IF_ERRORS, "{{target}} {{if_name}}")], unit="pps", steps=above(0.01, 1), min=0, w=12),
        timeseries(Text("Interface discards", "Gói bị loại trên cổng"),
                   Text("Packets discarded per second on each interface (congestion or full buffers).",
                        "Số gói bị loại mỗi giây trên từng cổng (nghẽn hoặc đầy bộ đệm)."),
                   [Q(q.IF_DISCARDS, "{{target}} {{if_name}}")], unit="pps", steps=above(0.01, 1), min=0, w=12),
        table(Text("Interfaces", "Các cổng"),
              Text("Operational status (ifOperStatus) and speed of each router interface.",
                   "Trạng thái hoạt động (ifOperStatus) và tốc độ của từng cổng router."),
              [Q(q.IF_OPER_STATUS), Q(q.IF_SPEED)], unit="none", steps=OK, merge=True, w=16, h=10,
              hide=("agent", "job", "instance"),
              columns={"commune": Text("Commune", "Mã xã"), "target": Text("Router", "Router"),
                       "if_index": "ifIndex", "if_name": Text("Interface", "Cổng"),
                       "Value #A": Text("Status", "Trạng thái"), "Value #B": Text("Speed", "Tốc độ")},
              cell_overrides=[column(Text("Status", "Trạng thái"), mappings=[IF_STATUS], cell="color-text"),
                              column(Text("Speed", "Tốc độ"), unit="bps")]),
        stat(Text("Router uptime", "Thời gian chạy của router"),
             Text("Time since each router last restarted (sysUpTime).", "Thời gian từ lần khởi động lại gần nhất (sysUpTime)."),
             [Q(q.ROUTER_UPTIME, "{{target}}")], unit="s", steps=((None, "orange"), (86400, "green")), w=4, h=10),
        stat(Text("Router reboots in range", "Số lần router khởi động lại"),
             Text("How many times each router restarted in the time range (uptime resets).",
                  "Số lần router khởi động lại trong khoảng thời gian (uptime bị đặt lại)."),
             [Q(q.ROUTER_REBOOTS, "{{target}}")], unit="short", steps=above(1, 3), w=4, h=10),
    ]
    return dashboard(
        NAME, lang, Text("Network", "Mạng"),
        Text("Latency, jitter and loss by hop and commune; router interface traffic, errors and reboots.",
             "Độ trễ, biến thiên và mất gói theo chặng và xã; lưu lượng, lỗi và khởi động lại của router."),
        [variables.commune(), variables.hop(), variables.router()], items, tags=["network"], time_from="now-6h")
