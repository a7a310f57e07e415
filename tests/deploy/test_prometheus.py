"""Alert rules and scrape config pass ``promtool`` (Debian package ``prometheus``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, alert_queries, dashboard_queries, metric_names

PROMETHEUS = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")
# Skip on a laptop without it; in CI (.ci/run installs it) its absence is a failure.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool is not installed (apt-get install prometheus; .ci/run installs it)")


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    assert PROMTOOL is not None, "promtool is not installed: .ci/run installs package prometheus"
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_rules_check() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_rules_fire_when_they_should() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_scrape_config_check(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # where compose mounts it
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_alerts_cover_what_operators_need() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"StepstreamWorkerDown", "StepstreamNoHeartbeat", "StepstreamConsumerLagSeconds",
            "StepstreamConsumerLagHigh", "StepstreamRunsStuck", "StepstreamDeadLettersGrowing",
            "StepstreamStepFailureRatioHigh"} <= names
    assert metric_names(alert_queries()) and metric_names(dashboard_queries())
