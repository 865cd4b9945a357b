"""7. Hardware to replace: devices ranked by score with the dominant reason and every factor."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import device_link
from dashboards.model import (OK, Q, Text, above, bargauge, below, column, dashboard, row, table, timeseries,
                              uid, value_map)

NAME = "replacement"

# The factors of collector/rules/replacement.yml (label ``factor``), in the design's order.
FACTORS = (
    ("age", Text("Age vs rated life", "Tuổi so với tuổi thọ")),
    ("memory_pressure", Text("Memory pressure", "Thiếu bộ nhớ")),
    ("cpu_saturation", Text("CPU saturation", "CPU quá tải")),
    ("disk_health", Text("Disk health", "Sức khỏe ổ đĩa")),
    ("unexpected_restarts", Text("Unexpected restarts", "Khởi động lại bất thường")),
    ("slow_boot", Text("Slow boot", "Khởi động chậm")),
    ("hdd", Text("HDD on a slow PC", "Ổ HDD trên máy yếu")),
    ("battery_wear", Text("Battery wear", "Chai pin")),
    ("pages", Text("Pages vs rated life", "Số trang so với tuổi thọ")),
    ("error_time", Text("Error time per 1,000 pages", "Thời gian lỗi mỗi 1.000 trang")),
    ("offline", Text("Offline time", "Thời gian mất kết nối")),
    ("reboots", Text("Reboots", "Khởi động lại")),
    ("interface_errors", Text("Interface errors", "Lỗi cổng mạng")),
    ("gateway_loss", Text("Gateway packet loss", "Mất gói tới gateway")),
    ("battery_replace", Text("Battery replace flag", "Báo thay pin")),
    ("battery_runtime", Text("Battery runtime", "Thời gian lưu điện")),
)
SCORE_STEPS = above(40, q.CANDIDATE_SCORE)
RATED_LIFE_OF = value_map({"device": (Text("device age", "tuổi thiết bị"), "orange"),
                           "pages": (Text("printer pages", "số trang máy in"), "blue"),
                           "battery": (Text("UPS battery", "ắc quy UPS"), "purple")})
FACTOR_STEPS = above(0.5, 0.8)


def build(lang: str) -> dict:
    factor_columns = {f"Value #{chr(ord('C') + i)}": text for i, (_, text) in enumerate(FACTORS)}
    items = [
        row(Text("Ranking", "Xếp hạng")),
        table(Text("Devices to replace, worst first", "Thiết bị cần thay, điểm cao nhất trước"),
              Text("Replacement score (0-100) of each device with its dominant reason, every factor (0 = fine, "
                   "1 = worst), age and model. The score and factors come from the recording rules; click a "
                   "device to open its dashboard.",
                   "Điểm thay thế (0-100) của từng thiết bị cùng lý do chính, từng yếu tố (0 = tốt, 1 = tệ nhất), "
                   "tuổi và model. Điểm và các yếu tố lấy từ luật ghi; bấm vào thiết bị để mở bảng điều khiển của nó."),
              [Q(q.SCORE_TABLE), Q(q.DEVICE_AGE)] + [Q(q.factor(name)) for name, _ in FACTORS],
              unit="none", steps=OK, merge=True, w=24, h=14, sort=(Text("Score", "Điểm"), True),
              hide=("job", "instance", "location"),
              columns={"commune": Text("Commune", "Mã xã"), "device": Text("Device", "Thiết bị"),
                       "kind": Text("Kind", "Loại"), "model": Text("Model", "Model"),
                       "Value #A": Text("Score", "Điểm"), "reason": Text("Dominant reason", "Lý do chính"),
                       "Value #B": Text("Age", "Tuổi"), **factor_columns,
                       "agent": "agent", "target": "target", "dashboard": "dashboard"},
              cell_overrides=[
                  column(Text("Device", "Thiết bị"), links=[device_link(lang)]),
                  column("dashboard", hidden=True),
                  column(Text("Score", "Điểm"), steps=SCORE_STEPS, cell="color-background", decimals=0),
                  column(Text("Age", "Tuổi"), unit="s", decimals=1),
                  *[column(text, steps=FACTOR_STEPS, cell="color-text", decimals=2) for _, text in FACTORS]]),
        row(Text("What to do", "Cần làm gì")),
        table(Text("Recommended actions", "Đề xuất xử lý"),
              Text("What each flagged device needs, chosen by the reviewed rules: replace the device, an SSD for "
                   "its disk, more memory, a new battery or a printer maintenance kit. A failing disk, growing bad "
                   "sectors, a UPS asking for a battery, overdue printer maintenance or a router restarting many "
                   "times a day flag a device at once (score 100). The report prices them into a budget.",
                   "Việc cần làm với từng thiết bị, theo các quy tắc đã rà soát: thay thiết bị, thay ổ SSD, nâng "
                   "cấp RAM, thay pin/ắc quy hoặc bộ bảo dưỡng máy in. Ổ cứng báo hỏng, sector lỗi tăng, UPS báo "
                   "thay ắc quy, máy in quá hạn bảo dưỡng hoặc bộ định tuyến khởi động lại nhiều lần trong ngày "
                   "được đánh dấu ngay (điểm 100). Báo cáo tính thành dự toán kinh phí."),
              [Q(q.ACTION_TABLE)], unit="none", steps=OK, w=16, h=10, sort=(Text("Score", "Điểm"), True),
              columns={"commune": Text("Commune", "Mã xã"), "device": Text("Device", "Thiết bị"),
                       "kind": Text("Kind", "Loại"), "action": Text("Action", "Đề xuất"),
                       "reason": Text("Reason", "Lý do"), "Value": Text("Score", "Điểm")},
              cell_overrides=[column(Text("Score", "Điểm"), steps=SCORE_STEPS, cell="color-background", decimals=0)]),
        bargauge(Text("Actions by kind", "Số đề xuất theo loại"),
                 Text("How many of each action, by device kind: the quantities of the purchase.",
                      "Số lượng từng đề xuất theo loại thiết bị: số lượng cần mua."),
                 [Q(q.ACTIONS_BY_KIND, "{{action}} {{kind}}")], unit="short", steps=OK, min=0, w=8, h=10),
        row(Text("Why", "Lý do")),
        bargauge(Text("Score by device", "Điểm theo thiết bị"),
                 Text("The twenty highest replacement scores.", "Hai mươi điểm thay thế cao nhất."),
                 [Q(q.TOP_SCORES, "{{commune}} {{device}}")], unit="none", steps=SCORE_STEPS, min=0, max=100,
                 w=12, h=12),
        bargauge(Text("Candidates by dominant reason", "Thiết bị nên thay theo lý do chính"),
                 Text(f"Devices scoring {q.CANDIDATE_SCORE} or more, counted by their dominant reason.",
                      f"Số thiết bị có điểm từ {q.CANDIDATE_SCORE} trở lên, đếm theo lý do chính."),
                 [Q(q.CANDIDATES_BY_REASON, "{{reason}}")], unit="short", steps=OK, min=0, w=12, h=12),
        timeseries(Text("Score over time", "Điểm theo thời gian"),
                   Text("How the scores of the ten worst devices evolved.", "Diễn biến điểm của mười thiết bị tệ nhất."),
                   [Q(q.TOP_SCORES_OVER_TIME, "{{commune}} {{device}}")], unit="none", steps=SCORE_STEPS, min=0,
                   max=100, w=24),
        row(Text("Forecasts", "Dự báo")),
        table(Text("Reaching rated life", "Sắp hết tuổi thọ định mức"),
              Text("Time until each device reaches its rated life (the 50 soonest; purchase date, or the BIOS "
                   "date where the fleet file has none, plus the rated life of the file or of its kind), until a "
                   "printer reaches its rated lifetime pages at its page rate of the last 30 days, "
                   "and until a UPS battery reaches its rated life (3 years from the UPS's purchase date: no UPS "
                   "reports when its battery was changed). 0 means past it.",
                   "Thời gian đến khi thiết bị hết tuổi thọ (50 thiết bị sớm nhất; ngày mua, hoặc ngày BIOS nếu "
                   "danh mục không có, cộng tuổi thọ), đến khi máy in đạt số trang định mức theo tốc độ in 30 ngày qua, và đến khi ắc quy "
                   "UPS hết tuổi thọ định mức (3 năm kể từ ngày mua UPS: UPS không báo ngày thay ắc quy). "
                   "0 nghĩa là đã quá định mức."),
              [Q(q.RATED_LIFE_TIME_LEFT)], unit="s", steps=below(90 * 86400, 365 * 86400), w=12, h=10,
              sort=(Text("Time left", "Thời gian còn lại"), False), hide=("job", "instance"),
              columns={"commune": Text("Commune", "Mã xã"), "device": Text("Device", "Thiết bị"),
                       "kind": Text("Kind", "Loại"), "what": Text("Rated life of", "Định mức"),
                       "Value": Text("Time left", "Thời gian còn lại")},
              cell_overrides=[
                  column(Text("Rated life of", "Định mức"), mappings=[RATED_LIFE_OF]),
                  column(Text("Time left", "Thời gian còn lại"), unit="s", steps=below(90 * 86400, 365 * 86400),
                         cell="color-background", decimals=1)]),
        table(Text("System disks filling", "Ổ hệ thống sắp đầy"),
              Text("Time until the system filesystem of a PC (C: or /) is full at the pace it filled since its "
                   "last cleanup (trend over the last 7, 3 or 1 days), and how much it takes per day. Only disks "
                   "that fill are listed; a year or more reads 365 days.",
                   "Thời gian đến khi ổ hệ thống của máy tính (C: hoặc /) đầy theo tốc độ kể từ lần dọn dẹp gần "
                   "nhất (xu hướng 7, 3 hoặc 1 ngày qua), và dung lượng bị chiếm mỗi ngày. Chỉ liệt kê ổ đang đầy "
                   "dần; từ một năm trở lên hiển thị 365 ngày."),
              [Q(q.DISK_TIME_LEFT), Q(q.DISK_USE_PER_DAY)], unit="s", steps=below(7 * 86400, 30 * 86400),
              merge=True, w=12, h=10, sort=(Text("Time left", "Thời gian còn lại"), False),
              hide=("agent", "job", "instance"),
              columns={"commune": Text("Commune", "Mã xã"), "device": Text("Device", "Thiết bị"),
                       "mountpoint": Text("Mount point", "Điểm gắn"), "Value #A": Text("Time left", "Thời gian còn lại"),
                       "Value #B": Text("Taken per day", "Chiếm mỗi ngày")},
              cell_overrides=[
                  column(Text("Time left", "Thời gian còn lại"), unit="s", steps=below(7 * 86400, 30 * 86400),
                         cell="color-background", decimals=1),
                  column(Text("Taken per day", "Chiếm mỗi ngày"), unit="bytes")]),
    ]
    return dashboard(
        NAME, lang, Text("Hardware to replace", "Thiết bị cần thay thế"),
        Text("Evidence for equipment purchases: devices ranked by replacement score, with the dominant reason, "
             "each factor, age and model.",
             "Căn cứ đề xuất mua sắm: thiết bị xếp theo điểm thay thế, kèm lý do chính, từng yếu tố, tuổi và model."),
        [variables.commune(), variables.kind()], items, tags=["replacement"], time_from="now-30d",
        links=[{"type": "link", "title": Text("Fleet overview", "Tổng quan toàn tỉnh"),
                "url": f"/d/{uid('fleet', lang)}", "keepTime": True, "includeVars": True, "icon": "dashboard"}])
