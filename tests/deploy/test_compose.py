"""deploy/docker-compose.yml and the Dockerfile: they parse, and reference only what exists.

No Docker engine runs here, so the stack itself is not started; these checks catch the
mistakes that would stop it from starting (a missing file, a wrong path, a service that
does not match the Prometheus targets).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY

ROOT = DEPLOY.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_every_referenced_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source in _bind_sources(service):
            assert (DEPLOY / source).exists(), f"{name}: bind mount {source} does not exist"
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT, f"{name}: build context should be the repository root"
            assert (context / build["dockerfile"]).is_file()


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "redis", "topics-create", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["topics-create"]["command"] == ["topics", "create"]
    workers = {name: s for name, s in services.items() if s.get("command", [])[:1] == ["worker"]}
    assert len(workers) == 2
    for name, worker in workers.items():
        assert worker["command"][1] == "examples.contacts"
        env = worker["environment"]
        assert env["STEPSTREAM_HTTP_TOKEN"].startswith("${STEPSTREAM_HTTP_TOKEN:?"), name
        assert env["STEPSTREAM_BROKERS"] == "kafka:9092"
        assert "@redis:6379" in env["STEPSTREAM_REDIS_URL"]  # Redis with a password
        needs = worker["depends_on"]["topics-create"]["condition"]
        assert needs == "service_completed_successfully"
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} is published on every interface"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"]
               for static in job["static_configs"] for t in static["targets"]}
    assert targets == {f"{name}:8288" for name in workers}


def test_grafana_provisioning_points_at_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/stepstream.yml")
                              .read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboard.json"].startswith(folder + "/")
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
                                .read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*", text, re.MULTILINE)
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1]
    assert "STEPSTREAM_HTTP_HOST=0.0.0.0" in text
    for source in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY {path}: missing"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for path in re.findall(r"^COPY\s+(\S+)", text, re.MULTILINE):
        assert f"!{path.rstrip('/')}" in {line.rstrip("/") for line in ignore}, path


def test_every_deploy_file_is_used(compose: dict[str, Any]) -> None:
    """No stray file: each file under deploy/ is referenced by the stack or the manifests."""
    used = {Path("docker-compose.yml"), Path("Dockerfile"), Path("Dockerfile.dockerignore"),
            Path("prometheus/alerts_test.yml")}
    for service in compose["services"].values():
        used |= {Path(s).relative_to(".") for s in _bind_sources(service)}
    k8s = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    used |= {Path("k8s") / r for r in k8s["resources"]} | {Path("k8s/kustomization.yaml")}
    present = {p.relative_to(DEPLOY) for p in DEPLOY.rglob("*") if p.is_file()}
    assert present <= used, f"unreferenced: {sorted(map(str, present - used))}"
