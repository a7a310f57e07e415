"""Apache Kafka (one KRaft node, broker and controller) on free loopback ports, stopped by pid.

For the benchmarks and, with ``STEPSTREAM_TEST_BROKER=kafka``, the integration tests:
what the dev broker (Tansu) cannot show — fetches answered when data arrives, Kafka's
group coordinator (rebalances, static membership), its transaction coordinator.

The broker runs from jars: ``$STEPSTREAM_KAFKA_LIBS`` when set (a directory of jars, such
as an unpacked Kafka distribution's ``libs/``), else the jars of
``org.apache.kafka:kafka_2.13`` and its runtime dependencies, which Maven fetches once
into ``~/.cache/stepstream/kafka-VERSION/libs`` (Java 17+ and ``mvn`` needed).

    python -m bench.kafka_broker [--version 4.4.0]    # start one, print its address, wait
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from stepstream.devservices import free_port, stop_process, wait_for_port

VERSION = "4.4.0"
HEAP = "512m"
_STORAGE_TOOLS = ("kafka/tools/StorageTool.class", "org/apache/kafka/tools/StorageTool.class")
"""Where ``kafka-storage format`` lives: core (4.0) or the tools module (later moves)."""

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>stepstream.dev</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def cache_dir(version: str = VERSION) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stepstream" / f"kafka-{version}"


def kafka_libs(version: str = VERSION) -> Path:
    """A directory holding the broker's jars; fetched with Maven the first time."""
    explicit = os.environ.get("STEPSTREAM_KAFKA_LIBS")
    if explicit:
        return Path(explicit)
    home = cache_dir(version)
    libs = home / "libs"
    if libs.is_dir():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(version=version))
    partial = home / "libs.partial"  # renamed once whole: a broken fetch is not used
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(home / "pom.xml"),
         "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        errors = [line[line.index("[ERROR]"):] for line in (done.stdout + done.stderr).splitlines()
                  if "[ERROR]" in line]
        raise RuntimeError(f"Maven could not fetch Kafka {version}'s jars (set "
                           f"STEPSTREAM_KAFKA_LIBS to a directory of them instead): "
                           f"{errors[0] if errors else done.returncode}")
    partial.rename(libs)
    return libs


def storage_tool(libs: Path) -> str:
    """The class of ``kafka-storage``, wherever this version keeps it."""
    for jar in sorted(libs.glob("*.jar")):
        with zipfile.ZipFile(jar) as archive:
            names = set(archive.namelist())
        for path in _STORAGE_TOOLS:
            if path in names:
                return path.removesuffix(".class").replace("/", ".")
    raise RuntimeError(f"no StorageTool in the jars of {libs}")


def cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64, as ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def server_properties(data: Path, port: int, controller_port: int) -> str:
    """A single node for development and tests: every internal topic with one replica,
    no delay before a group's first rebalance, session timeouts down to 1 s allowed."""
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=4",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=8",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "group.min.session.timeout.ms=1000",
        "",
    ])


@dataclass
class KafkaBroker:
    """One Kafka node in a temporary directory; its data goes when it stops."""

    port: int = 0
    log_path: Path | None = None
    version: str = VERSION
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _home: Path | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.version} (KRaft, one node)"

    def start(self, timeout: float = 180.0) -> KafkaBroker:
        """Format a storage directory, start the node, and wait until it answers metadata."""
        libs = kafka_libs(self.version)
        self.port = self.port or free_port()
        self._home = Path(tempfile.mkdtemp(prefix="stepstream-kafka-"))
        config = self._home / "server.properties"
        config.write_text(server_properties(self._home / "data", self.port, free_port()))
        java = [shutil.which("java") or "java", f"-Xmx{HEAP}", f"-Xms{HEAP}",
                "-XX:+UseG1GC", "-Djava.awt.headless=true", "-cp", f"{libs}/*"]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            subprocess.run([*java, storage_tool(libs), "format", "-t", cluster_id(),
                            "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, check=True, timeout=timeout)
            self.process = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if not isinstance(log, int):
                log.close()
        try:
            deadline = time.monotonic() + timeout
            wait_for_port("127.0.0.1", self.port, timeout, self.process)
            self._wait_serving(deadline)
        except Exception:
            self.stop()
            raise
        return self

    def _wait_serving(self, deadline: float) -> None:
        """The port opens before the node has registered as a broker: wait for it in
        the cluster's metadata."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except KafkaException:
                pass  # not up yet: asked again until the deadline
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka on {self.bootstrap} has no broker in its metadata")
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {self.process.returncode}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the node (controlled shutdown, then SIGKILL) and remove its data."""
        stop_process(self.process, timeout=30.0)
        self.process = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default=VERSION)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with KafkaBroker(port=args.port, version=args.version) as broker:
        # Blocked only now: the JVM started above must not inherit the mask.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        print(broker.bootstrap, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
