"""Kafka's default partitioner (murmur2 of the key), with each key's hash remembered.

A run's id is the key of every message about it (runs, steps, history, the runs
changelog): a three-step run hashes the same bytes about fifteen times, and aiokafka's
murmur2 is pure Python (2% of a saturated worker's CPU). The partitions are exactly
aiokafka's ``DefaultPartitioner``'s (Java's too): a key's runs messages and its table
entry must stay on the same partition.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

_REMEMBERED_KEYS = 65536
"""About the keys of the runs in flight on a busy worker; an evicted key is hashed again."""


@functools.lru_cache(maxsize=_REMEMBERED_KEYS)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def key_partitioner(key: bytes | None, all_partitions: Sequence[int],
                    available: Sequence[int]) -> int:
    """The partition of ``key`` among ``all_partitions`` (sorted by id); a message
    without a key goes to a random available one."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_key_hash(key) % len(all_partitions)]
