"""commune-monitor agent: host health, probes and SNMP polling for commune offices."""
__version__ = "0.1.0"
