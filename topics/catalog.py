"""The topic catalog (DESIGN §3): one ``TopicSpec`` per topic of a namespace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from stepstream.settings import Settings

DELAY_TIERS: tuple[tuple[str, timedelta], ...] = (
    ("1s", timedelta(seconds=1)),
    ("10s", timedelta(seconds=10)),
    ("1m", timedelta(minutes=1)),
    ("10m", timedelta(minutes=10)),
    ("1h", timedelta(hours=1)),
)
"""Delay tiers, shortest first: each topic holds messages for the same time (FIFO)."""

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as it must exist on the broker."""

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str] = field(default_factory=dict)
    co_partitioned: bool = False
    """Must have exactly ``Settings.partitions`` partitions (keyed by run id, joined)."""


def _deleting(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


def catalog(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic of ``settings.namespace``, with partitions and configs."""
    n, rf, topic = settings.partitions, settings.replication, settings.topic

    def spec(name: str, configs: dict[str, str], *, joined: bool = True) -> TopicSpec:
        return TopicSpec(name, n, rf, configs, co_partitioned=joined)

    return (
        # Read by the engine's tasks beside runs and steps (partition p of every topic
        # the engine reads is one task): the same partition count.
        spec(topic("events"), _deleting(7)),
        spec(topic("runs"), _deleting(7)),
        spec(topic("steps"), _deleting(7)),
        *(spec(topic(f"delay.{tier}"), _deleting(2)) for tier, _ in DELAY_TIERS),
        # wait_for_event and cancel_on: waiters and events re-keyed by event name meet
        # in one agent, so both topics must have the same partitions.
        spec(topic("waiters"), _deleting(30)),
        spec(topic("events.by-name"), _deleting(2)),
        spec(topic("history"), _deleting(30)),
        spec(topic("steps.dlq"), _deleting(30)),
        spec(topic("quarantine"), _deleting(30), joined=False),
        # The state stores' changelogs ("{namespace}-{store}-changelog", the names the
        # first, Faust-based runtime gave them: a running deployment keeps its state).
        spec(f"{settings.namespace}-runs-changelog", {"cleanup.policy": "compact"}),
        spec(f"{settings.namespace}-waiters-changelog", {"cleanup.policy": "compact"}),
        spec(f"{settings.namespace}-functions-changelog", {"cleanup.policy": "compact"}),
        spec(f"{settings.namespace}-singletons-changelog", {"cleanup.policy": "compact"}),
        # The public lifecycle topic, derived from history (streams.processors.lifecycle)
        # only when asked for; keyed by run id like history, kept as long.
        *([spec(topic("lifecycle"), _deleting(30), joined=False)]
          if settings.lifecycle_format != "none" else []),
    )


def is_engine_topic(settings: Settings, name: str) -> bool:
    """Whether ``name`` is one of the namespace's topics (or could become one: every
    topic under ``{namespace}.``), which no user record may be read from or written to
    as a source topic."""
    return name.startswith(f"{settings.namespace}.") or name in {
        spec.name for spec in catalog(settings)}
