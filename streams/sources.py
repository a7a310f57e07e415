"""The consumer groups that read source topics (``TopicTrigger``): which there are, and
where a new one starts.

One group (and one runtime, ``streams.kafka.runtime``) per function triggered by a
topic, ``{namespace}.source.{function id}``, and one per topic that runs wait or cancel
on, ``{namespace}.waits.{topic}``. Not the engine's group: a runtime's task is one
partition number of all its inputs, and a source topic has its own partition count (its
partition 5 may not exist, or belong elsewhere), so its records cannot join the tasks
of runs. What exactly-once needs holds in the source's own group: its task's
transaction carries the runs it starts (or the events it forwards) and its offsets.
A group per function, not per topic, so that each function starts where its ``start``
says and a function added later to a topic does not inherit another's position. The
waits' group starts at the end of its topic: a wait sees only later events anyway.

Each task's transactional id is ``{group}.{partition}``: unique, and stable across
workers, which is what fences a previous owner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepstream.errors import ConfigError
from stepstream.function import FunctionDef
from stepstream.settings import Settings
from stepstream.topic_trigger import TopicTrigger
from topics.catalog import is_engine_topic

log = logging.getLogger("stepstream.sources")


@dataclass(frozen=True, slots=True)
class SourceGroup:
    """A consumer group over one source topic."""

    topic: str
    group: str
    start: TopicTrigger | None
    """Where the group starts the first time (None: at the topic's end)."""
    function: FunctionDef | None
    """The function whose runs its records start; None: its records go to the waiters."""


def source_groups(namespace: str, functions: Mapping[str, FunctionDef]) -> list[SourceGroup]:
    """The source groups of an app's ``functions``."""
    groups = [SourceGroup(f.source.topic, f"{namespace}.source.{f.id}", f.source, f)
              for f in functions.values() if f.source is not None]
    waited = sorted({topic for f in functions.values() for topic in f.waits_on})
    groups += [SourceGroup(topic, f"{namespace}.waits.{topic}", None, None)
               for topic in waited]
    return groups


def check_sources(groups: list[SourceGroup], existing: Mapping[str, int],
                  settings: Settings) -> None:
    """Refuse source topics that do not exist (stepstream never creates them) or that
    belong to the namespace (an engine topic is no source).

    Raises:
        ConfigError: naming the topics.
    """
    missing = sorted({g.topic for g in groups if g.topic not in existing})
    if missing:
        raise ConfigError(f"source topics {missing} do not exist: stepstream reads them and "
                          "never creates them; create them, or check their names and the "
                          "worker's read access (docs/production.md, 'Source topics')")
    own = sorted({g.topic for g in groups if is_engine_topic(settings, g.topic)})
    if own:
        raise ConfigError(f"topics {own} belong to the namespace {settings.namespace!r}: "
                          "trigger on their events by name instead")


def first_offsets(group: SourceGroup, consumer: Any, partitions: list[tuple[str, int]]
                  ) -> dict[tuple[str, int], int]:
    """Where ``group`` starts reading ``partitions``, which it has no committed offset
    for: explicit offsets, not the consumer's ``auto.offset.reset`` (on the dev broker
    a new group at ``latest`` received nothing, DESIGN §8)."""
    from confluent_kafka import TopicPartition

    start = group.start.start if group.start is not None else "latest"
    found: dict[tuple[str, int], int] = {}
    if start == "earliest" or _has_offsets(consumer, group.topic):
        # The runtime's default: from the beginning. A group that has offsets already
        # meets a partition added to the topic since: all its records are new.
        return found
    ends = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10,
                                               cached=False)[1] for tp in partitions}
    at_ms = group.start.start_ms if group.start is not None else None
    if at_ms is None:
        return ends
    for tp in consumer.offsets_for_times([TopicPartition(t, p, at_ms) for t, p in partitions],
                                         timeout=10):
        key = (tp.topic, tp.partition)
        found[key] = tp.offset if tp.offset >= 0 else ends[key]  # none that late: the end
    log.info("%s starts at %s (records from %d ms)", group.group, found, at_ms)
    return found


def _has_offsets(consumer: Any, topic: str) -> bool:
    """Whether the consumer's group has committed an offset in any partition of ``topic``."""
    from confluent_kafka import TopicPartition

    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    return any(tp.offset >= 0 for tp in committed)
