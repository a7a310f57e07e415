"""Protobuf records as another team's service produces them: a generated class (built
here at run time: no ``protoc`` in the tests) serialized with confluent-kafka's
``ProtobufSerializer``, which registers the schema and the file it imports."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "",
           repeated: bool = False) -> Any:
    field = _F(name=name, number=number, type=kind,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def order_class() -> Any:
    """``shop.Order``, the second message of ``shop/order.proto``, which imports a
    well-known type and ``shop/money.proto`` (registered under a subject of its own)."""
    money = descriptor_pb2.FileDescriptorProto(name="shop/money.proto", package="shop",
                                               syntax="proto3")
    money.message_type.add(name="Money", field=[
        _field("cents", 1, _F.TYPE_INT64), _field("currency", 2, _F.TYPE_STRING)])
    order = descriptor_pb2.FileDescriptorProto(
        name="shop/order.proto", package="shop", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "shop/money.proto"])
    order.message_type.add(name="Note", field=[_field("text", 1, _F.TYPE_STRING)])
    placed = order.message_type.add(name="Order", field=[
        _field("order_id", 1, _F.TYPE_INT32), _field("sku", 2, _F.TYPE_STRING),
        _field("at", 3, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        _field("total", 4, _F.TYPE_MESSAGE, ".shop.Money"),
        _field("tags", 5, _F.TYPE_STRING, repeated=True),
        _field("state", 6, _F.TYPE_ENUM, ".shop.Order.State")])
    placed.enum_type.add(name="State").value.add(name="NEW", number=0)
    placed.enum_type[0].value.add(name="PAID", number=1)
    pool = descriptor_pool.DescriptorPool()
    stamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(stamp)
    for file in (stamp, money, order):
        pool.Add(file)
    return GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def framed_order(registry: Any, topic: str, **fields: Any) -> bytes:
    """An ``Order`` with ``fields`` (``at``: seconds since the epoch; ``cents``), in the
    Confluent wire format, its schema registered in ``registry``."""
    order_type = order_class()
    at, cents = fields.pop("at", None), fields.pop("cents", None)
    message = order_type(**fields)
    if at is not None:
        message.at.FromSeconds(at)
    if cents is not None:
        message.total.cents, message.total.currency = cents, "EUR"
    serialize = ProtobufSerializer(order_type, registry, {"use.deprecated.format": False})
    framed: bytes = serialize(message, SerializationContext(topic, MessageField.VALUE))
    return framed
