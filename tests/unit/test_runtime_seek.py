"""Rewinding a partition: one revoked meanwhile is skipped, a refused seek rejoins; and
pausing partitions held back or throttled."""

from __future__ import annotations

import time
from typing import Any

from stepstream.settings import Settings
from streams.kafka.runtime import Runtime
from tests.fakes import SeekingConsumer


def runtime_with(consumer: Any) -> Runtime:
    runtime = Runtime(Settings(), group_id="g", transactional_prefix="t", processors={},
                      fetch_wait_ms=10, quarantine=lambda *_: None)
    runtime._consumer = consumer
    return runtime


def test_a_partition_revoked_meanwhile_is_not_rewound() -> None:
    # A batch taken before a rebalance holds records of partitions revoked inside it.
    consumer = SeekingConsumer(assigned=[("runs", 1)])
    runtime = runtime_with(consumer)
    runtime._seek({("runs", 1): 5, ("runs", 2): 6})
    assert consumer.seeks == [("runs", 1, 5)]
    assert not runtime._rejoin


def test_a_refused_seek_makes_the_worker_rejoin_instead_of_skipping_records() -> None:
    runtime = runtime_with(SeekingConsumer(assigned=[("runs", 1)], refuse=True))
    runtime._seek({("runs", 1): 5})
    assert runtime._rejoin


def test_a_partition_held_back_is_paused_until_its_time_and_throttling_pauses_a_topic(
        ) -> None:
    consumer = SeekingConsumer(assigned=[("tier", 0), ("tier", 1), ("steps", 0)])
    runtime = runtime_with(consumer)
    runtime.tasks = {0: Task(0), 1: Task(1)}  # type: ignore[dict-item]
    runtime.hold_back("tier", 1, time.monotonic() + 3600)
    runtime.hold_back("tier", 0, time.monotonic() - 1)  # its time has come already
    runtime._apply_pauses()
    assert consumer.paused == {("tier", 1)}
    runtime.throttle("steps", True)
    runtime._apply_pauses()
    assert consumer.paused == {("tier", 1), ("steps", 0)}
    runtime.throttle("steps", False)
    runtime.hold_back("tier", 1, time.monotonic() - 1)
    runtime._apply_pauses()
    assert consumer.paused == set()


class Task:
    """A live task, as ``Runtime.task_for`` sees it."""

    def __init__(self, partition: int) -> None:
        self.partition, self.live = partition, True
