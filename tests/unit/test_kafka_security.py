"""Kafka security settings map onto confluent-kafka configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepstream.errors import ConfigError
from stepstream.kafka_security import confluent_config, kafka_client_config
from stepstream.settings import Settings

SECRET = "pa55-w0rd-never-printed"


def sasl(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **more: str) -> Settings:
    return Settings(security_protocol=protocol, sasl_mechanism=mechanism,
                    sasl_username="stepstream", sasl_password=SECRET, **more)


def test_plaintext_adds_nothing() -> None:
    settings = Settings(brokers="k1:9092,k2:9092")
    assert confluent_config(settings) == {}
    assert kafka_client_config(settings, **{"linger.ms": 1}) == {
        "bootstrap.servers": "k1:9092,k2:9092", "linger.ms": 1}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    settings = sasl("SASL_PLAINTEXT", mechanism)
    assert confluent_config(settings) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
        "sasl.username": "stepstream", "sasl.password": SECRET}


def test_sasl_ssl_with_ca_and_client_certificate(tmp_path: Path) -> None:
    from tests.tls import make_certificates

    certs = make_certificates(tmp_path)
    settings = sasl(ssl_cafile=str(certs.ca), ssl_certfile=str(certs.cert),
                    ssl_keyfile=str(certs.key))
    assert confluent_config(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "stepstream", "sasl.password": SECRET,
        "ssl.ca.location": str(certs.ca), "ssl.certificate.location": str(certs.cert),
        "ssl.key.location": str(certs.key)}


def test_ssl_only() -> None:
    settings = Settings(security_protocol="SSL")
    assert confluent_config(settings) == {"security.protocol": "SSL"}


def test_from_env() -> None:
    settings = Settings.from_env({
        "STEPSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "STEPSTREAM_SASL_MECHANISM": "SCRAM-SHA-256",
        "STEPSTREAM_SASL_USERNAME": "svc", "STEPSTREAM_SASL_PASSWORD": SECRET,
        "STEPSTREAM_SSL_CAFILE": "/etc/ca.pem", "STEPSTREAM_HTTP_TOKEN": "t0ken"})
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert settings.sasl_password == SECRET and settings.http_token == "t0ken"
    assert settings.ssl_cafile == "/etc/ca.pem"


@pytest.mark.parametrize("changes, message", [
    ({"security_protocol": "TLS"}, "security_protocol"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
      "sasl_password": "p"}, "sasl_mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u"}, "sasl_password"),
    ({"ssl_certfile": "c.pem"}, "ssl_keyfile"),
])
def test_rejects_incomplete_security(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**changes)  # type: ignore[arg-type]


def test_secrets_stay_out_of_reprs() -> None:
    settings = sasl(http_token="http-" + SECRET,
                    redis_url=f"rediss://stepstream:{SECRET}@redis.internal:6380/0")
    text = repr(settings) + str(settings)
    assert SECRET not in text
    assert "redis.internal:6380" in text and "sasl_username='stepstream'" in text
