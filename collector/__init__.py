"""commune-monitor collector: the central ingest gateway (remote write in, identity stamped, forwarded)."""
from contract import __version__

__all__ = ["__version__"]
