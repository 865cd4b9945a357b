"""What the agent, the collector, the rules and the dashboards must agree on, in one place.

Imports neither ``agent`` nor ``collector``: both import it.
"""
