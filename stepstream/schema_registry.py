"""The Confluent Schema Registry: its client's configuration, and values for a topic in
its wire format (Avro): what ``Stepstream.send(..., avro_schema=...)`` produces, so that
any Kafka tool, and a function triggered by the topic (``TopicTrigger``), can read it."""

from __future__ import annotations

import json
from typing import Any

from stepstream.errors import ConfigError, SerializationError
from stepstream.settings import Settings

_MOST_SERIALIZERS = 64
"""Distinct schemas a ``FramedAvro`` keeps a serializer for (then it starts afresh)."""


def registry_config(settings: Settings) -> dict[str, str]:
    """The schema registry client's configuration from ``settings``."""
    config = {"url": settings.schema_registry_url}
    if settings.schema_registry_username:
        config["basic.auth.user.info"] = (f"{settings.schema_registry_username}:"
                                          f"{settings.schema_registry_password}")
    return config


def schema_text(schema: str | dict[str, Any]) -> str:
    """An Avro schema given as JSON text or as its parsed form, as JSON text."""
    return schema if isinstance(schema, str) else json.dumps(schema)


class FramedAvro:
    """Encodes values with an Avro schema registered under the topic's subject
    (``{topic}-value``, the registry's default); serializers are cached per schema."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        """``client``: a ``SchemaRegistryClient`` to use (else one from ``settings``)."""
        self.settings, self._client = settings, client
        self._serializers: dict[str, Any] = {}

    def _registry(self) -> Any:
        if self._client is None:
            if not self.settings.schema_registry_url:
                raise ConfigError("avro_schema needs STEPSTREAM_SCHEMA_REGISTRY_URL")
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient.new_client(registry_config(self.settings))
        return self._client

    def encode(self, topic: str, schema: str, data: dict[str, Any]) -> bytes:
        """``data`` as a framed Avro value for ``topic`` (the schema is registered the
        first time; blocking).

        Raises:
            ConfigError: no registry configured, or ``schema`` is not an Avro schema.
            SerializationError: ``data`` does not match the schema.
        """
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        serializer = self._serializers.get(schema)
        if serializer is None:
            try:
                serializer = AvroSerializer(self._registry(), schema)
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"not an Avro schema: {exc}") from exc
            if len(self._serializers) >= _MOST_SERIALIZERS:
                self._serializers.clear()
            self._serializers[schema] = serializer
        try:
            value: bytes = serializer(data, SerializationContext(topic, MessageField.VALUE))
        except (ValueError, TypeError, KeyError) as exc:
            raise SerializationError(f"data does not match the Avro schema: {exc}") from exc
        return value
