"""The Celery app of the benchmark: no-op tasks, chained; Redis as broker and backend.

Configured for durability comparable to stepstream's: a task is acknowledged after it
ran (``acks_late``), a task whose worker died is delivered again, and the Redis
transport's visibility timeout (after which an unacknowledged task is redelivered) is
6 s, stepstream's consumer session timeout, swept every second.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.measure import beacon

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/9")
QUEUE = "bench"

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_transport_options={"visibility_timeout": 6, "unacked_restore_interval": 1,
                              "unacked_restore_throttle": 1},
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(i: int) -> int:
    return i


@app.task(name="bench.pause")
def pause(i: int, ms: int, port: int) -> int:
    """A slow-ish step that reports which worker ran it (the recovery benchmark)."""
    beacon(port, i=i, pid=os.getpid(), phase="start")
    time.sleep(ms / 1000)
    beacon(port, i=i, pid=os.getpid(), phase="done")
    return i
