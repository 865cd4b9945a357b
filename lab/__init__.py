"""The lab: real components on loopback for the tests and the benchmarks alike.

Processes started and always stopped (:mod:`lab.procs`), Prometheus and VictoriaMetrics
(:mod:`lab.stores`), the collector (:mod:`lab.collector`), the agent (:mod:`lab.agent`), snmpsim
(:mod:`lab.snmpsim`) and the slow, flapping office link (:mod:`lab.linkemu`). ``tests/`` and
``bench/`` import it; it imports neither. Nothing here is installed for users.
"""
