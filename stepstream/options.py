"""Function options, as frozen dataclasses with ``timedelta`` durations."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from stepstream.topic_trigger import TopicTrigger


@dataclass(frozen=True, kw_only=True)
class CancelOn:
    """Cancel a running run when a matching event arrives.

    In ``if_``, ``event`` is the run's triggering event and ``async`` the incoming one,
    e.g. ``"async.data.order_id == event.data.order_id"``.
    """

    event: str | TopicTrigger
    """Name of the event that cancels, or a topic whose records cancel
    (``TopicTrigger``: events named after the topic)."""
    if_: str | None = None
    """CEL condition; None matches every event of that name."""
    timeout: timedelta = timedelta(days=7)
    """How long the rule stays armed."""


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Deadlines after which a run ends ``cancelled`` with the reason."""

    start: timedelta | None = None
    """From the triggering event until an executor first picks the run up."""
    finish: timedelta | None = None
    """From the run's start until its end."""


def to_ms(duration: timedelta | float | int) -> int:
    """A duration (``timedelta`` or seconds) in whole milliseconds."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds < 0:
        raise ValueError("durations must not be negative")
    return round(seconds * 1000)


# --- flow control (docs/flow-control.md) ----------------------------------------------
#
# Every option below is enforced across all workers, with its state in Redis. ``key`` is
# a CEL expression over ``event`` (e.g. ``"event.data.tenant_id"``): each value of it gets
# its own limit; None: one limit for the whole function.

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_TEXT = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
PRIORITY_BOUND_S = 600
"""A priority expression's value is clamped to ``[-600, 600]`` seconds (as in Inngest)."""


def parse_duration(value: timedelta | float | str) -> timedelta:
    """A duration from a ``timedelta``, seconds, or text such as ``"30s"``, ``"1m30s"``,
    ``"500ms"``, ``"1h"``, ``"2d"``.

    Raises:
        ValueError: the value is not a duration, or not a positive one.
    """
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        duration = timedelta(seconds=value)
    elif isinstance(value, str) and _DURATION_TEXT.fullmatch(text := value.replace(" ", "")):
        duration = timedelta(milliseconds=sum(float(n) * _UNITS_MS[u]
                                              for n, u in _DURATION.findall(text)))
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. '500ms', '30s', '1m', '1h')")
    if duration <= timedelta(0):
        raise ValueError(f"duration {value!r} must be positive")
    return duration


@dataclass(frozen=True, kw_only=True)
class Concurrency:
    """At most ``limit`` steps of the function execute at once (per ``key`` value).

    Counted per step execution across all workers: a step runs only while it holds a
    slot, a lease in Redis renewed while it runs, so a killed worker's slot comes back.
    """

    limit: int
    """Steps executing at once."""
    key: str | None = None
    """CEL over ``event``: one limit per value; None: one limit for the function."""

    def __post_init__(self) -> None:
        _positive("concurrency limit", self.limit)


@dataclass(frozen=True, kw_only=True)
class Throttle:
    """At most ``limit`` runs start per ``period`` (per ``key`` value), spread evenly.

    Runs over the limit are queued, not dropped: each waits in the delay topics until
    its turn (one start every ``period / limit``; ``burst`` may start back to back).
    """

    limit: int
    """Run starts per period."""
    period: timedelta
    """The period the limit applies to."""
    key: str | None = None
    """CEL over ``event``: one limit per value; None: one limit for the function."""
    burst: int = 1
    """Starts allowed back to back before the spacing applies."""

    def __post_init__(self) -> None:
        _positive("throttle limit", self.limit)
        _positive("throttle burst", self.burst)
        _positive_duration("throttle period", self.period)


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most ``limit`` runs start in any window of ``period`` (per ``key`` value).

    Events over the limit start no run: they are dropped, counted in
    ``stepstream_runs_rate_limited`` and shown as ``cancelled`` runs whose error type is
    ``RateLimited``.
    """

    limit: int
    """Runs per period."""
    period: timedelta
    """The sliding window the limit applies to."""
    key: str | None = None
    """CEL over ``event``: one limit per value; None: one limit for the function."""

    def __post_init__(self) -> None:
        _positive("rate_limit limit", self.limit)
        _positive_duration("rate_limit period", self.period)


@dataclass(frozen=True, kw_only=True)
class Debounce:
    """A run starts with the last event (per ``key`` value) once no newer one came
    for ``period``. "Last" is the greatest event ``ts``; ties go to the later arrival.
    """

    period: timedelta
    """Quiet time after the last event before its run starts."""
    key: str | None = None
    """CEL over ``event``: one debounce per value; None: one for the function."""

    def __post_init__(self) -> None:
        _positive_duration("debounce period", self.period)


@dataclass(frozen=True, kw_only=True)
class BatchEvents:
    """Start one run per batch of up to ``max_size`` events, or whatever came within
    ``timeout`` of a batch's first event. The handler gets the list as ``ctx.events``
    (``ctx.event`` is the first).
    """

    max_size: int
    """Events per batch; a full batch starts at once."""
    timeout: timedelta
    """Longest a batch waits for more events after its first."""
    key: str | None = None
    """CEL over ``event``: one batch per value; None: one batch for the function."""

    def __post_init__(self) -> None:
        _positive("batch_events max_size", self.max_size)
        _positive_duration("batch_events timeout", self.timeout)


@dataclass(frozen=True, kw_only=True)
class Priority:
    """Which of the runs queued behind a concurrency limit or a throttle goes first."""

    run: str
    """CEL over ``event`` giving seconds ahead: a run with ``run = 60`` goes before runs
    queued up to a minute before it. Clamped to ``[-600, 600]``."""


@dataclass(frozen=True, kw_only=True)
class Singleton:
    """At most one running run of the function per ``key`` value.

    A new event for a key whose run is still running either starts no run (``skip``: the
    event's run is recorded ``cancelled``, error ``SingletonSkipped``), or cancels the
    running one and starts once it has ended (``cancel``).
    """

    key: str | None = None
    """CEL over ``event``: one singleton per value; None: one for the function."""
    mode: Literal["skip", "cancel"] = "skip"
    """What a new event does while its key's run is running."""

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "cancel"):
            raise ValueError(f"singleton mode must be 'skip' or 'cancel', not {self.mode!r}")


def _positive(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, not {value!r}")


def _positive_duration(what: str, value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(f"{what} must be a positive timedelta, not {value!r}")


_T = TypeVar("_T")


def option(cls: type[_T], value: _T | Mapping[str, Any] | None, what: str) -> _T | None:
    """An option given as its dataclass or as a dict (``{"limit": 5, "period": "1m"}``).

    Durations in a dict may be ``timedelta``, seconds, or text (``"30s"``, ``"1h"``).

    Raises:
        ValueError: unknown fields, missing fields, or bad values.
    """
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a {cls.__name__} or a dict, not {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(value) - set(fields)
    if unknown:
        raise ValueError(f"{what}: unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    converted = {name: parse_duration(v) if fields[name].type in ("timedelta", timedelta)
                 else v for name, v in value.items()}
    try:
        return cls(**converted)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def concurrency_options(value: int | Concurrency | Mapping[str, Any]
                        | Sequence[Concurrency | Mapping[str, Any]] | None
                        ) -> tuple[Concurrency, ...]:
    """``concurrency=`` as a tuple of limits: an int (function-level limit), one limit,
    or a list of them (function-level and per-key limits together)."""
    if value is None:
        return ()
    if isinstance(value, int):  # bool too: Concurrency refuses it
        return (Concurrency(limit=value),)
    items = [value] if isinstance(value, Concurrency | Mapping) else list(value)
    limits = tuple(option(Concurrency, item, "concurrency") for item in items)
    return tuple(limit for limit in limits if limit is not None)


@dataclass(frozen=True, kw_only=True)
class FlowControl:
    """A function's flow-control options together, as ``@ss.function`` normalised them."""

    concurrency: tuple[Concurrency, ...] = ()
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch_events: BatchEvents | None = None
    priority: Priority | None = None

    def expressions(self) -> list[str]:
        """Every CEL expression in the options (compiled at registration)."""
        found = [c.key for c in self.concurrency]
        found += [o.key for o in (self.throttle, self.rate_limit, self.debounce,
                                  self.batch_events) if o is not None]
        if self.priority is not None:
            found.append(self.priority.run)
        return [e for e in found if e is not None]

    @property
    def at_trigger(self) -> bool:
        """Whether events go through Redis before they start a run."""
        return any(o is not None for o in (self.rate_limit, self.debounce, self.batch_events))
