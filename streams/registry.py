"""Values in the Confluent wire format (magic byte 0, a 4-byte schema id, the payload),
decoded through a Schema Registry with confluent-kafka's deserializers.

Avro, JSON Schema and Protobuf records are decoded with the writer's schema, fetched by
id once and cached by the registry client; Protobuf's message classes are built from
the registered schema (``streams.registry_protobuf``).
"""

from __future__ import annotations

import threading
from typing import Any

from schemas.codec import DecodeError
from stepstream.schema_registry import registry_config
from stepstream.settings import Settings

MAGIC = 0
"""The first byte of a Confluent-framed value."""
_HEADER_BYTES = 5


class RegistryUnavailable(Exception):
    """The registry did not answer, or refused the worker (5xx, 401, 403): the record is
    not at fault, so it waits for the registry rather than being quarantined."""


def _refused(schema_id: int, exc: Any) -> Exception:
    """What a registry error means for the record: an unknown schema id (404) is the
    record's fault; any other answer is the registry's."""
    if exc.http_status_code == 404:
        return DecodeError(f"schema id {schema_id} is unknown to the registry: {exc}")
    return RegistryUnavailable(f"schema id {schema_id}: {exc}")


def is_framed(value: bytes) -> bool:
    """Whether ``value`` looks like the Confluent wire format (JSON never starts so)."""
    return len(value) > _HEADER_BYTES and value[0] == MAGIC


class RegistryDecoder:
    """Decodes framed values; blocking (registry lookups): call it off the event loop.

    Raises ``DecodeError`` for what is the record's fault and ``RegistryUnavailable``
    for what is the registry's."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        """``client``: a ``SchemaRegistryClient`` to use (else one from ``settings``)."""
        self.settings = settings
        self._client = client
        self._deserializers: dict[str, Any] = {}
        self._lock = threading.Lock()  # deserializers are built once, from any thread

    def client(self) -> Any:
        if self._client is None:
            if not self.settings.schema_registry_url:
                raise DecodeError("a Schema Registry record (Confluent wire format), and no "
                                  "STEPSTREAM_SCHEMA_REGISTRY_URL to decode it with")
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient.new_client(registry_config(self.settings))
        return self._client

    def decode(self, value: bytes, topic: str) -> Any:
        """The record ``value`` holds, as Python values.

        Raises:
            DecodeError: no registry configured, an unknown schema id, a schema of
                another kind, or a payload that does not match its schema.
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        from confluent_kafka.serialization import MessageField, SerializationContext

        schema_id = int.from_bytes(value[1:_HEADER_BYTES], "big")
        client = self.client()
        try:
            kind = client.get_schema(schema_id).schema_type or "AVRO"
        except SchemaRegistryError as exc:
            raise _refused(schema_id, exc) from exc
        except Exception as exc:  # connection refused, timeouts: the client's HTTP errors
            raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from exc
        deserializer = self._deserializer(kind)
        try:
            return deserializer(value, SerializationContext(topic, MessageField.VALUE))
        except SchemaRegistryError as exc:
            raise _refused(schema_id, exc) from exc
        except Exception as exc:
            # The registry answered a moment ago: this is the payload (a network error
            # of the deserializer's own first lookup of a schema, in between, would land
            # here too, and the record be quarantined).
            raise DecodeError(f"schema id {schema_id}: {type(exc).__name__}: {exc}") from exc

    def _deserializer(self, kind: str) -> Any:
        with self._lock:
            if kind not in self._deserializers:
                self._deserializers[kind] = self._made(kind)
            return self._deserializers[kind]

    def _made(self, kind: str) -> Any:
        if kind == "AVRO":
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            return AvroDeserializer(self.client())
        if kind == "JSON":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            return JSONDeserializer(None, schema_registry_client=self.client())
        if kind == "PROTOBUF":
            try:
                import google.protobuf  # noqa: F401
            except ImportError as exc:
                raise DecodeError(f"a Protobuf record, and no protobuf runtime to decode it "
                                  f"(pip install 'stepstream[registry]'): {exc}") from exc
            from streams.registry_protobuf import ProtobufRecords

            return ProtobufRecords(self.client())
        raise DecodeError(f"{kind} records are not decoded: Avro, JSON Schema and Protobuf "
                          "are")
