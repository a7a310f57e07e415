"""Singleton keys (``streams.singletons``): who holds a key, what a claim and a release
send, and the machine's release when a run that holds one ends."""

from __future__ import annotations

from schemas.messages import (
    CancelRequested,
    Event,
    HistoryRecord,
    RunStarted,
    SingletonClaim,
    SingletonHolder,
    SingletonReleased,
)
from stepstream import Singleton
from stepstream.function import FunctionDef
from stepstream.retry import RetryPolicy
from streams.machine import Release, RunPolicy, advance
from streams.singletons import SKIPPED, claim_of, on_claim, on_release

EVENT = Event(id="e", name="user/signed-up", data_json='{"user_id":"u1"}', ts=1)


def function(mode: str) -> FunctionDef:
    async def handler(_: object) -> None:
        return None

    return FunctionDef(id="fn", handler=handler, retry=RetryPolicy(),
                       singleton=Singleton(key="event.data.user_id", mode=mode))  # type: ignore[arg-type]


def claim(run_id: str, mode: str = "skip") -> SingletonClaim:
    found = claim_of(function(mode), RunStarted(run_id=run_id, function_id="fn", event=EVENT,
                                                ts=1))
    assert isinstance(found, SingletonClaim)
    return found


def test_a_claim_is_keyed_by_function_and_key_value_and_its_run_carries_the_key() -> None:
    found = claim("r1")
    assert found.key == "singleton:fn:u1" and found.start.singleton_key == found.key


def test_a_free_key_starts_the_run_and_its_release_frees_the_key() -> None:
    holder, out = on_claim(None, claim("r1"), 5)
    assert holder == SingletonHolder(run_id="r1")
    assert [type(o) for o in out] == [RunStarted]
    assert on_release(holder, SingletonReleased("singleton:fn:u1", "r1", 9), 10) == (None, [])


def test_skip_mode_records_the_new_run_as_skipped() -> None:
    holder = SingletonHolder(run_id="r1")
    assert on_claim(holder, claim("r1"), 5) == (holder, [])  # the same event again
    after, out = on_claim(holder, claim("r2"), 5)
    assert after == holder
    assert [(r.run_id, r.kind) for r in out if isinstance(r, HistoryRecord)] == [
        ("r2", "run.started"), ("r2", "run.cancelled")]
    assert isinstance(out[1], HistoryRecord) and out[1].error is not None
    assert out[1].error.type == SKIPPED


def test_cancel_mode_cancels_the_holder_then_starts_the_new_run_once_it_ended() -> None:
    holder, out = on_claim(SingletonHolder(run_id="r1"), claim("r2", "cancel"), 5)
    assert holder is not None and holder.waiting is not None
    assert [(type(o), o.run_id) for o in out] == [(CancelRequested, "r1")]
    # A newer event meanwhile takes the waiting place; the one it replaces is skipped.
    holder, out = on_claim(holder, claim("r3", "cancel"), 6)
    assert holder is not None and holder.waiting is not None
    assert holder.waiting.run_id == "r3"
    assert [(o.run_id, o.kind) for o in out if isinstance(o, HistoryRecord)] == [
        ("r2", "run.started"), ("r2", "run.cancelled")]
    assert on_release(holder, SingletonReleased("k", "r2", 7), 7) == (holder, [])  # not it
    holder, out = on_release(holder, SingletonReleased("k", "r1", 8), 9)
    assert holder == SingletonHolder(run_id="r3")
    assert [(type(o), o.run_id, o.ts) for o in out] == [(RunStarted, "r3", 9)]


def test_a_run_that_holds_a_key_releases_it_when_it_ends() -> None:
    start = claim("r1").start
    state, _ = advance(None, start, RunPolicy())
    assert state is not None and state.singleton_key == "singleton:fn:u1"
    state, out = advance(state, CancelRequested(run_id="r1", reason="x", ts=9), RunPolicy())
    assert [c.released for c in out if isinstance(c, Release)] == [
        SingletonReleased("singleton:fn:u1", "r1", 9)]
    # Claimed again for the same event after it ended: released again, at once.
    _, out = advance(state, start, RunPolicy())
    assert [c.released.run_id for c in out if isinstance(c, Release)] == ["r1"]
