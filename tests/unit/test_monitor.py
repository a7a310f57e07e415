"""The monitor's consumer-lag and runs-in-flight arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

from streams.metrics import Metrics
from streams.monitor import update_lag, update_source_lag

TOPICS = ["ns.delay.1m", "ns.delay.1s", "ns.history", "ns.runs", "ns.steps"]


def value(metrics: Metrics, name: str, topic: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"topic": topic})


def partition_value(metrics: Metrics, topic: str, partition: int) -> float | None:
    return metrics.registry.get_sample_value("stepstream_consumer_partition_lag_messages",
                                             {"topic": topic, "partition": str(partition)})


def test_lag_sums_partitions_and_ages_the_ones_behind() -> None:
    metrics = Metrics()
    lag = {("ns.steps", 0): 10, ("ns.steps", 1): 10, ("ns.runs", 0): 0,
           ("ns.history", 0): 4, ("ns.history", 1): 0, ("ns.delay.1s", 2): 3,
           ("ns-runs-changelog", 0): 999}
    taken = {("ns.steps", 0): (99, 1000.0)}  # took offset 99, produced at t=1000 s
    update_lag(metrics, TOPICS, lag, taken, 1030.0, frozenset())
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.steps") == 20
    assert value(metrics, "stepstream_consumer_lag_seconds", "ns.steps") == 30.0
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.runs") == 0
    assert value(metrics, "stepstream_consumer_lag_messages", "ns-runs-changelog") is None
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.history") == 4
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.delay.1s") == 3
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.delay.1m") == 0
    assert partition_value(metrics, "ns.steps", 1) == 10


def test_caught_up_partitions_have_no_age_and_revoked_ones_lose_their_series() -> None:
    metrics = Metrics()
    taken = {("ns.steps", 0): (99, 1000.0)}
    series = update_lag(metrics, TOPICS, {("ns.steps", 0): 0, ("ns.steps", 1): 5}, taken,
                        5000.0, frozenset())
    assert value(metrics, "stepstream_consumer_lag_messages", "ns.steps") == 5
    assert value(metrics, "stepstream_consumer_lag_seconds", "ns.steps") == 0
    update_lag(metrics, TOPICS, {("ns.steps", 0): 0}, taken, 5000.0, series)
    assert partition_value(metrics, "ns.steps", 1) is None
    assert partition_value(metrics, "ns.steps", 0) == 0


def test_source_lag_is_per_group_and_topic() -> None:
    metrics = Metrics()
    orders = SimpleNamespace(group_id="ns.source.fulfil", processors={"shop.orders": None},
                             lag={("shop.orders", 0): 7, ("shop.orders", 2): 5})
    waits = SimpleNamespace(group_id="ns.waits.shop.paid", processors={"shop.paid": None},
                            lag={})
    update_source_lag(metrics, [orders, waits])
    sample = metrics.registry.get_sample_value
    assert sample("stepstream_source_lag_messages",
                  {"group": "ns.source.fulfil", "topic": "shop.orders"}) == 12
    assert sample("stepstream_source_lag_messages",
                  {"group": "ns.waits.shop.paid", "topic": "shop.paid"}) == 0
