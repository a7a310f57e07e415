"""Protobuf values in the Confluent wire format, decoded without their generated classes.

confluent-kafka's ``ProtobufDeserializer`` parses into a message class it is given, and a
worker has none: a source topic's schema is another team's. The registry holds the
writer's schema as a ``FileDescriptorProto`` (``format=serialized``); the classes are
built from it at run time, in a descriptor pool of the schema's own, with
google.protobuf's public ``DescriptorPool`` and ``message_factory.GetMessageClass`` (what
generated code does at import), and the files it imports come from protobuf's
well-known types or from the schema's references in the registry. The deserializer is
then given the class of the message the record's indexes name, and the message becomes
JSON by Protobuf's own mapping (``json_format``): field names as declared, fields left
at their default present, 64-bit integers as text, enums by name.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import threading
from typing import Any

from schemas.codec import DecodeError

_MOST_CLASSES = 64
"""Distinct (schema, message) pairs kept a deserializer for (then it starts afresh)."""


_IMPORTABLE = (
    *(f"google.protobuf.{name}_pb2" for name in (
        "any", "descriptor", "duration", "empty", "field_mask", "struct", "timestamp",
        "wrappers")),
    "confluent_kafka.schema_registry.confluent.meta_pb2",
    "confluent_kafka.schema_registry.confluent.type.decimal_pb2",
    "confluent_kafka.schema_registry.confluent.types.decimal_pb2",  # the older path
)
"""Modules whose files a schema may import without a reference: protobuf's well-known
types and confluent's own (each enters protobuf's default pool when imported)."""


def _well_known() -> Any:
    """The pool holding the files of ``_IMPORTABLE``."""
    from google.protobuf import descriptor_pool

    for module in _IMPORTABLE:
        with contextlib.suppress(ImportError):  # not every version ships each
            importlib.import_module(module)
    return descriptor_pool.Default()


class ProtobufRecords:
    """Decodes framed Protobuf values with the registry ``client``; blocking, thread-safe.

    Raises ``DecodeError`` for a schema it cannot build (an import neither protobuf nor
    the references provide) or a payload that does not parse; registry errors
    (``SchemaRegistryError``) pass through for the caller to judge."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._deserializers: dict[tuple[int, tuple[int, ...]], Any] = {}
        self._lock = threading.Lock()

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        from confluent_kafka.schema_registry import dual_schema_id_deserializer
        from confluent_kafka.schema_registry.serde import SchemaId
        from google.protobuf import json_format

        found = SchemaId("PROTOBUF")
        dual_schema_id_deserializer(value, ctx, found)  # reads the id and message indexes
        if found.id is None:
            raise DecodeError("a Protobuf record without a schema id")
        key = (found.id, tuple(found.message_indexes or [0]))
        message = self._deserializer(key)(value, ctx)
        decoded: dict[str, Any] = json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True)
        return decoded

    def _deserializer(self, key: tuple[int, tuple[int, ...]]) -> Any:
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer

        with self._lock:
            deserializer = self._deserializers.get(key)
            if deserializer is None:
                if len(self._deserializers) >= _MOST_CLASSES:
                    self._deserializers.clear()
                deserializer = ProtobufDeserializer(self._message_class(*key), None,
                                                    self.client)
                self._deserializers[key] = deserializer
            return deserializer

    def _message_class(self, schema_id: int, indexes: tuple[int, ...]) -> Any:
        from google.protobuf import descriptor_pool
        from google.protobuf.message_factory import GetMessageClass

        pool = descriptor_pool.DescriptorPool()
        schema = self.client.get_schema(schema_id, fmt="serialized")
        root = self._add(pool, f"schema-{schema_id}.proto", schema, _well_known())
        return GetMessageClass(pool.FindMessageTypeByName(_message_name(root, indexes)))

    def _add(self, pool: Any, name: str, schema: Any, known: Any) -> Any:
        """Add the file ``schema`` holds to ``pool`` under ``name``, its imports first;
        returns its ``FileDescriptorProto``."""
        from google.protobuf import descriptor_pb2
        from google.protobuf.message import DecodeError as ProtoDecodeError

        try:
            proto = descriptor_pb2.FileDescriptorProto.FromString(
                base64.standard_b64decode(schema.schema_str))
        except (ProtoDecodeError, ValueError) as exc:
            raise DecodeError(f"the registry's Protobuf schema {name} does not parse: "
                              f"{exc}") from exc
        proto.name = name
        references = {ref.name: ref for ref in schema.references or ()}
        for dependency in proto.dependency:
            if _has_file(pool, dependency):
                continue
            if dependency in references:
                ref = references[dependency]
                found = self.client.get_version(ref.subject, ref.version, fmt="serialized")
                self._add(pool, dependency, found.schema, known)
            elif _has_file(known, dependency):
                _copy(known, pool, dependency)
            else:
                raise DecodeError(f"Protobuf schema {name} imports {dependency!r}, which "
                                  "neither its references nor protobuf's well-known types "
                                  "provide")
        pool.Add(proto)
        return proto


def _has_file(pool: Any, name: str) -> bool:
    try:
        pool.FindFileByName(name)
    except KeyError:
        return False
    return True


def _copy(source: Any, pool: Any, name: str) -> None:
    """Copy the file ``name`` (and its imports) from ``source`` into ``pool``."""
    from google.protobuf import descriptor_pb2

    found = source.FindFileByName(name)
    for dependency in found.dependencies:
        if not _has_file(pool, dependency.name):
            _copy(source, pool, dependency.name)
    proto = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(proto)
    pool.Add(proto)


def _message_name(file: Any, indexes: tuple[int, ...]) -> str:
    """The full name of the message ``indexes`` point at: the first is among the file's
    top-level messages, each next one among the previous one's nested messages."""
    names, messages = [], file.message_type
    for index in indexes:
        if not 0 <= index < len(messages):
            raise DecodeError(f"message index {list(indexes)} is not in the schema")
        names.append(messages[index].name)
        messages = messages[index].nested_type
    return ".".join([file.package, *names] if file.package else names)
