"""What a shadow backfill found: each shadow run against the live run of the same event,
counted, with the first examples of what differs (``stepstream backfill --shadow``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from stepstream.masking import SecretFields
from stepstream.testing.result import RunResult

Verdict = Literal["same", "different", "no_live_run", "shadow_failed"]
ENDED = ("completed", "failed", "cancelled")
_MOST_DIFFS = 5
"""Differences listed per example (paths into the outputs)."""


def differences(live: Any, shadow: Any, path: str = "$") -> list[str]:
    """Where two JSON values differ, as ``path: live -> shadow`` lines, at most
    ``_MOST_DIFFS``."""
    found: list[str] = []
    _walk(live, shadow, path, found)
    return found


def _walk(live: Any, shadow: Any, path: str, found: list[str]) -> None:
    if len(found) >= _MOST_DIFFS:
        return
    if isinstance(live, dict) and isinstance(shadow, dict):
        for key in sorted(live.keys() | shadow.keys(), key=str):
            if key not in shadow:
                found.append(f"{path}.{key}: {_short(live[key])} -> (absent)")
            elif key not in live:
                found.append(f"{path}.{key}: (absent) -> {_short(shadow[key])}")
            else:
                _walk(live[key], shadow[key], f"{path}.{key}", found)
            if len(found) >= _MOST_DIFFS:
                return
    elif isinstance(live, list) and isinstance(shadow, list) and len(live) == len(shadow):
        for index, (one, other) in enumerate(zip(live, shadow, strict=True)):
            _walk(one, other, f"{path}[{index}]", found)
    elif live != shadow or type(live) is not type(shadow):
        found.append(f"{path}: {_short(live)} -> {_short(shadow)}")


def _short(value: Any, most: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= most else text[:most - 1] + "…"


@dataclass(frozen=True, slots=True)
class Example:
    """One event whose shadow run differs from its live run, or could not run."""

    event_id: str
    run_id: str
    diff: list[str]
    """``path: live -> shadow`` lines; for a failed shadow run, why it failed."""


def compare(live: dict[str, Any] | None, shadow: RunResult, secrets: SecretFields
            ) -> tuple[Verdict, list[str]]:
    """The shadow run ``shadow`` against the live run's document ``live`` (the read
    model's: secret fields masked, so the shadow's output is masked alike)."""
    if live is None or live.get("status") not in ENDED:
        return "no_live_run", []
    found: list[str] = []
    if live["status"] != shadow.status:
        found.append(f"status: {live['status']} -> {shadow.status}")
    if shadow.status == "completed" == live["status"]:
        found += differences(live.get("output"), secrets.mask(shadow.output), "output")
    elif shadow.status == live["status"]:
        error = (live.get("error") or {}).get("type")
        if shadow.error is None or error != shadow.error.type:
            found.append(f"error: {error} -> {shadow.error and shadow.error.type}")
    return ("different" if found else "same"), found


@dataclass(slots=True)
class ShadowReport:
    """The counts of a shadow backfill and its first examples."""

    function: str
    topic: str
    from_ms: int | None
    to_ms: int | None
    read: int = 0
    """Records read, in the range or not."""
    in_range: int = 0
    """Records whose timestamp is in the range."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("same", "different", "no_live_run", "shadow_failed", "not_started",
         "undecodable"), 0))
    """Per verdict, and records in range that start no run of the function
    (``not_started``: another event's, or its ``if_`` said no) or make no event
    (``undecodable``: the live trigger quarantined them)."""
    differences: list[Example] = field(default_factory=list)
    failures: list[Example] = field(default_factory=list)
    examples: int = 10
    """Most examples kept of each kind."""

    def count(self, verdict: str, example: Example | None = None) -> None:
        self.counts[verdict] += 1
        kept = self.differences if verdict == "different" else \
            self.failures if verdict == "shadow_failed" else None
        if example is not None and kept is not None and len(kept) < self.examples:
            kept.append(example)

    def as_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "examples"}

    def lines(self) -> list[str]:
        """The report as people read it."""
        counts = self.counts
        out = [f"{self.in_range} records in range of {self.read} read: "
               f"{counts['same']} same, {counts['different']} different, "
               f"{counts['no_live_run']} with no live run, {counts['shadow_failed']} "
               f"shadow runs failed, {counts['not_started']} start no run, "
               f"{counts['undecodable']} undecodable"]
        for title, examples in (("different", self.differences),
                                ("shadow failed", self.failures)):
            for example in examples:
                out.append(f"{title}: event {example.event_id} (run {example.run_id})")
                out += [f"    {line}" for line in example.diff]
        return out
