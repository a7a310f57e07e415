"""deploy/k8s: core resources validate against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors); the KEDA and Prometheus Operator resources against the
part of their CRDs we use; and the manifests agree with each other and with the settings.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from stepstream.settings import Settings
from tests.deploy.manifests import DEPLOY, load_yaml_documents

K8S = DEPLOY / "k8s"
K8S_VERSION = "1.29"

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is in the [dev] extras")

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name"],
         "properties": {"name": {"type": "string"}, "labels": _STRING_MAP}}

# The fields of KEDA's and the Prometheus Operator's CRDs that the manifests use.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "advanced": {"type": "object"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "kafka"},
                        "authenticationRef": {"type": "object", "required": ["name"]},
                        "metadata": {
                            "type": "object",
                            "required": ["bootstrapServers", "consumerGroup", "topic",
                                         "lagThreshold"],
                            "additionalProperties": False,
                            "properties": {k: {"type": "string"} for k in [
                                "bootstrapServers", "consumerGroup", "topic", "lagThreshold",
                                "activationLagThreshold", "offsetResetPolicy"]}}}}}}}}},
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"secretTargetRef": {"type": "array", "items": {
                "type": "object", "required": ["parameter", "name", "key"],
                "additionalProperties": False,
                "properties": {"parameter": {"enum": ["sasl", "tls", "username", "password",
                                                      "ca", "cert", "key"]},
                               "name": {"type": "string"}, "key": {"type": "string"}}}}}}}},
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object",
                             "properties": {"matchLabels": _STRING_MAP}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                   "interval": {"type": "string"}}}}}}}},
}


def resources() -> list[dict[str, Any]]:
    kustomization = load_yaml_documents(K8S / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"]
            for doc in load_yaml_documents(K8S / name)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in resources() if r["kind"] == kind]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml_documents(K8S / "kustomization.yaml")[0]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize("resource", resources(),
                         ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_resource_validates(resource: dict[str, Any]) -> None:
    schema = CRD_SCHEMAS.get((resource["apiVersion"], resource["kind"]))
    if schema is not None:
        jsonschema.validate(resource, schema)
    else:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    """The validator is strict: an unknown field fails (so passing means something)."""
    deployment = by_kind("Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_manifests_agree() -> None:
    config = by_kind("ConfigMap")[0]["data"]
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind("Secret")}
    assert set(secrets["stepstream-secrets"]) == {
        "STEPSTREAM_SASL_USERNAME", "STEPSTREAM_SASL_PASSWORD", "STEPSTREAM_REDIS_URL",
        "STEPSTREAM_HTTP_TOKEN"}
    # Together they are valid settings: SASL over TLS, a token for the public API.
    settings = Settings.from_env({**config, **secrets["stepstream-secrets"]})
    assert settings.http_host == "0.0.0.0" and settings.http_token
    assert settings.security_protocol == "SASL_SSL"

    deployment = by_kind("Deployment")[0]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env_sources = {ref.get("configMapRef", ref.get("secretRef"))["name"]
                   for ref in container["envFrom"]}
    assert env_sources == {"stepstream-config", "stepstream-secrets"}
    labels = pod["metadata"]["labels"]
    for selector in (by_kind("Service")[0]["spec"]["selector"],
                     by_kind("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
                     by_kind("ServiceMonitor")[0]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    port = by_kind("Service")[0]["spec"]["ports"][0]["name"]
    assert by_kind("ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == port

    job = by_kind("Job")[0]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["topics", "create"]
    assert job["image"] == container["image"]

    scaled = by_kind("ScaledObject")[0]["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["maxReplicaCount"] <= settings.partitions  # idle workers beyond that
    triggers = [t["metadata"] for t in scaled["triggers"]]
    assert {t["topic"] for t in triggers} == {settings.topic("steps"), settings.topic("runs")}
    assert {t["consumerGroup"] for t in triggers} == {settings.namespace}  # the engine's group
    assert {t["bootstrapServers"] for t in triggers} == {settings.brokers}
    auth = by_kind("TriggerAuthentication")[0]
    assert {t["authenticationRef"]["name"] for t in scaled["triggers"]} == {
        auth["metadata"]["name"]}
    keda_secret = secrets[auth["spec"]["secretTargetRef"][0]["name"]]
    assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= set(keda_secret)
