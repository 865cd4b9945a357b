"""Where the agent's log goes: stderr (the journal under systemd), a rotating file, the Event Log.

- stderr whenever there is one (a Windows service has none: pythonservice.exe gives it no console);
- ``agent.log_file``: a size-bounded rotating file, ``agent.log_file_max_size`` each and
  ``agent.log_file_count`` files in all (``agent.log``, ``agent.log.1`` ...), so a year of a flapping
  link cannot fill an old PC's disk. Default: none on Linux (the journal keeps the log),
  ``%ProgramData%\\commune-monitor\\agent\\logs\\agent.log`` on Windows, where staff and the runbooks
  look for it;
- an extra handler given by the caller: the Windows service adds one for the Event Log (errors),
  see agent/winservice.py.

A log file that cannot be opened is not fatal: the error is reported through the other handlers
and the agent runs on; :func:`setup_logging` returns that error for the caller to pass on.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import List, Optional

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Handlers installed by setup_logging, removed again when it is called a second time.
_ours: List[logging.Handler] = []


def setup_logging(level: str, log_file: str = "", max_size: int = 10 * 2**20, count: int = 5,
                  extra: Optional[logging.Handler] = None) -> Optional[str]:
    """Configure the root logger; returns why the log file could not be opened, or None."""
    root = logging.getLogger()
    for handler in _ours:
        root.removeHandler(handler)
        handler.close()
    _ours.clear()
    formatter = logging.Formatter(FORMAT)
    handlers: List[logging.Handler] = []
    if sys.stderr is not None:
        handlers.append(logging.StreamHandler(sys.stderr))
    problem = None
    if log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            # backupCount files besides the live one: count files in all
            handlers.append(logging.handlers.RotatingFileHandler(
                log_file, maxBytes=max_size, backupCount=count - 1, encoding="utf-8", delay=False))
        except OSError as exc:
            problem = f"cannot write the log file {log_file}: {exc.strerror or exc}"
    if extra is not None:
        handlers.append(extra)
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(formatter)
        root.addHandler(handler)
        _ours.append(handler)
    root.setLevel(getattr(logging, level.upper()))
    if problem:
        logging.getLogger("agent").error("%s; logging to the other outputs only", problem)
    return problem
