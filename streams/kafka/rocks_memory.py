"""One memory budget for every RocksDB store of a worker (Kafka Streams' bounded-memory
``RocksDBConfigSetter``).

A worker opens a RocksDB database per store partition (runs, waiters, functions and
singletons, times the partitions it owns). With RocksDB's defaults each database gets
its own 64 MB memtables and block cache, so a worker's memory would grow with its
partitions, not with its work. Here every database shares one LRU block cache, and
their memtables are charged to that cache through one write-buffer manager: RocksDB
takes about ``budget_mb`` in all, whatever the number of stores.
"""

from __future__ import annotations

from functools import cache
from typing import Any

MEMTABLE_MB = 4
"""Per store: a small memtable, flushed early; the shared budget caps their sum anyway."""


@cache
def shared_options(budget_mb: int) -> Any:
    """``rocksdict.Options`` for every store of the process, sharing ``budget_mb``."""
    from rocksdict import BlockBasedOptions, Cache, Options, WriteBufferManager

    block_cache = Cache(budget_mb * 1024 * 1024)
    # Memtables may take half the budget; their memory counts against the block cache.
    memtables = WriteBufferManager.new_write_buffer_manager_with_cache(
        budget_mb * 1024 * 1024 // 2, False, block_cache)
    table = BlockBasedOptions()
    table.set_block_cache(block_cache)
    table.set_cache_index_and_filter_blocks(True)  # index and filters inside the budget
    options = Options()
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_manager(memtables)
    options.set_write_buffer_size(MEMTABLE_MB * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    return options
