"""2. One commune: every device with its status, the network chain, printers and UPS."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import HOP_ORDER, PRINTER_STATUS, UP_DOWN, YES_NO_BAD, device_link
from dashboards.model import (OK, Q, Text, above, bargauge, below, column, dashboard, row, stat, table,
                              timeseries)

NAME = "commune"


def build(lang: str) -> dict:
    items = [
        row(Text("Devices", "Thiết bị")),
        table(Text("Devices and status", "Thiết bị và trạng thái"),
              Text("Every inventoried device of the commune: up when its agent pushed recently (PCs) or it "
                   "answers SNMP (printers, routers, UPSes). The links open the device's dashboard.",
                   "Mọi thiết bị trong danh mục của xã: hoạt động khi agent vừa gửi dữ liệu (máy tính) hoặc thiết bị "
                   "trả lời SNMP (máy in, router, bộ lưu điện). Liên kết mở bảng điều khiển của thiết bị."),
              [Q(q.with_dashboard(q.DEVICE_STATUS))], unit="none", steps=OK, w=24, h=10,
              hide=("job", "instance"), sort=(Text("Status", "Trạng thái"), False),
              columns={"device": Text("Device", "Thiết bị"), "kind": Text("Kind", "Loại"),
                       "model": Text("Model", "Model"), "location": Text("Location", "Vị trí"),
                       "agent": "agent", "target": "target", "Value": Text("Status", "Trạng thái"),
                       "dashboard": "dashboard"},
              cell_overrides=[
                  column(Text("Status", "Trạng thái"), mappings=[UP_DOWN], cell="color-background",
                         steps=below(1, 1)),
                  column(Text("Device", "Thiết bị"), links=[device_link(lang)]),
                  column("dashboard", hidden=True)]),
        stat(Text("Agents silent", "Agent im lặng"),
             Text("Agents of this commune that stopped pushing.", "Số agent của xã ngừng gửi dữ liệu."),
             [Q(q.AGENTS_SILENT)], unit="short", steps=above(1, 3)),
        stat(Text("Devices down", "Thiết bị mất kết nối"),
             Text("Inventoried devices not reporting.", "Số thiết bị trong danh mục không phản hồi."),
             [Q(q.DEVICES_DOWN)], unit="short", steps=above(1, 3)),
        stat(Text("Firing alerts", "Cảnh báo đang kích hoạt"),
             Text("Alerts firing now for this commune.", "Số cảnh báo đang kích hoạt của xã."),
             [Q(q.ALERTS_FIRING)], unit="short", steps=above(1, 5)),
        table(Text("Agent inputs", "Các nguồn thu thập của agent"),
              Text("Whether each input of each agent finished its last collection (1) or failed (0).",
                   "Mỗi nguồn thu thập của mỗi agent lần gần nhất thành công (1) hay lỗi (0)."),
              [Q(q.INPUT_SUCCESS)], unit="none", steps=below(1, 1), w=12, h=8,
              columns={"agent": "agent", "input": Text("Input", "Nguồn"), "Value": Text("Success", "Thành công")},
              hide=("commune",),
              cell_overrides=[column(Text("Success", "Thành công"), mappings=[UP_DOWN], cell="color-background")]),
        row(Text("Network chain: LAN, gateway, ISP, upstream", "Chuỗi mạng: LAN, gateway, nhà mạng, upstream")),
        timeseries(Text("Round-trip time by hop", "Độ trễ theo chặng"),
                   Text("Average ICMP round-trip time from the office PCs to each hop. ", "Độ trễ ICMP trung bình từ "
                        "máy tính của cơ quan tới từng chặng. ") + HOP_ORDER,
                   [Q(q.RTT_BY_HOP, "{{hop}}")], unit="s", steps=above(0.1, 0.3), min=0, w=8),
        timeseries(Text("Packet loss by hop", "Mất gói theo chặng"),
                   Text("Average ICMP packet loss to each hop: loss that starts at a hop points at that link. ",
                        "Tỷ lệ mất gói ICMP tới từng chặng: mất gói bắt đầu từ chặng nào thì lỗi nằm ở đoạn đó. ")
                   + HOP_ORDER,
                   [Q(q.LOSS_BY_HOP, "{{hop}}")], unit="percentunit", steps=above(0.02, 0.1), min=0, max=1, w=8),
        timeseries(Text("Jitter by hop", "Độ biến thiên độ trễ theo chặng"),
                   Text("Standard deviation of the round-trip times to each hop. ",
                        "Độ lệch chuẩn của độ trễ tới từng chặng. ") + HOP_ORDER,
                   [Q(q.JITTER_BY_HOP, "{{hop}}")], unit="s", steps=above(0.03, 0.1), min=0, w=8),
        row(Text("Printers", "Máy in")),
        bargauge(Text("Toner and supplies", "Mực và vật tư"),
                 Text("Level of each printer supply (toner, drum, waste box) from the Printer-MIB.",
                      "Mức còn lại của từng vật tư máy in (mực, trống, hộp mực thải) theo Printer-MIB."),
                 [Q(q.supply_level(q.C), "{{target}} {{description}}")],
                 unit="percentunit", steps=below(0.1, 0.2), min=0, max=1, w=12, h=10),
        table(Text("Printer state", "Trạng thái máy in"),
              Text("Status, number of error conditions reported now, and answers to SNMP, per printer.",
                   "Trạng thái, số lỗi đang báo và phản hồi SNMP của từng máy in."),
              [Q(q.printer_status(q.C)),
               Q(q.printer_errors_active(q.C)),
               Q(q.printer_up(q.C))],
              unit="none", steps=OK, merge=True, w=12, h=10, hide=("commune", "agent", "job", "instance"),
              columns={"target": Text("Printer", "Máy in"), "Value #A": Text("Status", "Trạng thái"),
                       "Value #B": Text("Errors", "Số lỗi"), "Value #C": Text("SNMP", "SNMP")},
              cell_overrides=[column(Text("Status", "Trạng thái"), mappings=[PRINTER_STATUS], cell="color-text"),
                              column(Text("Errors", "Số lỗi"), steps=above(1, 2), cell="color-background"),
                              column(Text("SNMP", "SNMP"), mappings=[UP_DOWN], cell="color-background",
                                     steps=below(1, 1))]),
        row(Text("UPS", "Bộ lưu điện")),
        stat(Text("Battery charge", "Dung lượng pin"),
             Text("Remaining battery charge of each UPS.", "Dung lượng pin còn lại của mỗi bộ lưu điện."),
             [Q(q.ups("battery_charge_ratio", q.C), "{{target}}")], unit="percentunit",
             steps=below(0.3, 0.6), w=6, h=5),
        stat(Text("Runtime on battery", "Thời gian chạy bằng pin"),
             Text("Estimated runtime on battery at the present load.",
                  "Thời gian ước tính chạy bằng pin với tải hiện tại."),
             [Q(q.ups("battery_runtime_seconds", q.C), "{{target}}")], unit="s",
             steps=below(300, 900), w=6, h=5),
        stat(Text("On battery", "Đang chạy pin"),
             Text("Whether the UPS runs on battery (mains power lost).",
                  "Bộ lưu điện có đang chạy bằng pin không (mất điện lưới)."),
             [Q(q.ups("on_battery", q.C), "{{target}}")], unit="none",
             steps=above(1, 1), mappings=[YES_NO_BAD], w=6, h=5),
        stat(Text("Battery needs replacing", "Pin cần thay"),
             Text("The UPS reports that its battery must be replaced.", "Bộ lưu điện báo pin cần được thay."),
             [Q(q.ups("battery_replace", q.C), "{{target}}")], unit="none",
             steps=above(1, 1), mappings=[YES_NO_BAD], w=6, h=5),
        timeseries(Text("UPS load and battery charge", "Tải và dung lượng pin của bộ lưu điện"),
                   Text("Output load against the UPS's capacity, and battery charge, over time.",
                        "Tải đầu ra so với công suất của bộ lưu điện, và dung lượng pin, theo thời gian."),
                   [Q(q.ups("load_ratio", q.C), "{{target}} load"),
                    Q(q.ups("battery_charge_ratio", q.C), "{{target}} charge")],
                   unit="percentunit", steps=above(0.8, 0.95), min=0, max=1),
        timeseries(Text("Mains voltage", "Điện áp lưới"),
                   Text("Input voltage the UPS sees: drops and spikes explain restarts of PCs and routers.",
                        "Điện áp đầu vào của bộ lưu điện: sụt áp hoặc tăng áp giải thích việc máy tính và router "
                        "khởi động lại."),
                   [Q(q.ups("input_voltage_volts", q.C), "{{target}}")], unit="volt",
                   steps=((None, "red"), (180, "green"), (250, "red"))),
    ]
    return dashboard(
        NAME, lang, Text("Commune", "Chi tiết xã/phường"),
        Text("One commune office: every device with its status, the LAN-gateway-ISP-upstream chain, "
             "printers' toner and errors, UPS.",
             "Một cơ quan xã/phường: mọi thiết bị và trạng thái, chuỗi mạng LAN-gateway-nhà mạng-upstream, "
             "mực và lỗi máy in, bộ lưu điện."),
        [variables.commune(multi=False)], items, tags=["commune"], time_from="now-6h")
