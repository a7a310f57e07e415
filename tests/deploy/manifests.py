"""Reading the files under deploy/ and the metric names their queries use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

_METRIC = re.compile(r"\bstepstream_[a-z0-9_]+\b")


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard (panels and variables)."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def alert_queries() -> list[str]:
    """Every expression of the Prometheus alert rules."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(exprs: list[str]) -> set[str]:
    """The ``stepstream_*`` series names the expressions read."""
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Series names in a Prometheus text exposition (with _total/_bucket/... suffixes)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
