"""What the agent, the collector, the rules and the dashboards must agree on, in one place.

Imports neither ``agent`` nor ``collector``: both import it.

- :mod:`contract.schema`: the strict config loader (dataclass sections, file:line errors, Secret);
- :mod:`contract.listener`: listen addresses, loopback, basic-auth users of a web listener;
- :mod:`contract.names`: the one set of metric, label, commune and agent name rules;
- :mod:`contract.remote_write`: the remote-write codec and its validator (protobuf, snappy);
- :mod:`contract.samples`, :mod:`contract.exposition`: samples and the /metrics text;
- :mod:`contract.catalog` (``catalog.yaml``): every metric emitted anywhere;
- :mod:`contract.thresholds` (``thresholds.yaml``): the numbers rules, dashboards, report and
  defaults share;
- :mod:`contract.basic_auth`, :mod:`contract.shutdown`: bcrypt checks, signal handling.
"""

__version__ = "0.1.0"
