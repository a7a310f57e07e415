"""Kafka authentication and encryption, from ``Settings``, for every client we build.

Every client (the SDK's producer, topic provisioning, the engine's consumers and
producers) is a confluent-kafka one and gets its security settings from here, so a
broker that demands SASL or TLS is configured once, by
``STEPSTREAM_SECURITY_PROTOCOL``, ``STEPSTREAM_SASL_*`` and ``STEPSTREAM_SSL_*``.
"""

from __future__ import annotations

from typing import Any

from stepstream.settings import Settings


def uses_tls(settings: Settings) -> bool:
    """Whether connections to the brokers are encrypted."""
    return settings.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    """Whether clients authenticate with SASL."""
    return settings.security_protocol.startswith("SASL_")


def confluent_config(settings: Settings) -> dict[str, str]:
    """The librdkafka properties for ``settings``' security (empty for PLAINTEXT).

    Merge it into any confluent-kafka ``Producer``/``Consumer``/``AdminClient`` config.
    """
    config: dict[str, str] = {}
    if settings.security_protocol == "PLAINTEXT":
        return config
    config["security.protocol"] = settings.security_protocol
    if uses_sasl(settings):
        config.update({"sasl.mechanism": settings.sasl_mechanism,
                       "sasl.username": settings.sasl_username,
                       "sasl.password": settings.sasl_password})
    if uses_tls(settings):
        if settings.ssl_cafile:
            config["ssl.ca.location"] = settings.ssl_cafile
        if settings.ssl_certfile:
            config["ssl.certificate.location"] = settings.ssl_certfile
            config["ssl.key.location"] = settings.ssl_keyfile
    return config


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A complete confluent-kafka config: brokers, security, then ``extra``."""
    return {"bootstrap.servers": settings.brokers, **confluent_config(settings), **extra}
