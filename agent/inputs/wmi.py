"""The one seam to WMI (Windows Management Instrumentation): ``query(namespace, wql) -> list[dict]``.

Windows readers (``agent/inputs/windisk.py``, ``agent/inputs/winprint.py``, the battery part of
``agent/inputs/host.py``) take a :data:`Query` in their constructor and only ever call it; their
parsers work on the plain dicts it returns, so they are tested on Linux with recorded instances
(``tests/fixtures/windows/``). This is the only module that imports pywin32 (``win32com``,
``pythoncom``; the ``windows`` extra), and only inside :func:`query`, on Windows.

What the dicts hold is what WMI's scripting interface (``SWbemObject.Properties_``) gives Python:

- property names as the class documents them (``HealthStatus``, ``DesignedCapacity``);
- ``uint8/16/32`` and ``sint*`` up to 32 bits as ``int``, booleans as ``bool``, arrays as lists;
- ``uint64``/``sint64`` as decimal **strings** (automation has no 64-bit integer type), so the
  parsers turn values into numbers with :func:`number`;
- ``datetime`` as a CIM DMTF string ``yyyymmddHHMMSS.ffffff+UUU`` (UUU: minutes from UTC), read by
  :func:`cim_datetime`;
- NULL (a property the provider or driver does not fill) as ``None``.

Each call connects afresh (``GetObject("winmgmts:...")``) in the calling thread, with COM
initialised for that thread: the runner collects plain inputs in worker threads, and a WMI
connection cannot be shared between COM apartments. A connection costs a few milliseconds; the
readers query every few minutes at most.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Callable, Dict, List, Optional

Instance = Dict[str, Any]
Query = Callable[[str, str], List[Instance]]

# WMI's class-level "this class has no instances on this machine" answers, which readers treat
# as an empty result: WBEM_E_NOT_FOUND, WBEM_E_NOT_SUPPORTED, WBEM_E_INVALID_CLASS. (A desktop's
# root\wmi has no battery instances and some drivers do not implement failure prediction.)
EMPTY_RESULT_CODES = (0x80041002, 0x8004100C, 0x80041010)


class WmiError(RuntimeError):
    """A WMI query failed; ``code`` is the HRESULT / WBEM status as an unsigned int, when known."""

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.code = code

    @property
    def means_no_instances(self) -> bool:
        return self.code in EMPTY_RESULT_CODES


def query(namespace: str, wql: str) -> List[Instance]:
    """Run ``wql`` in ``namespace`` (e.g. ``root\\cimv2``) on this machine; Windows only."""
    import pythoncom  # pywin32 (windows extra)

    pythoncom.CoInitialize()
    try:
        return _execute(namespace, wql)  # every COM object is released when it returns
    finally:
        pythoncom.CoUninitialize()


def _execute(namespace: str, wql: str) -> List[Instance]:
    import pywintypes
    import win32com.client

    service = found = None
    failure: Optional[WmiError] = None
    try:
        service = win32com.client.GetObject("winmgmts:{impersonationLevel=impersonate}!\\\\.\\" + namespace)
        # wbemFlagReturnImmediately (0x10) | wbemFlagForwardOnly (0x20): no cached enumerator
        found = service.ExecQuery(wql, "WQL", 0x30)
        return [{p.Name: _plain(p.Value) for p in obj.Properties_} for obj in found]
    except pywintypes.com_error as exc:
        failure = WmiError(f"{namespace}: {wql}: {_com_message(exc)}", _com_code(exc))
    service = found = None  # raised outside the handler: no traceback keeps a COM object alive
    raise failure


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):  # SAFEARRAY
        return [_plain(v) for v in value]
    return value


def _com_code(exc) -> Optional[int]:
    """The WBEM status of a com_error: from EXCEPINFO's scode when WMI filled it in, else the HRESULT."""
    excepinfo = exc.args[2] if len(exc.args) > 2 else None
    code = excepinfo[5] if isinstance(excepinfo, tuple) and len(excepinfo) > 5 and excepinfo[5] else exc.args[0]
    return code & 0xFFFFFFFF if isinstance(code, int) else None


def _com_message(exc) -> str:
    code = _com_code(exc)
    excepinfo = exc.args[2] if len(exc.args) > 2 else None
    described = excepinfo[2] if isinstance(excepinfo, tuple) and len(excepinfo) > 2 else None
    text = described or (exc.args[1] if len(exc.args) > 1 else str(exc))
    return f"{text} (0x{code:08X})" if code is not None else str(text)


# ---------------------------------------------------------------- pure helpers

def number(value: Any) -> Optional[float]:
    """An int/float, or the decimal string WMI gives for 64-bit values, as a float; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


_CIM_DATETIME = re.compile(r"^(\d{14})\.(\d{6})([+-])(\d{3})$")


def cim_datetime(text: Any) -> Optional[float]:
    """Unix time of a CIM DMTF datetime ``yyyymmddHHMMSS.ffffff+UUU`` (UUU minutes east of UTC).

    None for NULL, an interval (``...:000``), or fields WMI leaves as asterisks.
    """
    if not isinstance(text, str):
        return None
    m = _CIM_DATETIME.match(text.strip())
    if not m:
        return None
    try:
        local = _dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    offset = int(m.group(4)) * (1 if m.group(3) == "+" else -1)
    aware = local.replace(microsecond=int(m.group(2)), tzinfo=_dt.timezone(_dt.timedelta(minutes=offset)))
    return aware.timestamp()


def wql_string(value: str) -> str:
    """``value`` as a double-quoted WQL / object-path string literal (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
