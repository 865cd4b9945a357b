"""commune-monitor agent: host health, probes and SNMP polling for commune offices."""
from contract import __version__

__all__ = ["__version__"]
