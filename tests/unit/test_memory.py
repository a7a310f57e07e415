"""Freed memory goes back to the system (``streams.memory``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from streams.memory import release_freed_memory

_LIBC = ctypes.util.find_library("c")


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or _LIBC is None,
                    reason="glibc's malloc_trim is Linux's")
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    libc = ctypes.CDLL(_LIBC)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 16 KB blocks, written so their pages are resident, every other one freed: the heap
    # cannot shrink past the live ones, so glibc keeps the holes (as after a backlog).
    blocks = [libc.malloc(16_384) for _ in range(4_000)]
    for block in blocks:
        ctypes.memset(block, 1, 16_384)
    for block in blocks[::2]:
        libc.free(block)
    kept = _rss_kb()

    assert release_freed_memory()

    assert _rss_kb() < kept - 16_000  # ~32 MB freed in 16 KB holes: most of it is back
    for block in blocks[1::2]:
        libc.free(block)
