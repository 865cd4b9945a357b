"""The Vietnamese lunisolar calendar, computed: Hồ Ngọc Đức's algorithm ("Âm lịch Việt Nam",
https://www.informatik.uni-leipzig.de/~duc/amlich/calrules.html), with the astronomical new moons
and solar longitudes of Jean Meeus, "Astronomical Algorithms" (1998), ch. 47-49 (abridged series),
at the meridian of Vietnam (UTC+7). Only the tests use it: they check every lunar date of
collector/calendar.yaml (Tết Nguyên đán, Giỗ Tổ Hùng Vương) against it.
"""
from __future__ import annotations

import datetime as dt
import math

TZ = 7.0  # hours east of Greenwich: the Vietnamese calendar is computed at UTC+7


def jd_from_date(d: dt.date) -> int:
    return d.toordinal() + 1721425


def date_from_jd(jd: int) -> dt.date:
    return dt.date.fromordinal(jd - 1721425)


def new_moon(k: int) -> float:
    """Julian day (UT) of the k-th new moon after 1900-01-01 13:52 UT (Meeus ch. 49)."""
    T = k / 1236.85
    T2, T3 = T * T, T * T * T
    dr = math.pi / 180
    jd1 = 2415020.75933 + 29.53058868 * k + 0.0001178 * T2 - 0.000000155 * T3
    jd1 += 0.00033 * math.sin((166.56 + 132.87 * T - 0.009173 * T2) * dr)
    M = 359.2242 + 29.10535608 * k - 0.0000333 * T2 - 0.00000347 * T3
    Mpr = 306.0253 + 385.81691806 * k + 0.0107306 * T2 + 0.00001236 * T3
    F = 21.2964 + 390.67050646 * k - 0.0016528 * T2 - 0.00000239 * T3
    C1 = (0.1734 - 0.000393 * T) * math.sin(M * dr) + 0.0021 * math.sin(2 * dr * M)
    C1 = C1 - 0.4068 * math.sin(Mpr * dr) + 0.0161 * math.sin(dr * 2 * Mpr)
    C1 = C1 - 0.0004 * math.sin(dr * 3 * Mpr)
    C1 = C1 + 0.0104 * math.sin(dr * 2 * F) - 0.0051 * math.sin(dr * (M + Mpr))
    C1 = C1 - 0.0074 * math.sin(dr * (M - Mpr)) + 0.0004 * math.sin(dr * (2 * F + M))
    C1 = C1 - 0.0004 * math.sin(dr * (2 * F - M)) - 0.0006 * math.sin(dr * (2 * F + Mpr))
    C1 = C1 + 0.0010 * math.sin(dr * (2 * F - Mpr)) + 0.0005 * math.sin(dr * (2 * Mpr + M))
    if T < -11:
        deltat = 0.001 + 0.000839 * T + 0.0002261 * T2 - 0.00000845 * T3 - 0.000000081 * T * T3
    else:
        deltat = -0.000278 + 0.000265 * T + 0.000262 * T2
    return jd1 + C1 - deltat


def sun_longitude(jdn: float) -> float:
    """The sun's apparent longitude in radians, in [0, 2 pi) (Meeus ch. 25, low precision)."""
    T = (jdn - 2451545.0) / 36525
    T2 = T * T
    dr = math.pi / 180
    M = 357.52910 + 35999.05030 * T - 0.0001559 * T2 - 0.00000048 * T * T2
    L0 = 280.46645 + 36000.76983 * T + 0.0003032 * T2
    DL = (1.914600 - 0.004817 * T - 0.000014 * T2) * math.sin(dr * M)
    DL += (0.019993 - 0.000101 * T) * math.sin(dr * 2 * M) + 0.000290 * math.sin(dr * 3 * M)
    L = (L0 + DL) * dr
    return L - math.pi * 2 * math.floor(L / (math.pi * 2))


def new_moon_day(k: int) -> int:
    return int(math.floor(new_moon(k) + 0.5 + TZ / 24))


def sun_sector(day: int) -> int:
    """Which twelfth of the ecliptic the sun is in at the start of local day ``day`` (0-11)."""
    return int(sun_longitude(day - 0.5 - TZ / 24) / math.pi * 6)


def month11(year: int) -> int:
    """Julian day of the first day of the 11th lunar month (the one holding the winter solstice)."""
    off = jd_from_date(dt.date(year, 12, 31)) - 2415021
    k = int(math.floor(off / 29.530588853))
    nm = new_moon_day(k)
    if sun_sector(nm) >= 9:
        nm = new_moon_day(k - 1)
    return nm


def leap_month_offset(a11: int) -> int:
    k = int(math.floor((a11 - 2415021.076998695) / 29.530588853 + 0.5))
    i = 1
    arc = sun_sector(new_moon_day(k + i))
    while True:
        last = arc
        i += 1
        arc = sun_sector(new_moon_day(k + i))
        if arc == last or i >= 14:
            break
    return i - 1


def solar_from_lunar(lunar_year: int, lunar_month: int, lunar_day: int, leap: bool = False) -> dt.date:
    """The Gregorian date of a lunar date (not a leap month unless ``leap``)."""
    if lunar_month < 11:
        a11, b11 = month11(lunar_year - 1), month11(lunar_year)
    else:
        a11, b11 = month11(lunar_year), month11(lunar_year + 1)
    k = int(math.floor(0.5 + (a11 - 2415021.076998695) / 29.530588853))
    off = lunar_month - 11
    if off < 0:
        off += 12
    if b11 - a11 > 365:  # a leap year: 13 months between the two 11th months
        leap_off = leap_month_offset(a11)
        leap_month = leap_off - 2
        if leap_month < 0:
            leap_month += 12
        if leap and lunar_month != leap_month:
            raise ValueError(f"{lunar_year} has no leap month {lunar_month}")
        if leap or off >= leap_off:
            off += 1
    elif leap:
        raise ValueError(f"{lunar_year} has no leap month")
    return date_from_jd(new_moon_day(k + off) + lunar_day - 1)


def lunar_new_year(year: int) -> dt.date:
    """Mùng 1 Tết: the first day of the first lunar month of ``year``."""
    return solar_from_lunar(year, 1, 1)


def hung_kings_day(year: int) -> dt.date:
    """Giỗ Tổ Hùng Vương: the 10th day of the 3rd lunar month."""
    return solar_from_lunar(year, 3, 10)


def lunar_new_years_eve(year: int) -> dt.date:
    """The last day of the lunar year before ``year`` (29 or 30 tháng Chạp)."""
    return lunar_new_year(year) - dt.timedelta(days=1)
