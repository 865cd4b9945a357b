"""The error every SNMP failure becomes (pure)."""
from __future__ import annotations

REASONS = ("timeout", "auth_failure", "no_such_object", "unreachable", "error")


class SnmpError(Exception):
    """A failed SNMP exchange; ``reason`` is one of :data:`REASONS`, the message holds no secret."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason if reason in REASONS else "error"
