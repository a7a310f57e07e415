"""The broker's network path and Redis go away for a while: workers stay up, nothing is lost.

The dev broker keeps its data in memory, so the broker outage cuts the network path
instead (``CuttableProxy``): a broker of this test's own advertises the proxy's address,
so every client, bootstrap and data connections alike, goes through the proxy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess, free_port, stop_process, wait_for_port
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.chaos.checker import check_ledger_runs
from tests.chaos.conftest import FULL
from tests.chaos.proxy import CuttableProxy
from tests.conftest import namespace, worker_factory
from tests.integration.helpers import get_json, read_all, wait_for

MODULE = "tests.chaos.functions"
pytestmark = pytest.mark.timeout(1800 if FULL else 300)
OUTAGE_S = 30.0 if FULL else 10.0


def readyz(worker: WorkerProcess) -> int:
    """The status of ``/readyz`` (0: no answer)."""
    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def send_runs(settings: Settings, count: int, steps: int, pause: float) -> dict[str, int]:
    """Start ``count`` ledger runs; returns run id -> steps."""
    client = Stepstream("chaos", settings=settings)
    try:
        return {run_id_for("ledger", client.send("chaos/ledger",
                                                 {"steps": steps, "pause": pause})): steps
                for _ in range(count)}
    finally:
        client.close()


def wait_completed(worker: WorkerProcess, run_ids: set[str], timeout: float) -> None:
    """Until the read model shows every run completed."""
    waiting = set(run_ids)

    def done() -> bool:
        waiting.difference_update({r for r in waiting if (
            (doc := _run_or_none(worker, r)) and doc["status"] == "completed")})
        return not waiting

    wait_for(done, timeout, f"{len(run_ids)} runs completed")


def _run_or_none(worker: WorkerProcess, run_id: str) -> dict[str, object] | None:
    """The run's document; None while it is unknown or Redis is coming back (503)."""
    try:
        doc: dict[str, object] | None = get_json(f"{worker.url}/v1/runs/{run_id}")
        return doc
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise


# --- the broker ---------------------------------------------------------------------------


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[DevBroker, CuttableProxy]]:
    """A broker of this test's own, reached only through a proxy the test can cut."""
    proxy_port = free_port()
    broker = DevBroker(advertised_port=proxy_port, log_path=tmp_path / "tansu.log").start()
    proxy = CuttableProxy(proxy_port, broker.port).start()
    try:
        yield broker, proxy
    finally:
        proxy.close()
        broker.stop()


def test_workers_ride_out_a_broker_outage_and_finish_every_run(
        proxied_broker: tuple[DevBroker, CuttableProxy], redis_url: str, database: str,
        tmp_path: Path) -> None:
    broker, proxy = proxied_broker
    with namespace(broker, redis_url) as direct:  # its Redis keys go afterwards
        settings = direct.with_(brokers=f"127.0.0.1:{proxy.listen_port}")
        with worker_factory(settings, tmp_path) as start:
            workers = [start(MODULE, ready=False, CHAOS_DATABASE_URL=database) for _ in range(2)]
            for worker in workers:
                worker.wait_ready(120)
            runs = send_runs(settings, 20, steps=6, pause=0.3)
            wait_for(lambda: _executions(database) >= 20, 60, "a first wave of steps")

            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: all(readyz(w) == 503 for w in workers), 30, "/readyz 503 on all")
            unready_after = time.monotonic() - cut_at
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            assert all(w.process is not None and w.process.poll() is None for w in workers), \
                "a worker exited during the broker outage"
            proxy.restore()
            restored_at = time.monotonic()

            wait_for(lambda: all(readyz(w) == 200 for w in workers), 120, "/readyz 200 again")
            ready_after = time.monotonic() - restored_at
            wait_completed(workers[0], set(runs), 180)
            finished_after = time.monotonic() - restored_at
            verdict = check_ledger_runs(settings, runs, database, workers[0].url)

        print(f"\nbroker outage of {OUTAGE_S:.0f}s with {len(runs)} runs in flight: "
              f"/readyz 503 {unready_after:.1f}s after the cut, 200 again "
              f"{ready_after:.1f}s after the restore; all runs completed "
              f"{finished_after:.1f}s after it; checker: {verdict.summary()}")
        assert not verdict.problems, "\n".join(verdict.problems[:30])


def _executions(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM executions").fetchone()
    return int(row[0]) if row else 0


# --- Redis --------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own (append-only file, so a restart keeps its data)."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.data_dir = free_port(), data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 20, self.process)
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def test_runs_advance_while_redis_is_down_and_the_read_model_catches_up(
        settings: Settings, database: str, tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path / "redis").start()
    settings = settings.with_(redis_url=redis.url)
    try:
        with worker_factory(settings, tmp_path) as start:
            worker = start(MODULE, CHAOS_DATABASE_URL=database)
            before = send_runs(settings, 5, steps=3, pause=0.0)
            wait_completed(worker, set(before), 60)

            redis.stop()
            during = send_runs(settings, 10, steps=4, pause=0.05)
            # The runs complete with Redis down: the history topic says so (the read
            # model cannot), and the worker stays ready: Redis is not on the run's path.
            wait_for(lambda: _completed_in_history(settings, set(during)) == len(during), 120,
                     "runs completed in the history topic while Redis is down")
            assert readyz(worker) == 200
            # The read model cannot answer: a clear 503, not a 500.
            with pytest.raises(urllib.error.HTTPError) as answer:
                get_json(f"{worker.url}/v1/runs/{next(iter(during))}")
            assert answer.value.code == 503
            assert "Redis" in json.load(answer.value)["error"]
            assert worker.process is not None and worker.process.poll() is None

            redis.start()
            caught_up_at = time.monotonic()
            wait_completed(worker, set(before) | set(during), 120)
            caught_up = time.monotonic() - caught_up_at
            verdict = check_ledger_runs(settings, {**before, **during}, database, worker.url)
    finally:
        redis.stop()
    print(f"\nRedis down: {len(during)} runs completed meanwhile; the read model caught up "
          f"{caught_up:.1f}s after Redis came back; checker: {verdict.summary()}")
    assert not verdict.problems, "\n".join(verdict.problems[:30])


def _completed_in_history(settings: Settings, run_ids: set[str]) -> int:
    codec = default_codec()
    done = set()
    for message in read_all(settings.brokers, settings.topic("history")):
        record = codec.decode_as(message.value(), HistoryRecord)
        if record.kind == "run.completed" and record.run_id in run_ids:
            done.add(record.run_id)
    return len(done)

