"""The lifecycle topic's processor: each history record, as the public lifecycle record
(``schemas.lifecycle``) in the Confluent wire format, to ``{namespace}.lifecycle``.

It runs in a consumer group of its own and commits what it writes with the history
offsets it read, in one transaction: each history record is on the lifecycle topic
once, in its run's order (both topics are keyed by run id). It only reads what the
engine already wrote, so the engine's own path (orchestrator, history, projector) is
the same with or without it, and a registry outage holds back only this topic.

The schema is registered under ``{topic}-value`` (the registry's default subject)
before the first record; the records are then framed with its id (magic byte 0, the
id's 4 bytes, the Avro payload), so any Kafka tool with the registry reads them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import fastavro

from schemas.codec import AvroCodec, DecodeError
from schemas.lifecycle import latest, lifecycle_event
from schemas.messages import HistoryRecord
from stepstream.schema_registry import registry_config
from stepstream.settings import Settings
from streams.backoff import until_done
from streams.kafka.task import Task
from streams.processors.outputs import Outputs

log = logging.getLogger("stepstream.lifecycle")


class ConfluentLifecycle:
    """Lifecycle records in the Confluent wire format, under a schema registered once."""

    def __init__(self, settings: Settings, topic: str, client: Any = None) -> None:
        """``client``: a ``SchemaRegistryClient`` to use (else one from ``settings``)."""
        self.settings, self.topic, self._client = settings, topic, client
        _, self.schema = latest()
        self.parsed = fastavro.parse_schema(self.schema, named_schemas={})
        self._header: bytes | None = None

    def _register(self) -> bytes:
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        if self._client is None:
            self._client = SchemaRegistryClient.new_client(registry_config(self.settings))
        schema_id = self._client.register_schema(f"{self.topic}-value",
                                                 Schema(json.dumps(self.schema), "AVRO"))
        return b"\x00" + int(schema_id).to_bytes(4, "big")

    async def header_bytes(self) -> bytes:
        """The frame's header (magic byte, schema id): the schema is registered the
        first time, waiting out a registry that does not answer or refuses it."""
        if self._header is None:
            self._header = await until_done(
                lambda: asyncio.to_thread(self._register),
                what=f"registering the schema of {self.topic}", errors=(Exception,))
        return self._header

    async def encode(self, event: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(await self.header_bytes())
        fastavro.schemaless_writer(out, self.parsed, event)
        return out.getvalue()


class Lifecycle:
    """Processes the history topic into the lifecycle topic."""

    def __init__(self, outputs: Outputs, codec: AvroCodec, framing: ConfluentLifecycle
                 ) -> None:
        self.outputs, self.codec, self.framing = outputs, codec, framing

    async def process(self, task: Task, message: Any) -> None:
        try:
            record = self.codec.decode_as(message.value(), HistoryRecord)
        except DecodeError as exc:
            # The projector sets it aside; one copy in quarantine is enough.
            log.warning("skipped %s[%d]@%d: %s", message.topic(), message.partition(),
                        message.offset(), exc)
            return
        value = await self.framing.encode(lifecycle_event(record))
        task.send(self.outputs.raw(self.framing.topic, record.run_id.encode(), value))
