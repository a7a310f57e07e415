"""Exactly-once inside Kafka: what another team's transactional producer writes, and a
worker frozen past its session timeout (a zombie) that comes back."""

from __future__ import annotations

import itertools
import json
import os
import signal
import uuid

import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.messages import RunState
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions
from tests.integration.helpers import get_json, read_all, run_states, wait_for, wait_for_run


def _envelope(event_id: str) -> bytes:
    return json.dumps({"name": "test/chain", "id": event_id,
                       "data": {"steps": 1, "pause": 0}}).encode()


def _group_at_the_end(settings: Settings, topic: str) -> bool:
    """Whether the engine's group committed every partition of ``topic`` up to its end."""
    consumer = Consumer({"bootstrap.servers": settings.brokers, "group.id": settings.namespace,
                         "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        committed = consumer.committed(partitions, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                for tp in partitions]
    finally:
        consumer.close()
    # At or past: the dev broker reports the end of a multi-record batch short.
    return all(tp.offset >= end for tp, end in zip(committed, ends, strict=True))


def test_a_transactional_producers_committed_events_run_once_and_the_commit_reaches_the_end(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    events = settings.topic("events")
    # Another team's exactly-once producer. linger.ms keeps the aborted transaction's
    # records in the producer until the abort drops them: the dev broker shows records of
    # an aborted transaction that reached it (DESIGN §8); Kafka hides them too.
    producer = Producer({"bootstrap.servers": settings.brokers, "linger.ms": 200,
                         "transactional.id": f"other-team-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    committed, aborted = [], []
    for batch in range(4):
        ids = [f"tx{batch}-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
        producer.begin_transaction()
        for event_id in ids:
            producer.produce(events, key=event_id.encode(), value=_envelope(event_id))
        if batch == 2:
            producer.abort_transaction(30)
            aborted += ids
        else:
            producer.commit_transaction(30)
            committed += ids

    for event_id in committed:
        run = wait_for_run(worker.url, run_id_for("chain", event_id))
        assert run["status"] == "completed" and run["output"] == {"total": 1}
    for event_id in aborted:
        assert get_json(f"{worker.url}/v1/runs/{run_id_for('chain', event_id)}") is None
    # Past the last event of each partition lies a commit marker: the committed offset
    # must pass it too, or the lag never reaches 0 and every restart reads again.
    for topic in (events, settings.topic("runs")):
        wait_for(lambda topic=topic: _group_at_the_end(settings, topic), timeout=30,
                 what=f"the group's commit at the end of every {topic} partition")


def _states(settings: Settings) -> dict[str, list[RunState]]:
    """Every run's states in the order the runs changelog holds them."""
    states = dict[str, list[RunState]]()
    changelog = f"{settings.namespace}-runs-changelog"
    for _, state in run_states(read_all(settings.brokers, changelog, 60)):
        states.setdefault(state.run_id, []).append(state)
    return states


def _regressions(states: list[RunState]) -> list[str]:
    problems = []
    for before, after in itertools.pairwise(states):
        memo_lost = len(after.memo) < len(before.memo) and after.status != "completed"
        if (after.history_seq < before.history_seq or memo_lost  # completed: its marker
                or (before.status == "completed" and after.status != "completed")):
            problems.append(f"{before.status}/{before.history_seq}/{len(before.memo)} -> "
                            f"{after.status}/{after.history_seq}/{len(after.memo)}")
    return problems


def test_a_worker_frozen_past_its_session_comes_back_fenced(
        settings: Settings, start_worker: WorkerFactory) -> None:
    zombie = start_worker()
    survivor = start_worker()
    client = Stepstream("t", settings=settings)
    runs, steps = 24, 6
    run_ids = [run_id_for("chain", client.send("test/chain", {"steps": steps, "pause": 0.3}))
               for _ in range(runs)]
    store = redis.Redis.from_url(settings.redis_url)

    def executed() -> int:
        return executions(store, settings.namespace, run_ids, steps)

    wait_for(lambda: executed() >= runs, what="a first wave of steps")
    assert zombie.process is not None and zombie.log_path is not None
    os.kill(zombie.process.pid, signal.SIGSTOP)
    try:
        # Past its session: the survivor takes its partitions (fencing its tasks) and
        # runs every run to its end meanwhile.
        done = [wait_for_run(survivor.url, run_id, timeout=120) for run_id in run_ids]
    finally:
        os.kill(zombie.process.pid, signal.SIGCONT)
    assert all(run["status"] == "completed" and run["output"] == {"total": steps}
               for run in done), done
    log = zombie.log_path
    # Back, it either tries to commit first (the broker refuses: "fenced") or its
    # consumer first learns that its session expired ("lost"); either way nothing of it
    # is applied (the changelog check below).
    wait_for(lambda: "fenced" in log.read_text(errors="replace"), timeout=60,
             what="the zombie's fenced write or lost partitions in its log")
    zombie.wait_ready(60)  # it dropped its fenced tasks and rejoined with new producers
    # Its late writes were refused: no run's state goes back in the changelog, and the
    # last state of each is the completed one.
    states = _states(settings)
    problems = {run_id: _regressions(states[run_id]) for run_id in run_ids}
    assert {run_id: p for run_id, p in problems.items() if p} == {}
    assert all(states[run_id][-1].status == "completed" for run_id in run_ids)
