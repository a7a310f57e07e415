"""The invariants of a chaos run, checked from records the engine does not control.

Modelled on Kafka Streams' exactly-once system test (``EosTestDriver``/
``SmokeTestDriver``): the driver knows what it fed in, reads every output topic
back with its own consumer, and compares, instead of asking the application whether
it did well. Here the sources are:

1. what the test sent: for each run, how many steps it must have (the ``ledger``
   function's step ``s{i}`` returns ``i + 1``, so the output is the step count);
2. the ``executions`` table in PostgreSQL, written by the steps themselves: each step
   ran at least once (more after a crash: that is the at-least-once part);
3. the history topic, read from the start by a fresh consumer: exactly one
   ``step.completed`` transition per (run, step), and one ``run.completed`` per run,
   each with the output the input implies. A transition's record may be on the topic
   twice (the orchestrator writes its outbox before its state, so a crash in between
   repeats it); a repeat has the same ``seq``, so transitions are counted by distinct
   ``seq``;
4. the runs table's changelog, read back the same way: the last state of every run is
   the marker of a completed run with the expected output;
5. the read model (``GET /v1/runs/{id}``): what users see agrees.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from schemas.codec import default_codec
from schemas.messages import Delayed, Event, HistoryRecord
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.integration.helpers import get_json, held_partitions, read_all, run_states


@dataclass
class Verdict:
    """What the checker found; ``problems`` must be empty."""

    runs: int = 0
    steps: int = 0
    executions: int = 0
    re_executed: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the test output."""
        extra = sum(n - 1 for n in self.re_executed.values())
        shown = sorted(self.re_executed.items(), key=lambda kv: -kv[1])[:10]
        return (f"{self.runs} runs, {self.steps} steps applied once each; "
                f"{self.executions} executions, {extra} re-executions of "
                f"{len(self.re_executed)} steps"
                + (f" (most: {', '.join(f'{r[:8]}/{s} x{n}' for (r, s), n in shown)})"
                   if shown else "")
                + f"; {len(self.problems)} problems")


def executions(dsn: str) -> list[tuple[str, str, int, float]]:
    """Every row of the executions table: (run id, step id, pid, epoch seconds)."""
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(
            "SELECT run_id, step_id, pid, at FROM executions ORDER BY at").fetchall())


def check_ledger_runs(settings: Settings, expected: dict[str, int], dsn: str,
                      base_url: str | None) -> Verdict:
    """Check every run of ``ledger`` in ``expected`` (run id -> step count).

    ``base_url`` is a live worker whose read model is checked too (None: skip it).
    """
    verdict = Verdict(runs=len(expected), steps=sum(expected.values()))
    problems = verdict.problems
    codec = default_codec()

    # 2. At least once, from the steps' own rows.
    ran = collections.Counter((r, s) for r, s, _, _ in executions(dsn))
    verdict.executions = sum(ran.values())
    for run_id, steps in expected.items():
        for i in range(steps):
            if ran[(run_id, f"s{i}")] == 0:
                problems.append(f"{run_id}/s{i}: never executed")
    verdict.re_executed = {k: n for k, n in ran.items() if n > 1}

    # 3. Exactly once applied, from the history topic.
    completed: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    outputs: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    finished: dict[str, dict[int, tuple[str, Any]]] = collections.defaultdict(dict)
    timeline: dict[str, list[str]] = collections.defaultdict(list)
    for message in read_all(settings.brokers, settings.topic("history"), timeout=60):
        record = codec.decode_as(message.value(), HistoryRecord)
        if record.run_id not in expected:
            continue
        timeline[record.run_id].append(f"{record.seq}:{record.kind}:{record.step_id or ''}"
                                       f"@{message.offset()}")
        if record.kind == "step.completed":
            completed[(record.run_id, record.step_id or "")].add(record.seq)
            outputs[(record.run_id, record.step_id or "")].add(record.output_json or "")
        elif record.kind.startswith("run.") and record.kind != "run.started":
            finished[record.run_id][record.seq] = (record.kind, record.output_json)
    for run_id, steps in expected.items():
        for i in range(steps):
            seqs = completed.get((run_id, f"s{i}"), set())
            if len(seqs) != 1:
                problems.append(f"{run_id}/s{i}: {len(seqs)} step.completed transitions "
                                f"in history (seqs {sorted(seqs)})")
            if outputs.get((run_id, f"s{i}"), set()) - {str(i + 1)}:
                problems.append(f"{run_id}/s{i}: outputs {outputs[(run_id, f's{i}')]}, "
                                f"expected {i + 1}")
        extra = {k for r, k in completed if r == run_id} - {f"s{i}" for i in range(steps)}
        if extra:
            problems.append(f"{run_id}: unexpected steps completed: {sorted(extra)}")
        ends = list(finished.get(run_id, {}).values())
        if ends != [("run.completed", json.dumps({"total": steps}, separators=(",", ":")))]:
            problems.append(f"{run_id}: run endings in history {ends}; "
                            f"history: {timeline[run_id]}")

    # 4. The runs table, from its changelog (the last record of a key wins).
    changelog = f"{settings.namespace}-runs-changelog"
    last = {state.run_id: state
            for _, state in run_states(read_all(settings.brokers, changelog, timeout=60))}
    for run_id, steps in expected.items():
        if run_id not in last:
            problems.append(f"{run_id}: not in the runs changelog")
            continue
        state = last[run_id]
        # A completed run is kept as its marker (streams.machine.completed_marker): its
        # result, no memo; each step's output was checked in the history above.
        want = json.dumps({"total": steps}, separators=(",", ":"))
        if state.status != "completed" or state.output_json != want or state.memo:
            problems.append(f"{run_id}: table says {state.status} with output "
                            f"{state.output_json} and memo {sorted(state.memo)}")

    # 5. The read model agrees.
    if base_url is not None:
        for run_id, steps in expected.items():
            found = _check_document(get_json(f"{base_url}/v1/runs/{run_id}"), run_id, steps)
            problems.extend(f"{line}; history: {timeline[run_id]}" for line in found)
    return verdict


def _check_document(doc: dict[str, Any] | None, run_id: str, steps: int) -> list[str]:
    if doc is None:
        return [f"{run_id}: not in the read model"]
    found: list[str] = []
    if doc["status"] != "completed" or doc["output"] != {"total": steps}:
        found.append(f"{run_id}: read model says {doc['status']} / {doc['output']}")
    ids = [s["id"] for s in doc["steps"]]
    if ids != [f"s{i}" for i in range(steps)]:
        found.append(f"{run_id}: read model steps {ids}")
    for step in doc["steps"]:
        outcomes = [h["outcome"] for h in step["history"]]
        if outcomes.count("completed") != 1 or step["output"] != int(step["id"][1:]) + 1:
            found.append(f"{run_id}/{step['id']}: read model {outcomes} -> {step['output']}")
    return found


def explain(settings: Settings, run_ids: set[str], dsn: str) -> str:
    """Where some runs got to, topic by topic: for the message of a failing test."""
    codec = default_codec()
    lines = []
    rows = collections.Counter((r, s) for r, s, _, _ in executions(dsn) if r in run_ids)
    for message in read_all(settings.brokers, settings.topic("events"), timeout=60):
        event = codec.decode_as(message.value(), Event)
        if run_id_for("ledger", event.id) in run_ids:
            lines.append(f"{run_id_for('ledger', event.id)} event {event.id} at "
                         f"p{message.partition()}@{message.offset()} "
                         f"t={message.timestamp()[1] % 1_000_000}")
    tails: dict[str, dict[int, int]] = {}
    for suffix in ("runs", "steps", "history", "delay.1s"):
        seen: dict[str, list[str]] = collections.defaultdict(list)
        for message in read_all(settings.brokers, settings.topic(suffix), timeout=60):
            part = tails.setdefault(suffix, {})
            part[message.partition()] = max(part.get(message.partition(), -1), message.offset())
            key = (message.key() or b"").decode(errors="replace")
            if key in run_ids:
                try:
                    decoded = codec.decode(message.value())
                except Exception as exc:
                    seen[key].append(f"undecodable {exc}")
                    continue
                if isinstance(decoded, Delayed):  # show what it carries, and when for
                    decoded = codec.decode(decoded.value)
                what = type(decoded).__name__
                detail = getattr(decoded, "kind", None) or getattr(decoded, "step_id", None)
                fields = [f"{name}={getattr(decoded, name)}"
                          for name in ("seq", "chain", "more", "timer_id")
                          if getattr(decoded, name, None) is not None]
                seen[key].append(f"p{message.partition()}@{message.offset()} "
                                 f"t={message.timestamp()[1] % 1_000_000} {what}"
                                 f"({detail} {' '.join(fields)})")
        for run_id in sorted(run_ids)[:5]:
            lines.append(f"{run_id} {suffix}: {seen.get(run_id, [])}")
    last: dict[str, Any] = {}
    changelog = f"{settings.namespace}-runs-changelog"
    for message, state in run_states(read_all(settings.brokers, changelog, 60)):
        if state.run_id in run_ids:
            last[state.run_id] = (message.partition(), message.offset(), state)
    for run_id in sorted(run_ids)[:5]:
        if run_id in last:
            p, o, state = last[run_id]
            lines.append(f"{run_id} table p{p}@{o}: {state.status} memo={sorted(state.memo)} "
                         f"dispatched={state.dispatched} pending={state.pending}")
    lines.extend(_tail_probe(settings, "history", tails.get("history", {})))
    for suffix in ("events", "runs", "steps", "history", "runs-changelog"):
        topic = changelog if suffix == "runs-changelog" else settings.topic(suffix)
        if held := held_partitions(settings.brokers, topic):
            lines.append(f"{topic}: held back by an open transaction (partition: stable "
                         f"end, end): {held}")
    for run_id in sorted(run_ids)[:5]:
        lines.append(f"{run_id} executions: "
                     f"{sorted((s, n) for (r, s), n in rows.items() if r == run_id)}")
    return "\n".join(lines)


def _tail_probe(settings: Settings, suffix: str, last: dict[int, int]) -> list[str]:
    """Whether a fetch that starts at a partition's last message gets it, and the broker's
    high watermark: the dev broker has been seen to report one short."""
    from confluent_kafka import Consumer, TopicPartition

    topic, found = settings.topic(suffix), []
    consumer = Consumer({"bootstrap.servers": settings.brokers, "group.id": "probe",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    try:
        for partition, offset in sorted(last.items()):
            tp = TopicPartition(topic, partition, offset)
            high = consumer.get_watermark_offsets(tp, timeout=5)[1]
            consumer.assign([tp])
            got = None
            deadline = time.monotonic() + 3
            while got is None and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    got = message.offset()
            found.append(f"{suffix}[{partition}] last {offset}, high watermark {high}, "
                         f"fetch from {offset} got {got}")
    finally:
        consumer.close()
    return found
