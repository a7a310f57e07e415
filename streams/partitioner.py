"""Kafka's default partitioner (murmur2 of the key), with each key's hash remembered.

The engine picks every record's partition itself: a run's runs and steps messages and
its state-store changelog record must land on the same partition number (they are
processed by one task), and Java producers and librdkafka's ``murmur2_random`` put a
key where this does, so events produced by any client are routed the same way.

A run's id is the key of every message about it: a three-step run hashes the same
bytes about fifteen times, and murmur2 in Python is slow, hence the cache.
"""

from __future__ import annotations

import functools
import random

_REMEMBERED_KEYS = 8192
"""About the keys of the runs in flight on a busy worker; an evicted key is hashed again.
(Each costs ~250 bytes: at 65,536 a backlog of runs left ~15 MB of keys behind.)"""

_M, _SEED = 0x5BD1E995, 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail:
        rest = data[length - tail:]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=_REMEMBERED_KEYS)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_of(key: bytes | None, partitions: int) -> int:
    """The partition of ``key`` in a topic of ``partitions``; a record without a key
    goes to a random one."""
    if key is None:
        return random.randrange(partitions)
    return _key_hash(key) % partitions
