"""Grafana dashboards as code: Python builds the JSON model, one set per language.

``python -m dashboards generate`` writes ``dashboards/generated/<lang>/<name>.json``;
``commune-collector dashboards push`` uploads them (see :mod:`dashboards.push`).
"""
