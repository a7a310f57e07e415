"""Metrics added for run history: step labels stay bounded, per-partition lag follows the
assignment."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

from stepstream.settings import Settings
from streams.metrics import Metrics, step_label
from streams.monitor import RunTracker, update_lag


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, highwaters: dict[TP, int]) -> None:
        self.highwaters = highwaters

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    async def position(self, tp: TP) -> int:
        return 0


def test_a_step_repeated_in_a_loop_counts_under_its_base_id() -> None:
    assert [step_label(s) for s in ("send", "send:1", "send:12", "a:b", "v2:x:3")] == [
        "send", "send", "send", "a:b", "v2:x"]


async def test_per_partition_lag_follows_the_assignment() -> None:
    metrics = Metrics()
    agents = {"executor": SimpleNamespace(channel=SimpleNamespace(topics=("ns.steps",)))}
    consumer = FakeConsumer({TP("ns.steps", 0): 5, TP("ns.steps", 1): 7})
    # the history projector's own consumer, and the delay tiers' (nothing assigned)
    projector = SimpleNamespace(topics=["ns.history"], lag={("ns.history", 3): 2})
    engine: Any = SimpleNamespace(app=SimpleNamespace(consumer=consumer, agents=agents),
                                  topics={"ns.steps": None}, metrics=metrics,
                                  settings=Settings(namespace="ns"), projector=projector,
                                  delays=SimpleNamespace(topics=["ns.delay.1s"], lag={}))
    tracker = RunTracker.__new__(RunTracker)
    tracker.taken = {}

    def lag(partition: str, topic: str = "ns.steps") -> float | None:
        return metrics.registry.get_sample_value(
            "stepstream_consumer_partition_lag_messages",
            {"topic": topic, "partition": partition})

    await update_lag(engine, tracker, now=0.0)
    assert (lag("0"), lag("1"), lag("3", "ns.history")) == (5, 7, 2)

    consumer.highwaters = {TP("ns.steps", 1): 9}  # partition 0 was revoked
    projector.lag = {}
    await update_lag(engine, tracker, now=0.0)
    assert (lag("0"), lag("1"), lag("3", "ns.history")) == (None, 9, None)
