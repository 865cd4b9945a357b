"""Texts, value mappings and links several dashboards share."""
from __future__ import annotations

from dashboards.model import Text, link, uid, value_map

UP_DOWN = value_map({"1": (Text("up", "hoạt động"), "green"), "0": (Text("down", "mất kết nối"), "red")})
YES_NO_BAD = value_map({"0": (Text("no", "không"), "green"), "1": (Text("yes", "có"), "red")})
PRINTER_STATUS = value_map({
    "1": (Text("other", "khác"), "orange"), "2": (Text("unknown", "không rõ"), "orange"),
    "3": (Text("idle", "sẵn sàng"), "green"), "4": (Text("printing", "đang in"), "blue"),
    "5": (Text("warming up", "đang khởi động"), "yellow")})
IF_STATUS = value_map({
    "1": (Text("up", "hoạt động"), "green"), "2": (Text("down", "ngừng"), "red"),
    "3": (Text("testing", "kiểm tra"), "orange"), "5": (Text("dormant", "chờ"), "blue"),
    "7": (Text("lower layer down", "lớp dưới ngừng"), "red")})

HOP_ORDER = Text("Hops: gateway = office router, isp = the ISP's first hop, upstream = province/national "
                 "data centre, service = the software's server.",
                 "Chặng: gateway = router cơ quan, isp = điểm đầu của nhà mạng, upstream = trung tâm dữ liệu "
                 "tỉnh/quốc gia, service = máy chủ phần mềm.")


def to_board(name: str, lang: str, title: Text, **vars_: str) -> dict:
    """A data link to another dashboard, keeping the time range and passing variables."""
    query = "&".join(f"var-{k}={v}" for k, v in vars_.items())
    return link(title, f"/d/{uid(name, lang)}?${{__url_time_range}}" + (f"&{query}" if query else ""))


def device_link(lang: str) -> dict:
    """Data link of a table row with ``dashboard``, ``commune``, ``agent`` and ``target`` columns
    (see ``queries.with_dashboard``): opens the PC, printer or commune dashboard of the device."""
    return link(Text("Open the device's dashboard", "Mở bảng điều khiển của thiết bị"),
                f"/d/cm-${{__data.fields.dashboard}}-{lang}?${{__url_time_range}}"
                "&var-commune=${__data.fields.commune}&var-agent=${__data.fields.agent}"
                "&var-printer=${__data.fields.target}&var-router=${__data.fields.target}"
                "&var-ups=${__data.fields.target}")
