"""Whether the worker can reach its Kafka cluster right now, for ``/readyz``.

The consumer keeps its partition assignment while the broker is unreachable (it
retries fetches and commits in the background), so the assignment alone says "ready"
through an outage. This probe asks the cluster for the metadata of one topic every
``interval`` seconds through a producer of the worker's: the worker is reachable while
the last probe answered and the last answer is recent. A request that hangs (a silent
network partition) counts as a failure once it times out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("stepstream.health")


class BrokerProbe:
    """Periodic metadata request to the cluster; ``reachable`` says how the last went.

    Args:
        producer: a confluent-kafka producer whose connections are used.
        topic: a topic that exists (one of the namespace's), named in the request so
            that the answer stays small on a cluster with many topics.
        interval: seconds between probes.
        timeout: seconds a probe may take before it counts as failed.
    """

    def __init__(self, producer: Any, topic: str, *, interval: float = 1.0,
                 timeout: float = 3.0) -> None:
        self.producer, self.topic = producer, topic
        self.interval, self.timeout = interval, timeout
        self.last_ok: float | None = None
        self.last_failed = False

    @property
    def reachable(self) -> bool:
        """The last probe answered, within the last few intervals."""
        if self.last_ok is None or self.last_failed:
            return False
        return time.monotonic() - self.last_ok < 3 * self.interval + self.timeout

    async def probe(self) -> bool:
        """One metadata round trip to the cluster; True if it answered."""
        try:
            await asyncio.to_thread(self.producer.list_topics, self.topic, self.timeout)
        except Exception as exc:  # any failure means: not reachable now
            log.debug("the cluster did not answer the probe: %r", exc)
            return False
        return True

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            ok = await self.probe()
            if ok:
                self.last_ok = time.monotonic()
            if ok == self.last_failed:  # the state changed
                log.warning("broker %s", "reachable again" if ok else "unreachable")
            self.last_failed = not ok
            await asyncio.sleep(self.interval)
