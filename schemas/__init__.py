"""Avro schemas of every stepstream record, and the codec that carries them."""

from schemas.codec import AvroCodec, DecodeError, NewerSchemaError, default_codec

__all__ = ["AvroCodec", "DecodeError", "NewerSchemaError", "default_codec"]
