"""Kafka authentication and encryption, from ``Settings``, for every client we build.

Two client libraries reach Kafka: confluent-kafka (the SDK's producer, topic
provisioning) and aiokafka under Faust (the engine). Both get their security
settings from here, so a broker that demands SASL or TLS is configured once, by
``STEPSTREAM_SECURITY_PROTOCOL``, ``STEPSTREAM_SASL_*`` and ``STEPSTREAM_SSL_*``.
"""

from __future__ import annotations

import ssl
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


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context aiokafka uses, or None when the protocol is not encrypted.

    Verifies the brokers' certificates and host names against ``ssl_cafile`` (or the
    system CAs), and presents ``ssl_certfile`` for mutual TLS when it is set.
    """
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: ``broker_credentials`` (empty for PLAINTEXT).

    Faust hands the credentials to aiokafka's consumer, producer and admin client alike.
    """
    import faust  # the SDK imports without Faust; only the engine calls this

    context = ssl_context(settings)
    if uses_sasl(settings):
        return {"broker_credentials": faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism, ssl_context=context)}
    if context is not None:
        return {"broker_credentials": faust.SSLCredentials(context)}
    return {}
