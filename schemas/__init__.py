"""Avro schemas of every stepstream record, and the codec that carries them."""

from schemas.codec import AvroCodec, DecodeError, default_codec

__all__ = ["AvroCodec", "DecodeError", "default_codec"]
