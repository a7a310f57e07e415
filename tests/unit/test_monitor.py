"""The monitor's consumer-lag and runs-in-flight arithmetic, on fakes of Faust's consumer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

from stepstream.settings import Settings
from streams.metrics import Metrics
from streams.monitor import RunTracker, update_lag


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, highwaters: dict[TP, int | None], positions: dict[TP, int]) -> None:
        self.highwaters, self.positions = highwaters, positions

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)


def fake_engine(consumer: FakeConsumer) -> Any:
    topics = {"ns.steps": None, "ns.runs": None, "ns.steps.dlq": None}
    agents = {"executor": SimpleNamespace(channel=SimpleNamespace(topics=("ns.steps",))),
              "orchestrator": SimpleNamespace(channel=SimpleNamespace(topics=("ns.runs",)))}
    return SimpleNamespace(app=SimpleNamespace(consumer=consumer, agents=agents),
                           topics=topics, metrics=Metrics(), settings=Settings(namespace="ns"),
                           projector=SimpleNamespace(topics=["ns.history"],
                                                     lag={("ns.history", 0): 4,
                                                          ("ns.history", 1): 0}),
                           delays=SimpleNamespace(topics=["ns.delay.1s", "ns.delay.1m"],
                                                  lag={("ns.delay.1s", 2): 3}))


def value(metrics: Metrics, name: str, topic: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"topic": topic})


async def test_lag_sums_partitions_and_ages_the_ones_behind() -> None:
    steps0, steps1, runs0 = TP("ns.steps", 0), TP("ns.steps", 1), TP("ns.runs", 0)
    changelog = TP("ns-runs-changelog", 0)
    consumer = FakeConsumer({steps0: 110, steps1: 50, runs0: None, changelog: 999},
                            positions={steps1: 40})
    engine = fake_engine(consumer)
    tracker = RunTracker.__new__(RunTracker)  # no Faust service machinery needed here
    tracker.taken = {steps0: (99, 1000.0)}  # took offset 99, produced at t=1000 s
    await update_lag(engine, tracker, now=1030.0)
    metrics = engine.metrics
    # steps: 110 - 100 = 10 behind on p0 (from what was taken), 50 - 40 on p1 (position)
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.steps") == 20
    assert value(metrics, "stepstream_consumer_lag_seconds", "ns.steps") == 30.0
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.runs") == 0  # not fetched yet
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.steps.dlq") is None  # no agent
    assert value(metrics, "stepstream_consumer_lag_messages", "ns-runs-changelog") is None
    # the history projector's and the delay tiers' consumers, groups of their own
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.history") == 4
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.delay.1s") == 3
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.delay.1m") == 0


async def test_caught_up_partitions_have_no_age() -> None:
    steps0 = TP("ns.steps", 0)
    engine = fake_engine(FakeConsumer({steps0: 100}, {}))
    tracker = RunTracker.__new__(RunTracker)
    tracker.taken = {steps0: (99, 1000.0)}
    await update_lag(engine, tracker, now=5000.0)
    assert value(engine.metrics, "stepstream_consumer_lag_messages", "ns.steps") == 0
    assert value(engine.metrics, "stepstream_consumer_lag_seconds", "ns.steps") == 0


def test_runs_in_flight_follow_table_writes() -> None:
    states = {b"running": SimpleNamespace(status="running", started_at=5),
              b"done": SimpleNamespace(status="completed", started_at=7)}
    runs = object()
    tracker = RunTracker.__new__(RunTracker)
    tracker.engine = SimpleNamespace(runs=runs, state_of=lambda _key, raw: states[raw])
    tracker.in_flight = {}
    tracker.on_table_set(runs, b"r1", b"running")
    tracker.on_table_set(runs, b"r2", b"running")
    tracker.on_table_set(object(), b"r3", b"running")  # another table
    assert tracker.in_flight == {b"r1": 5, b"r2": 5}
    tracker.on_table_set(runs, b"r1", b"done")
    tracker.on_table_set(runs, b"r2", b"not a state")  # undecodable: left as it was
    assert tracker.in_flight == {b"r2": 5}
    tracker.on_table_del(runs, b"r2")
    assert tracker.in_flight == {}


def test_runs_in_flight_are_rebuilt_from_the_recovered_table() -> None:
    tracker = RunTracker.__new__(RunTracker)
    tracker.in_flight = {b"gone": 1}  # a run of a partition revoked since
    tracker.rebuild([(b"r1", SimpleNamespace(status="running", started_at=5)),
                     (b"r2", SimpleNamespace(status="failed", started_at=6)),
                     (b"r3", SimpleNamespace(status="sleeping", started_at=7))])
    assert tracker.in_flight == {b"r1": 5, b"r3": 7}
