"""Whether the worker can reach its Kafka cluster right now, for ``/readyz``.

Faust keeps a worker's partition assignment while the broker is unreachable (it
retries fetches, produces and commits in the background), so the assignment alone
says "ready" through an outage. This probe asks a broker for the metadata of one
topic every ``interval`` seconds over the producer's own connections, the path the
engine's writes take: the worker is reachable while the last probe answered and the
last answer is recent. A request that hangs (a silent network partition) counts as a
failure once it times out.
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
        app: the Faust app whose producer's client is used.
        topic: a topic that exists (one of the namespace's), named in the request so
            that the answer stays small on a cluster with many topics.
        interval: seconds between probes.
        timeout: seconds a probe may take before it counts as failed.
    """

    def __init__(self, app: Any, topic: str, *, interval: float = 1.0,
                 timeout: float = 3.0) -> None:
        self.app, self.topic, self.interval, self.timeout = app, topic, interval, timeout
        self.last_ok: float | None = None
        self.last_failed = False

    @property
    def reachable(self) -> bool:
        """The last probe answered, within the last few intervals."""
        if self.last_ok is None or self.last_failed:
            return False
        return time.monotonic() - self.last_ok < 3 * self.interval + self.timeout

    async def probe(self) -> bool:
        """One metadata round trip to any known broker; True if one answered."""
        from aiokafka.protocol.metadata import MetadataRequest

        producer = getattr(self.app.producer, "_producer", None)
        client = getattr(producer, "client", None)
        if client is None:
            return False  # the producer has not started yet
        nodes = [broker.nodeId for broker in client.cluster.brokers()]
        for node_id in nodes:
            try:
                await asyncio.wait_for(client.send(node_id, MetadataRequest([self.topic])),
                                       self.timeout)
            except Exception as exc:  # any failure means: not through this broker
                log.debug("broker %s did not answer the probe: %r", node_id, exc)
                continue
            return True
        return False

    async def run(self) -> None:
        """Probe forever (a Faust task: cancelled when the worker stops)."""
        while True:
            ok = await self.probe()
            if ok:
                self.last_ok = time.monotonic()
            if ok == self.last_failed:  # the state changed
                log.warning("broker %s", "reachable again" if ok else "unreachable")
            self.last_failed = not ok
            await asyncio.sleep(self.interval)
