"""The waiter matcher over a real store and a fake producer: one entry per waiting run,
an event wakes only its own, an abort takes the index back with the store, and a table
of the older layout (a WaiterSet per name) is converted."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from schemas.codec import default_codec
from schemas.messages import Event, EventMatched, Waiter, WaiterChanged, WaiterSet
from stepstream.settings import Settings
from streams.delays import DelayTiers
from streams.kafka.store import MemoryBackend, StateStore, WholeValues
from streams.kafka.task import Outcome
from streams.metrics import Metrics
from streams.processors.matcher import WAITERS, Matcher
from streams.processors.outputs import Outputs
from streams.waiters import entry_key
from tests.fakes import FakeMessage, fake_task

SETTINGS = Settings(namespace="ns", partitions=1)
CODEC = default_codec()
TOPICS = {SETTINGS.topic(t): 1 for t in ("runs", "waiters", "events.by-name", "quarantine")}


def waiter(run_id: str, order: int) -> Waiter:
    trigger = Event(id=f"e-{run_id}", name="orders/placed", data_json=f'{{"order":{order}}}',
                    ts=1)
    return Waiter(run_id=run_id, step_id="paid", kind="step", event_name="orders/paid",
                  trigger=trigger, expires_at=2**62,
                  condition="async.data.order == event.data.order")


def paid(order: int) -> Event:
    return Event(id=f"pay-{order}", name="orders/paid", data_json=f'{{"order":{order}}}',
                 ts=10)


def matcher_task(*stored: tuple[bytes, Any]) -> tuple[Matcher, Any, Any, StateStore[Any]]:
    store: StateStore[Any] = StateStore(
        "ns-waiters-changelog", 0, MemoryBackend(),
        WholeValues(CODEC.encode, lambda raw: CODEC.decode_as(raw, (Waiter, WaiterSet))))
    store.restored({key: CODEC.encode(value) for key, value in stored}, len(stored))
    task, producer = fake_task(**{WAITERS: store})
    matcher = Matcher(Outputs(SETTINGS, CODEC, Metrics(), TOPICS, DelayTiers(SETTINGS)))
    matcher.task_started(task)
    return matcher, task, producer, store


offset = iter(range(10**6))


async def feed(matcher: Matcher, task: Any, topic: str, key: str, record: Any) -> None:
    await matcher.process(task, FakeMessage(SETTINGS.topic(topic), 0, next(offset),
                                            CODEC.encode(record), key=key.encode()))


def woken(producer: Any) -> list[str]:
    return [CODEC.decode_as(value, EventMatched).run_id
            for records, _ in producer.transactions
            for topic, _, _, value in records if topic == SETTINGS.topic("runs")]


async def test_an_event_wakes_its_own_waiter_which_then_leaves_the_table() -> None:
    matcher, task, producer, store = matcher_task()
    for run, order in (("r1", 1), ("r2", 2), ("r3", 3)):
        await feed(matcher, task, "waiters", "orders/paid", WaiterChanged(waiter(run, order),
                                                                          True))
    await task.commit()
    await feed(matcher, task, "events.by-name", "orders/paid", paid(2))
    await task.commit()
    assert woken(producer) == ["r2"]
    assert len(store) == 2 and store.get(entry_key(waiter("r2", 2))) is None
    await feed(matcher, task, "events.by-name", "orders/paid", paid(2))  # a second one
    await task.commit()
    assert woken(producer) == ["r2"]


async def test_a_waiter_removed_by_its_run_is_not_woken() -> None:
    matcher, task, producer, store = matcher_task((entry_key(waiter("r1", 1)), waiter("r1", 1)))
    await feed(matcher, task, "waiters", "orders/paid", WaiterChanged(waiter("r1", 1), False))
    await feed(matcher, task, "events.by-name", "orders/paid", paid(1))
    await task.commit()
    assert woken(producer) == [] and len(store) == 0


async def test_after_an_abort_the_same_event_wakes_the_waiter_again() -> None:
    matcher, task, producer, store = matcher_task((entry_key(waiter("r1", 1)), waiter("r1", 1)))
    await feed(matcher, task, "events.by-name", "orders/paid", paid(1))
    producer.fail_next = KafkaError._STATE
    assert await task.commit() is Outcome.ABORTED
    await feed(matcher, task, "events.by-name", "orders/paid", paid(1))  # read again
    assert await task.commit() is Outcome.COMMITTED
    assert woken(producer) == ["r1"] and len(store) == 0


async def test_a_table_of_the_older_layout_is_converted_in_the_first_transaction() -> None:
    old = WaiterSet(waiters=[waiter("r1", 1), waiter("r2", 2)])
    matcher, task, producer, store = matcher_task((b"orders/paid", old))
    await task.commit()
    assert store.get(b"orders/paid") is None and len(store) == 2
    await feed(matcher, task, "events.by-name", "orders/paid", paid(1))
    await task.commit()
    assert woken(producer) == ["r1"]
