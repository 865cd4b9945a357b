"""Words and number/date formats of the replacement report, in Vietnamese and English."""
from __future__ import annotations

import datetime as dt
from typing import Dict, Optional

LANGS = ("vi", "en")

_MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]

TEXT: Dict[str, Dict[str, str]] = {
    "title": {"vi": "Báo cáo đề xuất thay thế thiết bị CNTT",
              "en": "IT equipment replacement report"},
    "subtitle": {"vi": "Trung tâm Phục vụ hành chính công cấp xã — {period}",
                 "en": "Commune Public Administration Service Centers — {period}"},
    "generated": {"vi": "Lập ngày {date} từ dữ liệu giám sát ({source}).",
                  "en": "Generated on {date} from monitoring data ({source})."},
    "province_summary": {"vi": "Tổng hợp toàn tỉnh", "en": "Province summary"},
    "summary_intro": {
        "vi": "Điểm thay thế từ 0 (giữ lại) đến 100 (nên thay); từ {replace} điểm trở lên: đề xuất thay, "
              "từ {watch} điểm: theo dõi.",
        "en": "Replacement score from 0 (keep) to 100 (replace); {replace} and above: replace, "
              "{watch} and above: watch."},
    "kind": {"vi": "Loại thiết bị", "en": "Kind"},
    "devices": {"vi": "Số thiết bị", "en": "Devices"},
    "status_replace": {"vi": "Đề xuất thay", "en": "Replace"},
    "status_repair": {"vi": "Sửa/nâng cấp", "en": "Repair"},
    "status_watch": {"vi": "Theo dõi", "en": "Watch"},
    "status_ok": {"vi": "Tốt", "en": "Keep"},
    "status_nodata": {"vi": "Chưa có dữ liệu", "en": "No data"},
    "total": {"vi": "Tổng", "en": "Total"},
    "estimated": {"vi": "Ước tính cần thay: {n} thiết bị; cần sửa hoặc nâng cấp: {m} thiết bị.",
                  "en": "Estimated to replace: {n} devices; to repair or upgrade: {m} devices."},
    "action": {"vi": "Đề xuất", "en": "Action"},
    "budget": {"vi": "Dự toán kinh phí", "en": "Budget"},
    "budget_intro": {"vi": "Số lượng theo đề xuất của từng thiết bị; đơn giá theo bảng giá {source} "
                           "(rà soát {reviewed}), đã gồm VAT, chỉ để lập kế hoạch.",
                     "en": "Quantities from each device's recommended action; unit prices from the price table "
                           "{source} (reviewed {reviewed}), VAT included, for planning only."},
    "item": {"vi": "Hạng mục", "en": "Item"},
    "quantity": {"vi": "Số lượng", "en": "Quantity"},
    "unit_price": {"vi": "Đơn giá ({currency})", "en": "Unit price ({currency})"},
    "line_total": {"vi": "Thành tiền ({currency})", "en": "Amount ({currency})"},
    "budget_total": {"vi": "Tổng cộng", "en": "Total"},
    "no_price": {"vi": "chưa có đơn giá", "en": "no price"},
    "no_price_note": {"vi": "{n} hạng mục chưa có đơn giá trong bảng giá và không được tính vào tổng.",
                      "en": "{n} items have no price in the table and are left out of the total."},
    "no_actions": {"vi": "Không có đề xuất nào trong kỳ.", "en": "Nothing to buy in this period."},
    "commune": {"vi": "Xã/phường", "en": "Commune"},
    "ranked": {"vi": "Thiết bị theo thứ tự ưu tiên thay thế", "en": "Devices ranked for replacement"},
    "rank": {"vi": "Hạng", "en": "Rank"},
    "device": {"vi": "Thiết bị", "en": "Device"},
    "model": {"vi": "Model", "en": "Model"},
    "location": {"vi": "Vị trí", "en": "Location"},
    "age": {"vi": "Tuổi", "en": "Age"},
    "score": {"vi": "Điểm", "en": "Score"},
    "reason": {"vi": "Lý do chính", "en": "Main reason"},
    "status": {"vi": "Đánh giá", "en": "Status"},
    "evidence": {"vi": "Căn cứ", "en": "Evidence"},
    "factor": {"vi": "Yếu tố", "en": "Factor"},
    "value": {"vi": "Mức (0–1)", "en": "Level (0–1)"},
    "measured": {"vi": "Số liệu đo được", "en": "Measured"},
    "trend": {"vi": "Diễn biến theo ngày", "en": "Daily trend"},
    "no_data": {"vi": "không có dữ liệu", "en": "no data"},
    "years": {"vi": "{n} năm", "en": "{n} years"},
    "estimated_age": {"vi": " (ước tính theo ngày BIOS)", "en": " (estimated from the BIOS date)"},
    "software": {"vi": "Phần mềm nghiệp vụ: tỷ lệ sẵn sàng", "en": "Business software availability"},
    "service": {"vi": "Dịch vụ", "en": "Service"},
    "availability": {"vi": "Sẵn sàng", "en": "Available"},
    "response": {"vi": "Thời gian phản hồi TB", "en": "Mean response time"},
    "links": {"vi": "Chất lượng đường truyền", "en": "Link quality"},
    "hop": {"vi": "Chặng", "en": "Hop"},
    "loss": {"vi": "Mất gói", "en": "Packet loss"},
    "rtt": {"vi": "Độ trễ TB", "en": "Mean latency"},
    "where_fault": {
        "vi": "Nếu phần mềm chậm hoặc mất kết nối trong khi đường truyền tốt, lỗi nằm ở máy chủ dịch vụ chứ "
              "không phải ở thiết bị của xã.",
        "en": "Where software is slow or down while the links are good, the fault lies with the service's "
              "servers, not with the commune's equipment."},
    "no_devices": {"vi": "Không có thiết bị nào trong kỳ.", "en": "No devices in this period."},
    "csv_note": {"vi": "", "en": ""},
}

KINDS = {
    "pc": {"vi": "Máy tính để bàn", "en": "Desktop PC"},
    "laptop": {"vi": "Máy tính xách tay", "en": "Laptop"},
    "printer": {"vi": "Máy in", "en": "Printer"},
    "router": {"vi": "Bộ định tuyến", "en": "Router"},
    "ups": {"vi": "Bộ lưu điện (UPS)", "en": "UPS"},
}

HOPS = {
    "gateway": {"vi": "Mạng nội bộ → gateway", "en": "LAN → gateway"},
    "isp": {"vi": "Nhà mạng (ISP)", "en": "ISP"},
    "upstream": {"vi": "Internet / trục", "en": "Upstream"},
    "service": {"vi": "Máy chủ dịch vụ", "en": "Service"},
}

FACTORS = {
    "age": {"vi": "Tuổi thiết bị", "en": "Age"},
    "memory_pressure": {"vi": "Thiếu RAM", "en": "Memory pressure"},
    "cpu_saturation": {"vi": "CPU quá tải", "en": "CPU saturation"},
    "disk_health": {"vi": "Sức khỏe ổ cứng", "en": "Disk health"},
    "hdd": {"vi": "Ổ cứng cơ trên máy yếu", "en": "HDD on a slow machine"},
    "battery_wear": {"vi": "Chai pin", "en": "Battery wear"},
    "unexpected_restarts": {"vi": "Tắt máy đột ngột", "en": "Unexpected shutdowns"},
    "slow_boot": {"vi": "Khởi động chậm", "en": "Slow boot"},
    "pages": {"vi": "Số trang đã in", "en": "Pages printed"},
    "error_time": {"vi": "Thời gian lỗi", "en": "Error time"},
    "offline": {"vi": "Mất kết nối", "en": "Offline time"},
    "reboots": {"vi": "Khởi động lại", "en": "Reboots"},
    "interface_errors": {"vi": "Lỗi cổng mạng", "en": "Interface errors"},
    "gateway_loss": {"vi": "Mất gói tới gateway", "en": "Gateway packet loss"},
    "battery_replace": {"vi": "Ắc quy cần thay", "en": "Battery replacement"},
    "battery_runtime": {"vi": "Thời gian lưu điện", "en": "Battery runtime"},
    # decisive conditions (the device is flagged at once)
    "disk_failing": {"vi": "Ổ cứng báo hỏng", "en": "Disk failing"},
    "disk_sectors_growing": {"vi": "Sector lỗi đang tăng", "en": "Bad sectors growing"},
    "ups_battery_replace": {"vi": "UPS báo thay ắc quy", "en": "UPS asks for a battery"},
    "printer_maintenance_overdue": {"vi": "Quá hạn bảo dưỡng", "en": "Maintenance overdue"},
    "router_reboots": {"vi": "Khởi động lại nhiều lần/ngày", "en": "Restarts many times a day"},
    "none": {"vi": "—", "en": "—"},
}

ACTIONS = {
    "replace_device": {"vi": "Thay thiết bị mới", "en": "Replace the device"},
    "replace_disk": {"vi": "Thay ổ SSD", "en": "Replace the disk with an SSD"},
    "add_memory": {"vi": "Nâng cấp RAM", "en": "Add memory"},
    "replace_battery": {"vi": "Thay pin/ắc quy", "en": "Replace the battery"},
    "maintenance_kit": {"vi": "Thay bộ bảo dưỡng", "en": "Replace the maintenance kit"},
}

# Measured-value sentences per factor; {placeholders} are filled with formatted numbers.
EVIDENCE = {
    "age": {"vi": "{years} năm tuổi (tuổi thọ thiết kế {rated} năm)",
            "en": "{years} years old (rated life {rated} years)"},
    "memory_pressure": {"vi": "RAM trống < 10 % trong {share} thời gian",
                        "en": "RAM available < 10 % during {share} of the time"},
    "cpu_saturation": {"vi": "CPU > 90 % trong {share} giờ làm việc",
                       "en": "CPU > 90 % during {share} of office hours"},
    "disk_health": {"vi": "SMART: {reallocated} sector bị cấp phát lại, {pending} sector chờ xử lý{failing}",
                    "en": "SMART: {reallocated} reallocated sectors, {pending} pending sectors{failing}"},
    "disk_failing": {"vi": "; ổ cứng báo HỎNG", "en": "; the disk reports FAILING"},
    "hdd": {"vi": "Ổ cứng cơ (HDD), RAM {ram} GB", "en": "Rotating disk (HDD), {ram} GB of RAM"},
    "battery_wear": {"vi": "Pin còn {capacity} dung lượng thiết kế",
                     "en": "Battery holds {capacity} of its design capacity"},
    "unexpected_restarts": {"vi": "Tắt máy đột ngột {count} lần (mất điện hoặc treo máy) trong kỳ",
                            "en": "{count} unexpected shutdowns (power cut or crash) in the period"},
    "unexpected_restarts_one": {"vi": "Tắt máy đột ngột 1 lần (mất điện hoặc treo máy) trong kỳ",
                                "en": "1 unexpected shutdown (power cut or crash) in the period"},
    "slow_boot": {"vi": "Khởi động thường mất {typical} phút, có lúc mất tới {max} phút",
                  "en": "Boot took {typical} minutes typically, up to {max} minutes"},
    "pages": {"vi": "Đã in {pages} trang / tuổi thọ {rated} trang",
              "en": "{pages} pages printed of {rated} rated"},
    "error_time": {"vi": "{minutes} phút kẹt giấy, mở nắp hoặc cần bảo trì trên 1.000 trang",
                   "en": "{minutes} minutes jammed, door open or service requested per 1,000 pages"},
    "offline": {"vi": "Mất kết nối trong {share} giờ làm việc",
                "en": "Unreachable during {share} of office hours"},
    "reboots": {"vi": "Khởi động lại {count} lần trong kỳ", "en": "{count} restarts in the period"},
    "interface_errors": {"vi": "{share} gói tin bị lỗi trên các cổng", "en": "{share} of packets errored"},
    "gateway_loss": {"vi": "Mất {share} gói ping tới gateway (trung bình của xã)",
                     "en": "{share} echo loss to the gateway (commune average)"},
    "battery_replace": {"vi": "UPS báo cần thay ắc quy", "en": "The UPS asks for a new battery"},
    "battery_runtime": {"vi": "Thời gian lưu điện còn {minutes} phút",
                        "en": "Battery runtime down to {minutes} minutes"},
}

SPARK = {
    "pc": {"vi": "RAM trống (TB ngày)", "en": "RAM available (daily mean)"},
    "laptop": {"vi": "RAM trống (TB ngày)", "en": "RAM available (daily mean)"},
    "printer": {"vi": "Số trang in mỗi ngày", "en": "Pages per day"},
    "router": {"vi": "Mất gói tới gateway (TB ngày)", "en": "Gateway packet loss (daily mean)"},
    "ups": {"vi": "Mức pin thấp nhất trong ngày", "en": "Lowest battery charge per day"},
}


def t(key: str, lang: str, **kw) -> str:
    return TEXT[key][lang].format(**kw)


def label(table: Dict[str, Dict[str, str]], key: str, lang: str) -> str:
    entry = table.get(key)
    return entry[lang] if entry else key


def number(value: float, lang: str, decimals: int = 0) -> str:
    """1240.5 -> '1.240,5' (vi) or '1,240.5' (en)."""
    text = f"{value:,.{decimals}f}"
    if lang == "vi":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def percent(ratio: float, lang: str) -> str:
    decimals = 1 if 0 < abs(ratio) < 0.1 else 0
    return f"{number(ratio * 100, lang, decimals)} %"


def date(day: dt.date, lang: str) -> str:
    if lang == "vi":
        return f"{day.day:02d}/{day.month:02d}/{day.year}"
    return f"{day.day} {_MONTHS_EN[day.month - 1][:3]} {day.year}"


def period_name(start: dt.date, end: dt.date, lang: str, month: Optional[bool] = None) -> str:
    """'Tháng 11/2026' / 'November 2026' for a whole month, else 'from – to'."""
    if month:
        return f"Tháng {start.month}/{start.year}" if lang == "vi" else f"{_MONTHS_EN[start.month - 1]} {start.year}"
    return f"{date(start, lang)} – {date(end, lang)}"

# The Forecasts section (collector/report/forecasts.py).
FORECAST: Dict[str, Dict[str, str]] = {
    "forecasts": {"vi": "Dự báo", "en": "Forecasts"},
    "intro": {
        "vi": "Tính đến {date}, theo tốc độ sử dụng đo được: vật tư cần đặt mua (hết trong vòng {supply} ngày), "
              "thiết bị sắp hết tuổi thọ định mức (trong vòng {life} ngày) và ổ hệ thống sắp đầy (trong vòng "
              "{disk} ngày).",
        "en": "As of {date}, at the pace measured: supplies to order (running out within {supply} days), "
              "devices reaching their rated life (within {life} days) and system disks filling up (within "
              "{disk} days)."},
    "supplies": {"vi": "Vật tư cần đặt mua", "en": "Supplies to order"},
    "life": {"vi": "Thiết bị sắp hết tuổi thọ định mức", "en": "Devices reaching their rated life"},
    "disks": {"vi": "Ổ hệ thống sắp đầy", "en": "System disks filling up"},
    "supply": {"vi": "Vật tư", "en": "Supply"},
    "level": {"vi": "Mức còn", "en": "Level"},
    "days_left": {"vi": "Số ngày còn lại", "en": "Days left"},
    "rated_of": {"vi": "Định mức", "en": "Rated life of"},
    "pages": {"vi": "Số trang in định mức", "en": "Rated lifetime pages"},
    "battery": {"vi": "Ắc quy UPS", "en": "UPS battery"},
    "device": {"vi": "Tuổi thọ thiết bị", "en": "Device rated life"},
    "past": {"vi": "đã quá định mức", "en": "past it"},
    "mountpoint": {"vi": "Ổ đĩa", "en": "Drive"},
    "per_day": {"vi": "Bị chiếm mỗi ngày", "en": "Taken per day"},
    "gb": {"vi": "{n} GB", "en": "{n} GB"},
    "none_supplies": {"vi": "Không có vật tư nào sắp hết.", "en": "No supply is running out."},
    "none_life": {"vi": "Không có thiết bị nào sắp hết tuổi thọ định mức.",
                  "en": "No device is reaching its rated life."},
    "none_disks": {"vi": "Không có ổ hệ thống nào sắp đầy.", "en": "No system disk is filling up."},
    "method": {
        "vi": "Vật tư: xu hướng mức còn kể từ lần thay gần nhất, tính theo số trang in của 7 ngày qua. Máy in: "
              "số trang còn lại tới định mức chia cho tốc độ in 30 ngày qua. Ắc quy UPS: {battery_years} năm kể từ ngày mua "
              "UPS (UPS không báo ngày thay ắc quy). Ổ đĩa: xu hướng dung lượng trống kể từ lần dọn dẹp gần nhất.",
        "en": "Supplies: the level's trend since the last refill, at the page rate of the last 7 days. Printers: "
              "pages left to the rating over the page rate of the last 30 days. UPS batteries: {battery_years} years from the "
              "UPS's purchase date (no UPS reports when its battery was changed). Disks: the free space's trend "
              "since the last cleanup."},
}


def ft(key: str, lang: str, **kw) -> str:
    return FORECAST[key][lang].format(**kw)
