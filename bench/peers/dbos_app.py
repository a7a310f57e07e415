"""The DBOS app of the benchmark: a durable workflow of N no-op steps, run from a queue.

A worker process (``python -m bench.peers.dbos_app READY_FILE``) launches DBOS on the
benchmark's system database and runs what is enqueued on the ``bench`` queue, which it
polls every 5 ms (stepstream's consumers wait at most 5 ms per fetch).
``DBOS__VMID`` names the executor; a process restarted with the same name recovers the
workflows its predecessor left pending.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from dbos import DBOS, DBOSConfig

from bench.measure import beacon

DATABASE_URL = os.environ.get("BENCH_DBOS_URL",
                              "postgresql://postgres@127.0.0.1:5432/dbos_bench")
QUEUE = "bench"
POLL_S = 0.005


@DBOS.step(name="bench.noop")
def noop(i: int) -> int:
    return i


@DBOS.step(name="bench.pause")
def pause(i: int, ms: int, port: int) -> int:
    """A slow-ish step that reports which worker ran it (the recovery benchmark)."""
    beacon(port, i=i, pid=os.getpid(), phase="start")
    time.sleep(ms / 1000)
    beacon(port, i=i, pid=os.getpid(), phase="done")
    return i


@DBOS.workflow(name="bench.chain")
def chain(n: int) -> int:
    for i in range(n):
        noop(i)
    return n


@DBOS.workflow(name="bench.slow_chain")
def slow_chain(n: int, ms: int, port: int) -> int:
    for i in range(n):
        pause(i, ms, port)
    return n


def main(ready_path: str) -> None:
    config: DBOSConfig = {"name": "stepstream-bench", "system_database_url": DATABASE_URL,
                          "log_level": "WARNING", "application_version": "bench"}
    DBOS(config=config)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=POLL_S, on_conflict="always_update")
    with open(ready_path, "w") as ready:
        ready.write(str(os.getpid()))
    stopping.wait()
    DBOS.destroy(workflow_completion_timeout_sec=0)


if __name__ == "__main__":
    main(sys.argv[1])
