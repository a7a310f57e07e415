"""Every Kafka client we build speaks TLS when told to: topic provisioning, the SDK's
producer (confluent-kafka) and the worker's consumers and transactional producers.

Tansu 0.6.0 cannot serve TLS itself (its ``--cert`` and ``--key`` options conflict, and
``--cert`` alone leaves the listener in plain TCP; see docs/production.md), so the test
puts a TLS-terminating proxy with a throwaway CA in front of it, and has the broker
advertise the proxy: every connection, bootstrap or not, goes through TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess, forget_namespace, free_port
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.integration.helpers import wait_for_run
from tests.tls import Certificates, make_certificates
from topics import catalog, ensure_topics
from topics.provision import existing_partitions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class TlsProxy:
    """Accepts TLS on a free loopback port and relays the bytes to a plaintext port."""

    def __init__(self, target_port: int, certs: Certificates) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.cert, certs.key)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.handshakes = 0

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))

    def start(self) -> TlsProxy:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.context),
            self.loop).result(10)
        self.server = server
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[str, Certificates]]:
    """A Tansu broker reachable only through TLS; yields (bootstrap, certificates)."""
    certs = make_certificates(tmp_path / "certs")
    broker = DevBroker(log_path=tmp_path / "tansu.log")
    broker.port = free_port()
    proxy = TlsProxy(broker.port, certs).start()
    broker.advertised_port = proxy.port
    try:
        broker.start()
        yield f"127.0.0.1:{proxy.port}", certs
    finally:
        broker.stop()
        proxy.stop()


def test_every_client_connects_over_tls(tls_broker: tuple[str, Certificates], redis_url: str,
                                        tmp_path: Path) -> None:
    bootstrap, certs = tls_broker
    settings = Settings(brokers=bootstrap, redis_url=redis_url, partitions=2,
                        namespace=f"tls{uuid.uuid4().hex[:8]}", security_protocol="SSL",
                        ssl_cafile=str(certs.ca))

    # Without TLS, nothing gets through; with a CA that did not sign the broker, neither.
    with pytest.raises(ConnectionError):
        existing_partitions(settings.with_(security_protocol="PLAINTEXT"), timeout=3)
    other = make_certificates(tmp_path / "other-ca")
    with pytest.raises(ConnectionError):
        existing_partitions(settings.with_(ssl_cafile=str(other.ca)), timeout=3)

    assert ensure_topics(settings, catalog(settings))  # confluent-kafka AdminClient over TLS
    env = {"STEPSTREAM_BROKERS": bootstrap, "STEPSTREAM_REDIS_URL": redis_url,
           "STEPSTREAM_NAMESPACE": settings.namespace, "STEPSTREAM_PARTITIONS": "2",
           "STEPSTREAM_SESSION_TIMEOUT_S": "6", "STEPSTREAM_SECURITY_PROTOCOL": "SSL",
           "STEPSTREAM_SSL_CAFILE": str(certs.ca), "PYTHONPATH": str(ROOT)}
    worker = WorkerProcess("tests.integration.functions", env=env,
                           log_path=tmp_path / "worker.log", cwd=str(ROOT))
    try:
        worker.start().wait_ready(90)  # the consumer joined the group over TLS
        client = Stepstream("t", settings=settings)
        event_id = client.send("test/flaky", {})  # confluent-kafka producer over TLS
        client.close()
        run = wait_for_run(worker.url, run_id_for("flaky", event_id), timeout=90)
        assert run["status"] == "completed"  # the worker produced and consumed over TLS
    finally:
        worker.stop()
        forget_namespace(redis_url, settings.namespace)
