"""The decoded form of the run states this worker wrote last, beside the table's bytes.

The orchestrator reads a run's state from the table for each of its messages once the
previous state is saved; decoding it cost more than the rest of the transition for runs
with many steps (the memo holds every step's output). A state is served from here only
while the table still holds exactly the bytes it was encoded to, so a state restored or
changed by anything else (a changelog recovery after a rebalance) is decoded afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DecodedStates:
    """The last ``size`` states written, keyed by table key, with their encoding."""

    def __init__(self, decode: Callable[[bytes], Any], size: int = 4096) -> None:
        self._decode, self._size = decode, size
        self._states: dict[bytes, tuple[bytes, Any]] = {}

    def written(self, key: bytes, raw: bytes, state: Any) -> None:
        """``state`` was encoded to ``raw`` and written under ``key``."""
        self._states.pop(key, None)  # re-inserted last: the oldest are dropped first
        self._states[key] = (raw, state)
        if len(self._states) > self._size:
            del self._states[next(iter(self._states))]

    def read(self, key: bytes, raw: bytes | None) -> Any:
        """The state the table holds as ``raw`` under ``key`` (None: no state)."""
        if raw is None:
            return None
        known = self._states.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        return self._decode(raw)
