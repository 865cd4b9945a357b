"""4. Printers: supplies, pages per day, error states over time, the most jammed."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import PRINTER_STATUS, UP_DOWN
from dashboards.model import (OK, Q, Text, above, bargauge, below, column, dashboard, row, state_timeline,
                              table, timeseries, value_map)

NAME = "printers"

ERROR_STATE = value_map({"0": (Text("ok", "bình thường"), "green"), "1": (Text("active", "đang lỗi"), "red")})


def build(lang: str) -> dict:
    items = [
        row(Text("Supplies", "Vật tư")),
        bargauge(Text("Supply levels", "Mức vật tư"),
                 Text("Level of each supply (toner, drum, waste toner box) against its capacity, from "
                      "prtMarkerSuppliesLevel / prtMarkerSuppliesMaxCapacity. Supplies that only report "
                      "'some left' are not shown.",
                      "Mức còn lại của từng vật tư (mực, trống, hộp mực thải) so với dung lượng, theo "
                      "prtMarkerSuppliesLevel / prtMarkerSuppliesMaxCapacity. Vật tư chỉ báo 'còn' không được hiển thị."),
                 [Q(q.supply_level(q.PRINTER), "{{target}} {{description}}")], unit="percentunit",
                 steps=below(0.1, 0.2), min=0, max=1, w=12, h=12),
        table(Text("Printers", "Máy in"),
              Text("Status (hrPrinterStatus), lowest supply, lifetime pages and whether the printer answers SNMP.",
                   "Trạng thái (hrPrinterStatus), vật tư thấp nhất, tổng số trang đã in và phản hồi SNMP."),
              [Q(q.printer_status(q.PRINTER)), Q(q.SUPPLY_LEVEL_LOWEST), Q(q.PAGES_TOTAL), Q(q.printer_up(q.PRINTER))],
              unit="none", steps=OK, merge=True, w=12, h=12, hide=("agent", "job", "instance"),
              columns={"commune": Text("Commune", "Mã xã"), "target": Text("Printer", "Máy in"),
                       "Value #A": Text("Status", "Trạng thái"), "Value #B": Text("Lowest supply", "Vật tư thấp nhất"),
                       "Value #C": Text("Pages", "Số trang"), "Value #D": Text("SNMP", "SNMP")},
              cell_overrides=[
                  column(Text("Status", "Trạng thái"), mappings=[PRINTER_STATUS], cell="color-text"),
                  column(Text("Lowest supply", "Vật tư thấp nhất"), unit="percentunit", steps=below(0.1, 0.2),
                         cell="color-background"),
                  column(Text("Pages", "Số trang"), unit="short"),
                  column(Text("SNMP", "SNMP"), mappings=[UP_DOWN], steps=below(1, 1), cell="color-background")]),
        row(Text("Forecasts", "Dự báo")),
        table(Text("Supplies running out", "Vật tư sắp hết"),
              Text("Time until each supply runs out at the pace it has been used since its last refill "
                   "(collector/rules/forecasts.yml: the level's trend over the last 7, 3 or 1 days without a "
                   "refill, per page printed where the printer prints), its use per day and level now. Only "
                   "supplies whose level falls are listed; a year or more reads 365 days.",
                   "Thời gian đến khi từng vật tư hết theo mức tiêu hao kể từ lần thay gần nhất "
                   "(collector/rules/forecasts.yml: xu hướng mức vật tư trong 7, 3 hoặc 1 ngày gần nhất không có "
                   "lần thay, tính theo số trang in nếu máy có in), mức dùng mỗi ngày và mức còn lại. Chỉ liệt kê "
                   "vật tư đang giảm; từ một năm trở lên hiển thị 365 ngày."),
              [Q(q.SUPPLY_TIME_LEFT), Q(q.SUPPLY_USE_PER_DAY), Q(q.SUPPLY_LEVEL_FORECAST)],
              unit="s", steps=below(7 * 86400, 14 * 86400), merge=True, w=12, h=10,
              sort=(Text("Time left", "Thời gian còn lại"), False),
              hide=("agent", "job", "instance", "index", "type", "class"),
              columns={"commune": Text("Commune", "Mã xã"), "target": Text("Printer", "Máy in"),
                       "description": Text("Supply", "Vật tư"), "Value #A": Text("Time left", "Thời gian còn lại"),
                       "Value #B": Text("Use per day", "Dùng mỗi ngày"), "Value #C": Text("Level", "Mức còn")},
              cell_overrides=[
                  column(Text("Time left", "Thời gian còn lại"), unit="s", steps=below(7 * 86400, 14 * 86400),
                         cell="color-background", decimals=1),
                  column(Text("Use per day", "Dùng mỗi ngày"), unit="percentunit", decimals=2),
                  column(Text("Level", "Mức còn"), unit="percentunit", steps=below(0.1, 0.2))]),
        timeseries(Text("Supply time left over time", "Thời gian còn lại của vật tư theo thời gian"),
                   Text("How each supply's forecast evolved: it falls as the supply is used, and starts again "
                        "a day after a refill.",
                        "Diễn biến dự báo của từng vật tư: giảm dần khi sử dụng, và bắt đầu lại một ngày sau "
                        "khi thay hộp mực."),
                   [Q(q.SUPPLY_TIME_LEFT, "{{target}} {{description}}")], unit="s",
                   steps=below(7 * 86400, 14 * 86400), min=0, w=12, h=10),
        row(Text("Usage", "Sử dụng")),
        timeseries(Text("Pages per day", "Số trang mỗi ngày"),
                   Text("Pages printed in the 24 hours before each point (prtMarkerLifeCount).",
                        "Số trang in trong 24 giờ trước mỗi thời điểm (prtMarkerLifeCount)."),
                   [Q(q.PAGES_PER_DAY, "{{commune}} {{target}}")], unit="short", steps=OK, min=0, w=12),
        bargauge(Text("Pages in the time range", "Số trang trong khoảng thời gian"),
                 Text("Pages printed by each printer in the selected time range.",
                      "Số trang mỗi máy in đã in trong khoảng thời gian đã chọn."),
                 [Q(q.PAGES_IN_RANGE, "{{commune}} {{target}}")], unit="short", steps=OK, min=0, w=12),
        row(Text("Errors", "Lỗi")),
        state_timeline(Text("Error states over time", "Trạng thái lỗi theo thời gian"),
                       Text("Conditions reported in hrPrinterDetectedErrorState: jam, door open, no toner, service "
                            "requested ...",
                            "Các lỗi báo trong hrPrinterDetectedErrorState: kẹt giấy, mở nắp, hết mực, cần bảo trì ..."),
                       [Q(q.PRINTER_ERRORS, "{{target}} {{condition}}")], unit="none", steps=above(1, 1),
                       mappings=[ERROR_STATE], w=24, h=12),
        bargauge(Text("Most jammed printers", "Máy in kẹt giấy nhiều nhất"),
                 Text("Share of the time range each printer reported a paper jam, the ten worst.",
                      "Tỷ lệ thời gian mỗi máy in báo kẹt giấy trong khoảng thời gian, mười máy tệ nhất."),
                 [Q(q.MOST_JAMMED, "{{commune}} {{target}}")], unit="percentunit", steps=above(0.01, 0.05),
                 min=0, max=1, w=12),
        table(Text("Printer alerts", "Cảnh báo của máy in"),
              Text("The printer's own alert table (prtAlertTable): severity, group, code and description.",
                   "Bảng cảnh báo của chính máy in (prtAlertTable): mức độ, nhóm, mã và mô tả."),
              [Q(q.PRINTER_ALERTS)], unit="none", steps=OK, w=12,
              hide=("Value", "agent", "job", "instance", "index"),
              columns={"commune": Text("Commune", "Mã xã"), "target": Text("Printer", "Máy in"),
                       "severity": Text("Severity", "Mức độ"), "group": Text("Group", "Nhóm"),
                       "code": Text("Code", "Mã"), "description": Text("Description", "Mô tả")}),
    ]
    return dashboard(
        NAME, lang, Text("Printers", "Máy in"),
        Text("Printers and copiers over SNMP: supplies, pages per day, error states over time, most jammed.",
             "Máy in và máy photocopy qua SNMP: vật tư, số trang mỗi ngày, trạng thái lỗi theo thời gian, máy kẹt giấy nhiều nhất."),
        [variables.commune(), variables.printer()], items, tags=["printers"], time_from="now-7d")
