"""How the runs table keeps a run: its state under the run id without the memo, and each
memo entry (a step's saved result) in a record of its own, keyed by its position.

A step's result is then written once, when it is saved, instead of with every later
state of its run: the bytes a step writes to the changelog do not grow with the number
of steps before it (a 2,000-step run would otherwise rewrite megabytes per step). The
records of a run are written in the same transaction, so its state and its memo never
disagree in Kafka.

Keys: ``run id`` for the state; ``0xFF, run id, position (4 bytes, big-endian)`` for
memo entries; ``0xFE, ...`` for the table's indexes (``streams.run_index``), written
with the state. UTF-8 never holds the bytes 0xFE and 0xFF, so no run id can look like
another record's key.
A state written before this layout holds its memo inline; it is read as it is and split
at its next write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from schemas.codec import AvroCodec
from schemas.messages import MemoItem, RunState
from streams.kafka.store import ORDERED
from streams.run_index import index_records, run_key

_MEMO = b"\xff"
_POSITION_BYTES = 4

Read = Callable[[bytes], bytes | None]


def memo_key(run_key: bytes, position: int) -> bytes:
    return _MEMO + run_key + position.to_bytes(_POSITION_BYTES, "big")


class RunRecords:
    """``streams.kafka.store.Layout`` of the runs table."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec

    def records(self, key: bytes, value: RunState | None,
                before: Callable[[], RunState | None], read: Read
                ) -> dict[bytes, bytes | None]:
        out: dict[bytes, bytes | None] = {}
        committed = before()
        old = list(committed.memo.items()) if committed is not None else []
        if old and read(memo_key(key, 0)) is None:
            old = []  # held inline (the older layout): every entry gets its record now
        new = list(value.memo.items()) if value is not None else []
        for position in range(max(len(old), len(new))):
            if position >= len(new):
                out[memo_key(key, position)] = None
            elif position >= len(old) or old[position] != new[position]:
                step_id, entry = new[position]
                out[memo_key(key, position)] = self.codec.encode(MemoItem(step_id, entry))
        out.update(index_records(key, committed, value, read))
        # The state last: a reader of the changelog has the memo of each state it meets.
        out[key] = None if value is None else self.codec.encode(replace(value, memo={}))
        return out

    def value(self, key: bytes, raw: bytes, read: Read) -> RunState:
        state: RunState = self.codec.decode_as(raw, RunState)
        if state.memo:
            return state  # the older layout
        memo = {}
        position = 0
        while (part := read(memo_key(key, position))) is not None:
            item: MemoItem = self.codec.decode_as(part, MemoItem)
            memo[item.step_id] = item.entry
            position += 1
        return replace(state, memo=memo) if memo else state

    def owner(self, key: bytes) -> bytes:
        if key[:1] == _MEMO:
            return key[1:-_POSITION_BYTES]
        if key[:1] == ORDERED:
            return run_key(key)
        return key
