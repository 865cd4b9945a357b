"""7. Hardware to replace: devices ranked by score with the dominant reason and every factor."""
from __future__ import annotations

from dashboards import queries as q
from dashboards import variables
from dashboards.boards.common import device_link
from dashboards.model import OK, Q, Text, above, bargauge, below, column, dashboard, row, table, timeseries, uid

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
        table(Text("Days until rated life, soonest first", "Số ngày đến hết tuổi thọ, sớm nhất trước"),
              Text("Days until each device reaches its rated life (purchase date, or the BIOS date where the "
                   "fleet file has none, plus the rated life of the file or of its kind; forecasts.yml): what "
                   "next year's purchase plan must hold.",
                   "Số ngày đến khi thiết bị hết tuổi thọ (ngày mua, hoặc ngày BIOS nếu danh mục không có, cộng "
                   "tuổi thọ; forecasts.yml): những gì kế hoạch mua sắm năm tới cần tính đến."),
              [Q(q.RATED_LIFE_WITHIN_A_YEAR)], unit="none", steps=below(90, 180), w=12, h=10,
              sort=(Text("Days", "Số ngày"), False),
              columns={"commune": Text("Commune", "Mã xã"), "device": Text("Device", "Thiết bị"),
                       "kind": Text("Kind", "Loại"), "Value": Text("Days", "Số ngày")},
              cell_overrides=[column(Text("Days", "Số ngày"), decimals=0)]),
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
    ]
    return dashboard(
        NAME, lang, Text("Hardware to replace", "Thiết bị cần thay thế"),
        Text("Evidence for equipment purchases: devices ranked by replacement score, with the dominant reason, "
             "each factor, age and model.",
             "Căn cứ đề xuất mua sắm: thiết bị xếp theo điểm thay thế, kèm lý do chính, từng yếu tố, tuổi và model."),
        [variables.commune(), variables.kind()], items, tags=["replacement"], time_from="now-30d",
        links=[{"type": "link", "title": Text("Fleet overview", "Tổng quan toàn tỉnh"),
                "url": f"/d/{uid('fleet', lang)}", "keepTime": True, "includeVars": True, "icon": "dashboard"}])
